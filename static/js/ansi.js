/* Terminal output to safe DOM: the same parser as apps/runs/ansi.py.
 *
 * Only SGR colours and styles are interpreted, as CSS classes; every other escape sequence is
 * dropped and other control characters removed. Text only ever reaches the page through
 * textContent / text nodes, never as markup. tests/runs/test_ansi_js.py checks that this file and
 * the Python parser produce the same pieces for the same input.
 */
(function (global) {
  "use strict";

  // CSI ... final byte | OSC ... (BEL | ST) | other two-byte escapes | stray ESC
  var ESCAPE = /\x1b\[([0-9;:?<=>]*)[ -\/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x1b/g;
  // C0 (but tab), DEL and C1 (U+0080-U+009F, 8-bit CSI/OSC/ST) controls.
  var CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;
  var BASIC_RGB = [
    [0, 0, 0], [205, 0, 0], [0, 205, 0], [205, 205, 0],
    [0, 0, 238], [205, 0, 205], [0, 205, 205], [229, 229, 229],
    [127, 127, 127], [255, 0, 0], [0, 255, 0], [255, 255, 0],
    [92, 92, 255], [255, 0, 255], [0, 255, 255], [255, 255, 255]
  ];

  function nearestBasic(r, g, b) {
    var best = 0, bestDistance = null;
    for (var i = 0; i < BASIC_RGB.length; i++) {
      var c = BASIC_RGB[i];
      var d = (r - c[0]) * (r - c[0]) + (g - c[1]) * (g - c[1]) + (b - c[2]) * (b - c[2]);
      if (bestDistance === null || d < bestDistance) { best = i; bestDistance = d; }
    }
    return best;
  }

  function palette256(n) {
    if (n < 16) return n;
    if (n < 232) {
      n -= 16;
      var steps = [0, 95, 135, 175, 215, 255];
      return nearestBasic(steps[Math.floor(n / 36)], steps[Math.floor(n / 6) % 6], steps[n % 6]);
    }
    var level = 8 + (n - 232) * 10;
    return nearestBasic(level, level, level);
  }

  function clamp255(v) { return Math.max(0, Math.min(255, v)); }

  function extended(rest) {
    if (rest.length >= 2 && rest[0] === 5) return [palette256(clamp255(rest[1])), 2];
    if (rest.length >= 4 && rest[0] === 2) {
      return [nearestBasic(clamp255(rest[1]), clamp255(rest[2]), clamp255(rest[3])), 4];
    }
    return [null, rest.length];
  }

  function Style() { this.reset(); }
  Style.prototype.reset = function () {
    this.fg = null; this.bg = null; this.bold = false; this.dim = false; this.italic = false;
    this.underline = false; this.inverse = false; this.strike = false;
  };
  Style.prototype.classes = function () {
    var fg = this.fg, bg = this.bg;
    if (this.inverse) {
      var f = bg !== null ? bg : "d", b = fg !== null ? fg : "d";
      fg = f; bg = b;
    }
    var names = [];
    if (fg !== null) names.push("a-fg-" + fg);
    if (bg !== null) names.push("a-bg-" + bg);
    if (this.bold) names.push("a-b");
    if (this.dim) names.push("a-d");
    if (this.italic) names.push("a-i");
    if (this.underline) names.push("a-u");
    if (this.strike) names.push("a-s");
    return names.join(" ");
  };
  Style.prototype.apply = function (params) {
    var codes = params ? params.split(/[;:]/).map(function (p) {
      return /^[0-9]+$/.test(p) ? parseInt(p, 10) : 0;
    }) : [0];
    for (var i = 0; i < codes.length; i++) {
      var code = codes[i];
      if (code === 0) this.reset();
      else if (code === 1) this.bold = true;
      else if (code === 2) this.dim = true;
      else if (code === 3) this.italic = true;
      else if (code === 4) this.underline = true;
      else if (code === 7) this.inverse = true;
      else if (code === 9) this.strike = true;
      else if (code === 22) { this.bold = false; this.dim = false; }
      else if (code === 23) this.italic = false;
      else if (code === 24) this.underline = false;
      else if (code === 27) this.inverse = false;
      else if (code === 29) this.strike = false;
      else if (code >= 30 && code <= 37) this.fg = code - 30;
      else if (code === 39) this.fg = null;
      else if (code >= 40 && code <= 47) this.bg = code - 40;
      else if (code === 49) this.bg = null;
      else if (code >= 90 && code <= 97) this.fg = code - 90 + 8;
      else if (code >= 100 && code <= 107) this.bg = code - 100 + 8;
      else if (code === 38 || code === 48) {
        var result = extended(codes.slice(i + 1));
        i += result[1];
        if (result[0] !== null) {
          if (code === 38) this.fg = result[0]; else this.bg = result[0];
        }
      }
    }
  };

  function carriageReturns(line) {
    line = line.replace(/\r+$/, "");
    if (line.indexOf("\r") !== -1) {
      var parts = line.split("\r").filter(function (p) { return p.length > 0; });
      line = parts.length ? parts[parts.length - 1] : "";
    }
    return line;
  }

  /* [[text, classes], ...] for one line; text is plain (not escaped). */
  function segments(line) {
    line = carriageReturns(line);
    var style = new Style();
    var pieces = [];
    var position = 0;
    function emit(text) {
      text = text.replace(CONTROL, "");
      if (!text) return;
      var classes = style.classes();
      var last = pieces[pieces.length - 1];
      if (last && last[1] === classes) last[0] += text;
      else pieces.push([text, classes]);
    }
    ESCAPE.lastIndex = 0;
    var match;
    while ((match = ESCAPE.exec(line)) !== null) {
      emit(line.slice(position, match.index));
      position = match.index + match[0].length;
      var params = match[1] || "";
      if (match[2] === "m" && !/^[?<=>]/.test(params)) style.apply(params);
      if (match[0].length === 0) ESCAPE.lastIndex++;
    }
    emit(line.slice(position));
    return pieces;
  }

  function plain(line) {
    return segments(line).map(function (p) { return p[0]; }).join("");
  }

  /* Append the line's pieces to `parent` as text nodes and classed spans. */
  function render(line, parent) {
    var pieces = segments(line);
    for (var i = 0; i < pieces.length; i++) {
      if (pieces[i][1]) {
        var span = document.createElement("span");
        span.className = pieces[i][1];
        span.textContent = pieces[i][0];
        parent.appendChild(span);
      } else {
        parent.appendChild(document.createTextNode(pieces[i][0]));
      }
    }
    return parent;
  }

  global.SandboxAnsi = { segments: segments, plain: plain, render: render };
})(window);
