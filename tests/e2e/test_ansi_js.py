"""static/js/ansi.js (live log lines) must render exactly like apps/runs/ansi.py (page load)."""

import json

import pytest

from apps.runs import ansi
from tests.conftest import REPO_ROOT
from tests.runs.test_ansi import SAMPLES

JS = REPO_ROOT / "static" / "js" / "ansi.js"


@pytest.fixture
def blank_page(browser):
    page = browser.new_page()
    page.set_content("<!doctype html><div id=out></div>")
    page.add_script_tag(content=JS.read_text())
    yield page
    page.close()


def test_the_javascript_parser_matches_the_python_one(blank_page):
    from_js = blank_page.evaluate(
        "samples => samples.map(s => window.SandboxAnsi.segments(s))", SAMPLES
    )
    from_py = [[list(piece) for piece in ansi.segments(sample)] for sample in SAMPLES]
    for sample, js, py in zip(SAMPLES, from_js, from_py, strict=True):
        assert js == py, f"differs for {json.dumps(sample)}"


def test_the_javascript_renderer_builds_text_nodes_not_markup(blank_page):
    html = blank_page.evaluate(
        """text => {
            const out = document.getElementById("out");
            out.textContent = "";
            window.SandboxAnsi.render(text, out);
            return [out.innerHTML, out.querySelectorAll("script, img, b").length];
        }""",
        "\x1b[32m<img src=x onerror=alert(1)>\x1b[0m<script>x()</script>",
    )
    assert html[1] == 0
    assert html[0].startswith('<span class="a-fg-2">&lt;img')
