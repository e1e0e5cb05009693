"""Terminal output to safe HTML: SGR colours become CSS classes, everything else is text.

Agent output is data, never markup. :func:`segments` parses one log line into ``(text, classes)``
pieces; :func:`to_html` escapes every piece and wraps coloured ones in ``<span class="...">``.
Only SGR (``ESC[...m``) is interpreted; other escape sequences (cursor moves, OSC titles and
hyperlinks: only the link text is kept, never a target) are dropped and other C0/C1 control
characters removed. A carriage return keeps what was written after it, the way a terminal shows
a progress bar. Colours map to 16 classes (256-colour and true-colour values to the nearest of
them), so no inline style is ever emitted.

static/js/ansi.js is the same parser for live lines; tests/runs/test_ansi.py checks both agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# CSI ... final byte | OSC ... (BEL | ST) | other two-byte escapes | stray ESC
_ESCAPE = re.compile(
    r"\x1b\[([0-9;:?<=>]*)[ -/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x1b"
)
# C0 controls but tab, DEL, and C1 controls (U+0080-U+009F: 8-bit CSI/OSC/ST introducers a
# terminal reading the raw log or a copy-paste would still act on).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

# xterm's 16 colours, to pick the nearest for 256-colour and true-colour codes.
_BASIC_RGB = [
    (0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0),
    (0, 0, 238), (205, 0, 205), (0, 205, 205), (229, 229, 229),
    (127, 127, 127), (255, 0, 0), (0, 255, 0), (255, 255, 0),
    (92, 92, 255), (255, 0, 255), (0, 255, 255), (255, 255, 255),
]  # fmt: skip


def nearest_basic(r: int, g: int, b: int) -> int:
    best, best_distance = 0, None
    for index, (br, bg, bb) in enumerate(_BASIC_RGB):
        distance = (r - br) ** 2 + (g - bg) ** 2 + (b - bb) ** 2
        if best_distance is None or distance < best_distance:
            best, best_distance = index, distance
    return best


def palette_256(n: int) -> int:
    if n < 16:
        return n
    if n < 232:
        n -= 16
        steps = (0, 95, 135, 175, 215, 255)
        return nearest_basic(steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    level = 8 + (n - 232) * 10
    return nearest_basic(level, level, level)


@dataclass
class _Style:
    fg: int | None = None
    bg: int | None = None
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False
    inverse: bool = False
    strike: bool = False

    def classes(self) -> str:
        fg, bg = self.fg, self.bg
        if self.inverse:
            fg, bg = (bg if bg is not None else "d"), (fg if fg is not None else "d")
        names = []
        if fg is not None:
            names.append(f"a-fg-{fg}")
        if bg is not None:
            names.append(f"a-bg-{bg}")
        for flag, name in (
            (self.bold, "a-b"),
            (self.dim, "a-d"),
            (self.italic, "a-i"),
            (self.underline, "a-u"),
            (self.strike, "a-s"),
        ):
            if flag:
                names.append(name)
        return " ".join(names)

    def apply(self, params: str) -> None:
        codes = [int(p) if p.isdigit() else 0 for p in re.split(r"[;:]", params)] if params else [0]
        i = 0
        while i < len(codes):
            code = codes[i]
            if code == 0:
                self.__init__()  # type: ignore[misc]
            elif code == 1:
                self.bold = True
            elif code == 2:
                self.dim = True
            elif code == 3:
                self.italic = True
            elif code == 4:
                self.underline = True
            elif code == 7:
                self.inverse = True
            elif code == 9:
                self.strike = True
            elif code == 22:
                self.bold = self.dim = False
            elif code == 23:
                self.italic = False
            elif code == 24:
                self.underline = False
            elif code == 27:
                self.inverse = False
            elif code == 29:
                self.strike = False
            elif 30 <= code <= 37:
                self.fg = code - 30
            elif code == 39:
                self.fg = None
            elif 40 <= code <= 47:
                self.bg = code - 40
            elif code == 49:
                self.bg = None
            elif 90 <= code <= 97:
                self.fg = code - 90 + 8
            elif 100 <= code <= 107:
                self.bg = code - 100 + 8
            elif code in (38, 48):
                colour, used = _extended(codes[i + 1 :])
                i += used
                if colour is not None:
                    if code == 38:
                        self.fg = colour
                    else:
                        self.bg = colour
            i += 1


def _extended(rest: list[int]) -> tuple[int | None, int]:
    if len(rest) >= 2 and rest[0] == 5:
        return palette_256(max(0, min(255, rest[1]))), 2
    if len(rest) >= 4 and rest[0] == 2:
        r, g, b = (max(0, min(255, v)) for v in rest[1:4])
        return nearest_basic(r, g, b), 4
    return None, len(rest)


def _carriage_returns(line: str) -> str:
    line = line.rstrip("\r")
    if "\r" in line:
        parts = [part for part in line.split("\r") if part]
        line = parts[-1] if parts else ""
    return line


def segments(line: str) -> list[tuple[str, str]]:
    """``line`` as ``(text, classes)`` pieces; text is plain (not yet escaped)."""
    line = _carriage_returns(line)
    style = _Style()
    pieces: list[tuple[str, str]] = []
    position = 0

    def emit(text: str) -> None:
        text = _CONTROL.sub("", text)
        if not text:
            return
        classes = style.classes()
        if pieces and pieces[-1][1] == classes:
            pieces[-1] = (pieces[-1][0] + text, classes)
        else:
            pieces.append((text, classes))

    for match in _ESCAPE.finditer(line):
        emit(line[position : match.start()])
        position = match.end()
        if match.group(2) == "m" and not (match.group(1) or "").startswith(("?", "<", "=", ">")):
            style.apply(match.group(1) or "")
    emit(line[position:])
    return pieces


def plain(line: str) -> str:
    return "".join(text for text, _ in segments(line))


def to_html(line: str) -> SafeString:
    html = []
    for text, classes in segments(line):
        if classes:
            html.append(f'<span class="{classes}">{escape(text)}</span>')
        else:
            html.append(str(escape(text)))
    return mark_safe("".join(html))  # noqa: S308 - every piece of text is escaped above
