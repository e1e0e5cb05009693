/* Review comments in place on the run page (our own code, no library).
 *
 * The review panel (#review-panel, an htmx fragment) carries its anchored comments as JSON
 * (#review-anchors: {lines: {N: [...]}, events: {seq: [...]}}). This script shows them under
 * log line N (#LN) and under the timeline item of event seq, and keeps doing so as lines and
 * events stream in or the panel is re-rendered. Comment text goes in through textContent only.
 *
 * Clicking a log line's number (or a timeline item's "comment" link) points the panel's comment form at that
 * line (or event).
 */
(function () {
  "use strict";

  var anchors = { lines: {}, events: {} };

  function readAnchors() {
    var node = document.getElementById("review-anchors");
    if (!node) return;
    try { anchors = JSON.parse(node.textContent) || anchors; } catch (e) { /* keep the last */ }
  }

  function block(comments, kind, key) {
    var box = document.createElement("div");
    box.className = "inline-comments";
    box.dataset.reviewFor = kind + ":" + key;
    comments.forEach(function (c) {
      var item = document.createElement("div");
      item.className = "comment";
      var meta = document.createElement("div");
      meta.className = "meta";
      meta.textContent = c.author + " · " + new Date(c.at).toLocaleString();
      var body = document.createElement("div");
      body.className = "body";
      body.textContent = c.body;
      item.appendChild(meta);
      item.appendChild(body);
      box.appendChild(item);
    });
    return box;
  }

  function place() {
    document.querySelectorAll("[data-review-for]").forEach(function (n) { n.remove(); });
    Object.keys(anchors.lines || {}).forEach(function (line) {
      var row = document.getElementById("L" + line);
      if (row) row.insertAdjacentElement("afterend", block(anchors.lines[line], "line", line));
    });
    Object.keys(anchors.events || {}).forEach(function (seq) {
      var item = document.querySelector('#timeline [data-seq="' + seq + '"]');
      if (item) item.appendChild(block(anchors.events[seq], "event", seq));
    });
    document.querySelectorAll("#timeline [data-seq]").forEach(function (item) {
      if (item.querySelector(":scope > .tl-comment")) return;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "linklike tl-comment small";
      button.textContent = "comment";
      button.title = "Comment on this event";
      button.dataset.commentSeq = item.dataset.seq;
      item.appendChild(button);
    });
  }

  var pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () { pending = false; place(); });
  }

  function target(kind, value) {
    var form = document.getElementById("comment-form");
    if (!form) return;
    form.elements.line.value = kind === "line" ? value : "";
    form.elements.seq.value = kind === "event" ? value : "";
    var note = form.querySelector("[data-comment-target]");
    var clear = form.querySelector("[data-comment-clear]");
    if (note) note.textContent = kind === "line" ? "On log line " + value + ":" : kind === "event" ? "On timeline event #" + value + ":" : "On the whole run.";
    if (clear) clear.hidden = !kind;
    if (kind) form.elements.body.focus();
  }

  document.addEventListener("click", function (e) {
    var number = e.target.closest(".ln-no");
    if (number && number.closest("#log-lines")) {
      e.preventDefault();
      var line = number.closest(".ln").dataset.n;
      history.replaceState(null, "", "#L" + line);
      target("line", line);
      return;
    }
    var bubble = e.target.closest("[data-comment-seq]");
    if (bubble) { e.preventDefault(); target("event", bubble.dataset.commentSeq); return; }
    if (e.target.closest("[data-comment-clear]")) target("", "");
  });

  document.body.addEventListener("htmx:afterSwap", function (e) {
    if (e.target && (e.target.id === "review-panel" || e.target.closest && e.target.closest("#review-panel"))) {
      readAnchors();
      schedule();
    }
  });
  document.addEventListener("htmx:load", function (e) {
    if (e.target && e.target.id === "review-panel") { readAnchors(); schedule(); }
  });

  function watch(id) {
    var node = document.getElementById(id);
    if (node) new MutationObserver(function (records) {
      for (var i = 0; i < records.length; i++) {
        for (var j = 0; j < records[i].addedNodes.length; j++) {
          var added = records[i].addedNodes[j];
          if (added.nodeType === 1 && !added.matches("[data-review-for], .tl-comment")) { schedule(); return; }
        }
      }
    }).observe(node, { childList: true });
  }
  watch("log-lines");
  watch("timeline");
  readAnchors();
  schedule();
})();
