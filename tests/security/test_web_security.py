"""Response headers, production settings (``check --deploy``, cookies, HTTPS) and the htmx
hardening the pages ship with."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import textwrap

import pytest
from django.test import Client

from tests.conftest import REPO_ROOT
from tests.projects.factories import make_user

PRODUCTION = {
    "DEBUG": "0",
    "HTTPS": "1",
    "ALLOWED_HOSTS": "sandbox.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://sandbox.example.com",
    "TRUST_X_FORWARDED_PROTO": "1",
}


def production_env(tmp_path, **extra: str) -> dict[str, str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SECURE_COOKIES", "SECURE_SSL_REDIRECT", "HSTS_SECONDS"}
    }
    environment.update(PRODUCTION)
    environment.update(
        SECRET_KEY=secrets.token_urlsafe(50),
        SANDBOXWEB_VAR_DIR=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        DJANGO_SETTINGS_MODULE="sandboxweb.settings",
    )
    environment.update(extra)
    return environment


def run(args: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


# One subprocess (settings are read once per process): `check --deploy` exactly as an operator
# runs it, then a few requests through the production middleware stack.
PROBE = textwrap.dedent(
    """
    import io, json, django
    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    out, err = io.StringIO(), io.StringIO()
    call_command("check", deploy=True, stdout=out, stderr=err)
    client = Client()
    plain = client.get("/login/", HTTP_HOST="sandbox.example.com")
    health = client.get("/healthz", HTTP_HOST="sandbox.example.com")
    tls = client.get("/login/", HTTP_HOST="sandbox.example.com",
                     HTTP_X_FORWARDED_PROTO="https")
    cookie = tls.cookies["csrftoken"]
    print(json.dumps({
        "check": out.getvalue() + err.getvalue(),
        "plain": [plain.status_code, plain.get("Location")],
        "health_redirected": health.status_code in (301, 302),
        "tls": tls.status_code,
        "hsts": tls.get("Strict-Transport-Security"),
        "csp": tls.get("Content-Security-Policy"),
        "csrf_cookie": {"secure": bool(cookie["secure"]), "httponly": bool(cookie["httponly"]),
                        "samesite": cookie["samesite"]},
        "session": [settings.SESSION_COOKIE_SECURE, settings.SESSION_COOKIE_HTTPONLY,
                    settings.SESSION_COOKIE_SAMESITE],
        "trusted": settings.CSRF_TRUSTED_ORIGINS,
    }))
    """
)


def test_production_settings_pass_check_deploy_redirect_to_https_and_secure_cookies(tmp_path):
    result = run([sys.executable, "-c", PROBE], production_env(tmp_path))
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # check --deploy: clean; the one silenced check is the one settings.py gives a reason for.
    assert "WARNING" not in seen["check"] and "ERROR" not in seen["check"], seen["check"]
    assert "System check identified no issues (1 silenced)." in seen["check"]
    assert seen["plain"] == [301, "https://sandbox.example.com/login/"]
    assert seen["health_redirected"] is False  # load balancers probe it over plain HTTP
    assert seen["tls"] == 200
    assert seen["hsts"] == "max-age=31536000; includeSubDomains"
    assert seen["csrf_cookie"] == {"secure": True, "httponly": True, "samesite": "Lax"}
    assert seen["session"] == [True, True, "Lax"]
    assert seen["trusted"] == ["https://sandbox.example.com"]
    assert "wss://sandbox.example.com" in seen["csp"]


def test_check_deploy_reports_what_a_careless_deployment_gets_wrong(settings):
    # The check above must be able to fail: the test settings are DEBUG off but plain HTTP.
    from django.core import checks

    settings.DEBUG = True
    ids = {m.id for m in checks.run_checks(include_deployment_checks=True) if not m.is_silenced()}
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in ids, ids
    assert "security.W018" in ids  # DEBUG


@pytest.mark.django_db
def test_every_html_page_carries_the_security_headers_and_a_strict_policy(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    client = Client()
    client.force_login(make_user("headers"))
    for path in ("/login/", "/", "/projects/", "/runs/", "/teams/", "/settings/tokens/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Frame-Options"] == "DENY"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["Cross-Origin-Opener-Policy"] == "same-origin"
        policy = dict(
            [*part.split(" ", 1), ""][:2]
            for part in (p.strip() for p in response["Content-Security-Policy"].split(";"))
        )
        assert policy["default-src"] == "'self'"
        assert policy["script-src"] == "'self'"
        assert policy["style-src"] == "'self'"
        assert policy["object-src"] == "'none'"
        assert policy["base-uri"] == "'none'"
        assert policy["form-action"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert policy["connect-src"] == "'self' ws://testserver"
        html = response.content.decode()
        # No inline script or style, no inline event handlers: the policy would block them.
        assert not re.search(r"<script(?![^>]*\s(src=|type=\"application/json\"))[^>]*>", html), (
            path
        )
        assert not re.search(r"\sstyle=\"|\son[a-z]+=\"|\shx-on", html), path


@pytest.mark.django_db
def test_htmx_is_configured_to_refuse_foreign_requests_scripts_and_eval(settings):
    html = Client().get("/login/").content.decode()
    meta = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", html)
    assert meta, "htmx-config meta missing"
    config = json.loads(meta.group(1))
    assert config["selfRequestsOnly"] is True
    assert config["allowScriptTags"] is False
    assert config["allowEval"] is False
    assert config["historyCacheSize"] == 0
    assert config["includeIndicatorStyles"] is False


def test_no_template_uses_inline_script_style_or_event_handlers():
    offenders = []
    for path in (REPO_ROOT / "templates").rglob("*.html"):
        text = path.read_text()
        for pattern in (
            r"<script(?![^>]*\s(src=|type=\"application/json\"))[^>]*>",
            r"\sstyle=\"",
            r"\son[a-z]+=",
            r"hx-on",
        ):
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(REPO_ROOT)}: {pattern}")
    assert offenders == []


def test_json_text_cannot_break_out_of_its_element():
    from django.template import Context, Template

    hostile = {"body": '</div><img src=x onerror=alert(1)>&amp; "quoted"'}
    html = Template('{% load json_text %}<div id="d" hidden>{{ v|json_text }}</div>').render(
        Context({"v": hostile})
    )
    assert "<img" not in html and "</div><" not in html and "&amp;" not in html
    inner = html.split(">", 1)[1].rsplit("</div>", 1)[0]
    assert json.loads(inner) == hostile  # what textContent gives the page's script
