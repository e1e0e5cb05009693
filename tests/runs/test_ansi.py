"""Terminal output rendering in Python (the page load); tests/e2e/test_ansi_js.py checks that
static/js/ansi.js (live lines) agrees on SAMPLES."""

from apps.runs import ansi

SAMPLES = [
    "plain text",
    "\x1b[31mred\x1b[0m normal",
    "\x1b[1;32mbold green\x1b[22m not bold \x1b[39mdefault",
    "\x1b[38;5;196mx256\x1b[48;5;21mbg\x1b[0m",
    "\x1b[38;2;10;200;10mtrue colour\x1b[m",
    "\x1b[7minverse\x1b[27m back",
    "\x1b[4;3;9mstyled\x1b[24;23;29m",
    "\x1b[2K\x1b[1Gcursor moves dropped",
    "progress 10%\rprogress 50%\rprogress 100%",
    "ends with cr\r",
    "\x1b]0;window title\x07after title",
    "\x1b]8;;https://example.com\x1b\\link text\x1b]8;;\x1b\\ done",
    "\x1b]8;;javascript:alert(1)\x07click\x1b]8;;\x07",
    "<script>alert(1)</script> & <img src=x onerror=alert(1)>",
    '<div hx-get="/admin/" hx-trigger="load">htmx</div>',
    "tab\tseparated\x07bell\x08backspace\x7fdel",
    "stray \x1b escape and \x1b[?25h private mode",
    "\x1b[90;100mbright\x1b[0m",
    "\x1b[38;5mbroken\x1b[38;2;1mbroken2",
    "emoji 🎉 and ünïcödé",
    "",
]


def test_colours_become_classes_and_everything_else_text():
    assert ansi.segments("\x1b[1;31mred\x1b[0m ok") == [("red", "a-fg-1 a-b"), (" ok", "")]
    assert ansi.segments("\x1b[38;5;208mx") == [("x", f"a-fg-{ansi.palette_256(208)}")]
    assert ansi.segments("\x1b[7mx") == [("x", "a-fg-d a-bg-d")]
    assert ansi.plain("\x1b]8;;https://e.com\x1b\\link\x1b]8;;\x1b\\") == "link"
    assert ansi.plain("a\rb\rc") == "c"
    assert ansi.plain("\x1b[2Jclear") == "clear"


def test_html_is_escaped_and_inert():
    html = ansi.to_html('\x1b[31m<script>alert("x")</script>\x1b[0m<b hx-get="/x">')
    assert "<script>" not in html and "<b " not in html
    assert "&lt;script&gt;" in html and "&lt;b hx-get=" in html
    assert html.startswith('<span class="a-fg-1">')
    assert "javascript" not in ansi.to_html("\x1b]8;;javascript:alert(1)\x07click\x1b]8;;\x07")
