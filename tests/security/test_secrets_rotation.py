"""Secrets at rest: SECRETS_KEYS rotation end to end, and redaction of what a run prints.

The rotation follows the documented procedure (docs/security.md): old key → add the new key in
front → ``manage.py rotate_secret_keys`` → remove the old key; every secret must still decrypt and
a real run (real sandbox) must still receive it. The run also prints the secret in the ways
output usually leaks it (plain, base64, split across two writes, on stderr); the stored log must
hold none of them, while a digest the run prints proves it had the real value.
"""

from __future__ import annotations

import base64
import hashlib
import io
import secrets

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from apps.audit.models import AuditEvent
from apps.projects import crypto
from apps.projects.models import ProjectSecret
from apps.projects.services import project_secret_values, update_project
from apps.runs import selectors
from apps.runs import services as run_services
from apps.runs.execution import execute_run
from apps.runs.models import Run
from tests.projects.factories import make_project, make_user
from tests.security.conftest import py

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def rotate(**options) -> str:
    out = io.StringIO()
    call_command("rotate_secret_keys", stdout=out, **options)
    return out.getvalue()


@pytest.mark.django_db
def test_rotation_reencrypts_everything_idempotently_and_the_old_key_can_go(settings):
    settings.SECRETS_KEYS = [OLD]
    user = make_user()
    projects = [
        make_project(
            user, secrets={f"S{i}": f"value-{p}-{i}-{secrets.token_hex(4)}" for i in range(3)}
        )
        for p in range(3)
    ]
    values = {p.pk: project_secret_values(project_id=p.pk) for p in projects}
    old_tokens = dict(ProjectSecret.objects.values_list("pk", "ciphertext"))

    # Step 1: the new key goes in front; the old one still decrypts; new writes use the new key.
    settings.SECRETS_KEYS = [NEW, OLD]
    assert {p.pk: project_secret_values(project_id=p.pk) for p in projects} == values
    update_project(project=projects[0], values={}, set_secrets={"LATE": "set-after-new-key"})
    values[projects[0].pk]["LATE"] = "set-after-new-key"

    # Without the rotation, dropping the old key would lose the secrets: this test can fail.
    settings.SECRETS_KEYS = [NEW]
    with pytest.raises(crypto.SecretDecryptionError):
        project_secret_values(project_id=projects[1].pk)
    settings.SECRETS_KEYS = [NEW, OLD]

    # Step 2: rotate, in small batches; the one value written after the key change is current.
    output = rotate(batch_size=4)
    assert "9 re-encrypted, 1 already on the newest key" in output
    assert "0 undecryptable, in 3 batch(es)" in output
    assert all(
        old_tokens[pk] != token
        for pk, token in ProjectSecret.objects.filter(pk__in=old_tokens).values_list(
            "pk", "ciphertext"
        )
    )
    # Idempotent: a second run changes nothing.
    unchanged = dict(ProjectSecret.objects.values_list("pk", "ciphertext"))
    assert "0 re-encrypted, 10 already on the newest key" in rotate()
    assert dict(ProjectSecret.objects.values_list("pk", "ciphertext")) == unchanged

    # Step 3: the old key is removed; everything still decrypts.
    settings.SECRETS_KEYS = [NEW]
    assert {p.pk: project_secret_values(project_id=p.pk) for p in projects} == values

    events = AuditEvent.objects.filter(action="secret.rotate_keys").order_by("pk")
    assert [e.after["reencrypted"] for e in events] == [9, 0]
    assert events[0].after["key"] == crypto.key_fingerprint()
    assert NEW not in str(events[0].after) and OLD not in str(events[0].after)


@pytest.mark.django_db
def test_a_value_no_key_decrypts_is_reported_and_left_alone(settings):
    settings.SECRETS_KEYS = [OLD]
    project = make_project(make_user(), secrets={"B": "beta-value"})
    settings.SECRETS_KEYS = [NEW, OLD]
    update_project(project=project, values={}, set_secrets={"A": "alpha-value"})
    lost = ProjectSecret.objects.get(project=project, name="B")
    settings.SECRETS_KEYS = [NEW]  # the old key removed before rotating
    with pytest.raises(
        CommandError, match=f"1 secret\\(s\\) cannot be decrypted .*ids {lost.pk}\\)"
    ):
        rotate()
    assert ProjectSecret.objects.get(pk=lost.pk).ciphertext == lost.ciphertext
    settings.SECRETS_KEYS = [NEW, OLD]  # put it back: nothing was damaged
    assert project_secret_values(project_id=project.pk) == {"A": "alpha-value", "B": "beta-value"}


@pytest.mark.django_db
def test_moving_from_the_derived_key_to_own_keys(settings):
    settings.SECRETS_KEYS = []
    project = make_project(make_user(), secrets={"A": "from-the-derived-key"})
    settings.SECRETS_KEYS = [NEW, crypto.DERIVED_KEY_NAME]
    assert "1 re-encrypted" in rotate()
    settings.SECRETS_KEYS = [NEW]
    assert project_secret_values(project_id=project.pk) == {"A": "from-the-derived-key"}


LEAKS = "\n".join(
    [
        'echo "plain: $TOKEN"',
        'printf %s "$TOKEN" | base64',
        'echo "on stderr: $TOKEN" >&2',
        py(
            "import os, sys, time\n"
            "t = os.environ['TOKEN']\n"
            "sys.stdout.write('split: ' + t[:9]); sys.stdout.flush(); time.sleep(0.6)\n"
            "sys.stdout.write(t[9:] + ' end\\n'); sys.stdout.flush()\n"
        ),
        'printf %s "$TOKEN" | sha256sum',
    ]
)


@pytest.mark.django_db(transaction=True)
@pytest.mark.docker
def test_after_rotation_a_real_run_gets_the_secret_and_its_log_never_shows_it(
    settings, monkeypatch, docker_engine
):
    value = f"tok-{secrets.token_urlsafe(18)}"
    settings.SECRETS_KEYS = [OLD]
    user = make_user()
    project = make_project(
        user, env={"TOKEN": "${secret:TOKEN}"}, secrets={"TOKEN": value}, memory_mb=128
    )
    settings.SECRETS_KEYS = [NEW, OLD]
    rotate()
    settings.SECRETS_KEYS = [NEW]

    # In this process (the worker's code path), so it sees exactly these settings.
    monkeypatch.setattr(run_services, "enqueue_run", lambda run_id: None)
    run = run_services.start_run(project=project, user=user, task=LEAKS, overrides={})
    assert execute_run(run.pk) == Run.Status.SUCCEEDED
    log = "".join(selectors.iter_raw_log(run=Run.objects.get(pk=run.pk)))

    # The run had the real value: it printed its digest.
    assert hashlib.sha256(value.encode()).hexdigest() in log
    # And the stored log holds it in none of the forms it was printed in.
    encoded = base64.b64encode(value.encode()).decode().rstrip("=")
    for form in (value, encoded, value[:9] + value[9:]):
        assert form not in log, log
    assert log.count("[REDACTED:TOKEN]") >= 4, log
    assert "split: [REDACTED:TOKEN] end" in log
