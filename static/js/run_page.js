/* The live run page: one WebSocket, a gap-free event stream, and the views it feeds.
 *
 * The page is rendered with everything up to seq `data-after`; the socket asks for
 * `?after=<last seq seen>` on every (re)connect, so nothing is missed and, since events at or
 * below the last seen seq are ignored, nothing is shown twice. Log lines are also numbered, and
 * the log view only appends line N+1 after line N.
 */
(function () {
  "use strict";

  var page = document.getElementById("run-page");
  if (!page) return;

  var MAX_DOM_LINES = 50000;
  var FETCH_LIMIT = 2000;
  var TERMINAL = ["succeeded", "failed", "timed_out", "oom", "cancelled", "crashed", "error"];

  var state = {
    lastSeq: parseInt(page.dataset.after, 10) || 0,
    firstLine: parseInt(page.dataset.firstLine, 10) || 1,
    lastLine: 0,
    totalLines: parseInt(page.dataset.totalLines, 10) || 0,
    atTail: true,
    following: true,
    unseen: 0,
    ended: false,
    socket: null,
    retries: 0,
    lastMessageAt: Date.now()
  };

  var logView = document.getElementById("log-view");
  var logLines = document.getElementById("log-lines");
  var chip = document.getElementById("new-lines-chip");
  var earlier = document.getElementById("log-earlier");
  var later = document.getElementById("log-later");
  var banner = document.getElementById("log-window-banner");
  var emptyNote = document.getElementById("log-empty");
  var pill = document.getElementById("live-pill");
  var marker = document.getElementById("log-truncated-marker");

  var existing = logLines.querySelectorAll(".ln");
  if (existing.length) state.lastLine = parseInt(existing[existing.length - 1].dataset.n, 10);
  else state.lastLine = state.firstLine - 1;

  // -- helpers ------------------------------------------------------------------------------

  function clock(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  function lineNode(number, ts, stream, text) {
    var row = document.createElement("div");
    row.className = stream === "stderr" ? "ln err" : "ln";
    row.id = "L" + number;
    row.dataset.n = number;
    var link = document.createElement("a");
    link.className = "ln-no";
    link.href = "#L" + number;
    link.textContent = number;
    var time = document.createElement("time");
    time.className = "ln-ts";
    var date = new Date(ts * 1000);
    time.dateTime = date.toISOString();
    time.textContent = clock(date);
    var body = document.createElement("span");
    body.className = "ln-tx";
    window.SandboxAnsi.render(text, body);
    row.appendChild(link);
    row.appendChild(time);
    row.appendChild(body);
    return row;
  }

  function setPill(name, text) {
    pill.dataset.state = name;
    pill.textContent = text;
  }

  // -- the log ------------------------------------------------------------------------------

  function nearBottom() {
    return logView.scrollHeight - logView.scrollTop - logView.clientHeight < 48;
  }

  function scrollToBottom() {
    logView.scrollTop = logView.scrollHeight;
  }

  var scrollScheduled = false;
  function afterAppend(count) {
    if (emptyNote && count) emptyNote.hidden = true;
    if (state.following) {
      if (!scrollScheduled) {
        scrollScheduled = true;
        window.requestAnimationFrame(function () { scrollScheduled = false; scrollToBottom(); });
      }
    } else if (count) {
      state.unseen += count;
      chip.hidden = false;
      chip.querySelector("[data-count]").textContent = state.unseen.toLocaleString();
    }
    trimDom();
  }

  function trimDom() {
    var count = logLines.childElementCount;
    if (count <= MAX_DOM_LINES) return;
    var remove = count - MAX_DOM_LINES;
    for (var i = 0; i < remove; i++) logLines.removeChild(logLines.firstElementChild);
    state.firstLine = parseInt(logLines.firstElementChild.dataset.n, 10);
    earlier.hidden = false;
  }

  /* Append lines [number, ts, stream, text] if they continue the view; returns how many. */
  function appendLines(lines) {
    var fragment = document.createDocumentFragment();
    var added = 0;
    for (var i = 0; i < lines.length; i++) {
      var n = lines[i][0];
      if (n <= state.lastLine) continue;
      if (n !== state.lastLine + 1) { state.atTail = false; break; }
      fragment.appendChild(lineNode(n, lines[i][1], lines[i][2], lines[i][3]));
      state.lastLine = n;
      added++;
    }
    logLines.appendChild(fragment);
    return added;
  }

  function onLogEvent(ev) {
    var d = ev.data;
    var texts = d.text.split("\n");
    var last = d.line + texts.length - 1;
    state.totalLines = Math.max(state.totalLines, last);
    var counter = document.querySelector("#run-header [data-log-count]");
    if (counter) counter.textContent = state.totalLines;
    if (timeline) timeline.noteLogLine(d);
    if (!state.atTail) { updateWindowBanner(); return; }
    var lines = [];
    for (var i = 0; i < texts.length; i++) lines.push([d.line + i, ev.ts, d.stream, texts[i]]);
    afterAppend(appendLines(lines));
    if (!state.atTail) updateWindowBanner();
  }

  function fetchLines(params) {
    var url = page.dataset.linesUrl + "?" + new URLSearchParams(params).toString();
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); });
  }

  function loadEarlier(limit) {
    if (state.firstLine <= 1) return Promise.resolve();
    earlier.disabled = true;
    return fetchLines({ before: state.firstLine, limit: limit || FETCH_LIMIT }).then(function (data) {
      var fragment = document.createDocumentFragment();
      var first = state.firstLine;
      data.lines.forEach(function (l) {
        if (l[0] < first) fragment.appendChild(lineNode(l[0], l[1], l[2], l[3]));
      });
      if (data.lines.length) first = Math.min(first, data.lines[0][0]);
      var before = logView.scrollHeight;
      logLines.insertBefore(fragment, logLines.firstChild);
      logView.scrollTop += logView.scrollHeight - before;
      state.firstLine = first;
      earlier.hidden = state.firstLine <= 1;
      earlier.disabled = false;
      if (emptyNote && logLines.childElementCount) emptyNote.hidden = true;
    }).catch(function () { earlier.disabled = false; });
  }

  function showWindow(lines, atTail) {
    logLines.textContent = "";
    state.firstLine = lines.length ? lines[0][0] : 1;
    state.lastLine = state.firstLine - 1;
    state.atTail = true;
    appendLines(lines);
    state.atTail = atTail;
    earlier.hidden = state.firstLine <= 1;
    if (emptyNote) emptyNote.hidden = logLines.childElementCount > 0;
    updateWindowBanner();
  }

  function updateWindowBanner() {
    banner.hidden = state.atTail;
    later.hidden = state.atTail;
    if (!state.atTail) {
      banner.querySelector("[data-window-text]").textContent =
        "Showing lines " + state.firstLine.toLocaleString() + "–" + state.lastLine.toLocaleString() +
        " of " + state.totalLines.toLocaleString() + ".";
    }
  }

  function loadLater() {
    return fetchLines({ after: state.lastLine, limit: FETCH_LIMIT }).then(function (data) {
      state.totalLines = Math.max(state.totalLines, data.total);
      var wasAt = state.atTail;
      state.atTail = true;
      appendLines(data.lines);
      state.atTail = wasAt || state.lastLine >= data.total;
      updateWindowBanner();
    });
  }

  function jumpToTail() {
    return fetchLines({ limit: 1000 }).then(function (data) {
      state.totalLines = Math.max(state.totalLines, data.total);
      showWindow(data.lines, true);
      state.following = true;
      chip.hidden = true;
      state.unseen = 0;
      scrollToBottom();
    });
  }

  function highlight(number) {
    var previous = logLines.querySelector(".ln.hl");
    if (previous) previous.classList.remove("hl");
    var row = document.getElementById("L" + number);
    if (!row) return false;
    row.classList.add("hl");
    state.following = false;
    row.scrollIntoView({ block: "center" });
    return true;
  }

  function goToLine(number) {
    if (highlight(number)) return;
    if (number < state.firstLine && state.firstLine - number <= 20000) {
      loadEarlier(state.firstLine - number + 200).then(function () { highlight(number); });
    } else {
      fetchLines({ from: Math.max(1, number - 200), limit: FETCH_LIMIT }).then(function (data) {
        state.totalLines = Math.max(state.totalLines, data.total);
        var last = data.lines.length ? data.lines[data.lines.length - 1][0] : 0;
        showWindow(data.lines, last >= data.total);
        highlight(number);
      });
    }
  }

  logView.addEventListener("scroll", function () {
    var bottom = nearBottom();
    if (bottom && state.atTail) {
      state.following = true;
      state.unseen = 0;
      chip.hidden = true;
    } else if (!bottom) {
      state.following = false;
    }
  });
  chip.addEventListener("click", function () {
    state.following = true;
    state.unseen = 0;
    chip.hidden = true;
    if (!state.atTail) jumpToTail(); else scrollToBottom();
  });
  earlier.addEventListener("click", function () { loadEarlier(); });
  later.addEventListener("click", function () { loadLater(); });
  banner.querySelector("[data-jump-tail]").addEventListener("click", function () { jumpToTail(); });

  function toggle(id, className, key, target) {
    var box = document.getElementById(id);
    var stored = window.localStorage.getItem(key);
    if (stored !== null) box.checked = stored === "1";
    function apply() { target.classList.toggle(className, box.checked); }
    box.addEventListener("change", function () { window.localStorage.setItem(key, box.checked ? "1" : "0"); apply(); });
    apply();
  }
  toggle("ts-toggle", "show-ts", "sandboxweb.log.timestamps", logLines);
  toggle("wrap-toggle", "wrap", "sandboxweb.log.wrap", logLines);

  // Server-rendered times are UTC; show them in the viewer's zone like the live ones.
  logLines.querySelectorAll("time.ln-ts").forEach(function (t) {
    var date = new Date(t.getAttribute("datetime"));
    if (!isNaN(date)) t.textContent = clock(date);
  });

  document.addEventListener("click", function (e) {
    var jump = e.target.closest("[data-jump-line]");
    if (jump) {
      e.preventDefault();
      var n = parseInt(jump.getAttribute("data-jump-line"), 10);
      history.replaceState(null, "", "#L" + n);
      goToLine(n);
      return;
    }
    if (e.target.closest("[data-close-search]")) {
      document.getElementById("log-search-results").textContent = "";
    }
    var number = e.target.closest("a.ln-no");
    if (number) {
      e.preventDefault();
      history.replaceState(null, "", number.getAttribute("href"));
      highlight(parseInt(number.textContent, 10));
    }
  });
  window.addEventListener("hashchange", function () {
    var m = /^#L(\d+)$/.exec(location.hash);
    if (m) goToLine(parseInt(m[1], 10));
  });

  // -- timeline, charts, header and files -------------------------------------------------

  var timelineRoot = document.getElementById("timeline");
  var timeline = timelineRoot ? window.SandboxTimeline.create(timelineRoot, { kind: page.dataset.kind }) : null;
  JSON.parse(document.getElementById("timeline-data").textContent).forEach(function (ev) {
    if (timeline) timeline.add(ev);
  });
  // Where each command / tool call starts in the log (the timeline links there).
  JSON.parse(document.getElementById("log-anchors").textContent).forEach(function (anchor) {
    if (timeline) timeline.noteLogLine(anchor);
  });
  document.querySelectorAll("[data-expand-all]").forEach(function (b) { b.addEventListener("click", function () { timeline.expandAll(); }); });
  document.querySelectorAll("[data-collapse-all]").forEach(function (b) { b.addEventListener("click", function () { timeline.collapseAll(); }); });

  var charts = window.SandboxCharts.create(document.getElementById("resources"), {
    memoryLimit: parseFloat(page.dataset.memoryLimit) || 0,
    diskLimit: parseFloat(page.dataset.diskLimit) || 0
  });
  var samples = JSON.parse(document.getElementById("stats-data").textContent);
  charts.setSamples(samples);
  var resourcesNote = document.getElementById("resources-note");

  var refreshTimers = {};
  function refresh(name, delay) {
    if (refreshTimers[name]) return;
    refreshTimers[name] = window.setTimeout(function () {
      refreshTimers[name] = null;
      var url = name === "header" ? page.dataset.headerUrl : page.dataset.filesUrl;
      var target = name === "header" ? "#run-header" : "#run-files";
      if (window.htmx) window.htmx.ajax("GET", url, { target: target, swap: "outerHTML" });
    }, delay === undefined ? 250 : delay);
  }

  function header() { return document.getElementById("run-header"); }

  function tickElapsed() {
    var h = header();
    if (!h) return;
    var started = parseFloat(h.dataset.started);
    var finished = parseFloat(h.dataset.finished);
    var timeout = parseFloat(h.dataset.timeout) || 0;
    var label = h.querySelector("[data-elapsed]");
    var bar = h.querySelector("[data-elapsed-bar]");
    if (!started || !label) return;
    var end = finished || Date.now() / 1000;
    var elapsed = Math.max(0, end - started);
    var m = Math.floor(elapsed / 60), s = Math.floor(elapsed % 60);
    label.textContent = m ? m + "m " + String(s).padStart(2, "0") + "s" : elapsed.toFixed(0) + " s";
    if (bar && timeout) {
      var pct = Math.min(100, (elapsed / timeout) * 100);
      bar.style.width = pct + "%";
      bar.classList.toggle("hot", pct > 80);
    }
  }
  window.setInterval(tickElapsed, 1000);
  tickElapsed();
  document.body.addEventListener("htmx:afterSwap", function (e) {
    if (e.detail.target && e.detail.target.id === "file-viewer-body") {
      var dialog = document.getElementById("file-viewer");
      if (!dialog.open) dialog.showModal();
    }
    tickElapsed();
  });

  // -- events ---------------------------------------------------------------------------------

  var HEADER_EVENTS = { status: 1, usage: 1, turn_started: 1, log_truncated: 1, command_finished: 1 };

  function dispatch(ev) {
    switch (ev.type) {
      case "log":
        onLogEvent(ev);
        return;
      case "stats":
        charts.push(Object.assign({ ts: ev.ts }, ev.data));
        if (resourcesNote) resourcesNote.textContent = charts.count() + (charts.count() === 1 ? " sample" : " samples");
        return;
      case "files":
        refresh("files", 400);
        return;
      case "log_truncated":
        marker.hidden = false;
        break;
      default:
        break;
    }
    if (timeline) timeline.add(ev);
    if (HEADER_EVENTS[ev.type]) refresh("header", ev.type === "status" ? 50 : 600);
    if (ev.type === "status" && TERMINAL.indexOf(ev.data.status) !== -1) refresh("files", 300);
  }

  function onEvents(events) {
    for (var i = 0; i < events.length; i++) {
      var ev = events[i];
      if (ev.seq <= state.lastSeq) continue;        // seen already (replay overlap)
      if (ev.seq !== state.lastSeq + 1) {           // a hole: never expected, resync to be safe
        console.warn("run events: expected seq", state.lastSeq + 1, "got", ev.seq);
        reconnect();
        return;
      }
      state.lastSeq = ev.seq;
      dispatch(ev);
    }
    page.dataset.lastSeq = state.lastSeq;
  }

  // -- the socket -----------------------------------------------------------------------------

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + location.host + page.dataset.wsPath + "?after=" + state.lastSeq;
    var socket = new WebSocket(url);
    state.socket = socket;
    socket.onopen = function () {
      state.retries = 0;
      state.lastMessageAt = Date.now();
      setPill("live", "Live");
    };
    socket.onmessage = function (message) {
      state.lastMessageAt = Date.now();
      var data;
      try { data = JSON.parse(message.data); } catch (e) { return; }
      if (data.type === "events") onEvents(data.events);
      else if (data.type === "run.end") {
        state.ended = true;
        setPill("ended", "Finished");
        refresh("header", 0);
        refresh("files", 100);
      }
    };
    socket.onclose = function () {
      if (state.socket !== socket) return;
      state.socket = null;
      if (state.ended) return;
      setPill("reconnecting", "Reconnecting…");
      var delay = Math.min(10000, 500 * Math.pow(2, state.retries)) * (0.5 + Math.random() / 2);
      state.retries++;
      window.setTimeout(connect, delay);
    };
  }

  function reconnect() {
    var socket = state.socket;
    if (socket) { state.socket = null; socket.close(); }
    if (!state.ended) { setPill("reconnecting", "Reconnecting…"); window.setTimeout(connect, 200); }
  }

  window.setInterval(function () {
    var socket = state.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - state.lastMessageAt > 45000) { reconnect(); return; }
    socket.send(JSON.stringify({ type: "ping" }));
  }, 20000);

  // Start following at the bottom, or at the line the URL points to.
  var hashLine = /^#L(\d+)$/.exec(location.hash);
  if (hashLine) goToLine(parseInt(hashLine[1], 10));
  else scrollToBottom();
  connect();

  window.sandboxRunPage = { state: state, goToLine: goToLine };
})();
