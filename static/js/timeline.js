/* The agent timeline (and the steps of a script run), built from run events.
 *
 * SandboxTimeline.create(ol, {kind}) returns {add(event), expandAll(), collapseAll(),
 * noteLogLine(source, line)}. The same function renders the events embedded in the page and the
 * live ones from the socket, so a finished run looks exactly as it did live. Every piece of text
 * from the agent goes in through textContent.
 */
(function (global) {
  "use strict";

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clock(ts) {
    var d = new Date(ts * 1000);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "";
    if (ms < 1000) return Math.round(ms) + " ms";
    var s = ms / 1000;
    if (s < 60) return s.toFixed(1) + " s";
    return Math.floor(s / 60) + "m " + String(Math.round(s % 60)).padStart(2, "0") + "s";
  }

  function pretty(value) {
    try { return JSON.stringify(value, null, 2); } catch (e) { return String(value); }
  }

  function brief(tool, input) {
    input = input || {};
    var value = input.command || input.file_path || input.path || input.pattern || "";
    if (!value) { var keys = Object.keys(input); if (keys.length) value = String(input[keys[0]]); }
    value = String(value).split("\n")[0];
    return value.length > 110 ? value.slice(0, 109) + "…" : value;
  }

  var STATUS_WORDS = {
    queued: "Queued", provisioning: "Provisioning a sandbox", running: "Running",
    cancelling: "Cancelling", succeeded: "Succeeded", failed: "Failed", timed_out: "Timed out",
    oom: "Out of memory", cancelled: "Cancelled", crashed: "Crashed", error: "Error"
  };
  var TONES = {
    queued: "muted", provisioning: "info", running: "info", cancelling: "warn", succeeded: "ok",
    failed: "bad", timed_out: "warn", oom: "bad", cancelled: "muted", crashed: "bad", error: "bad"
  };
  var PHASES = { capturing: "Capturing files", cleaning_up: "Removing the sandbox" };

  function create(root, options) {
    var kind = (options && options.kind) || "agent";
    var tools = {};      // tool_use_id -> {item, details, ...}
    var commands = {};   // command index -> {...}
    var turns = {};      // turn -> {item, text, usage}
    var logLinks = {};   // source key -> first line

    var currentSeq = null;  // the event being added: review comments anchor to it (review.js)
    function append(item) {
      if (currentSeq !== null && !item.dataset.seq) item.dataset.seq = currentSeq;
      root.appendChild(item);
      return item;
    }

    function row(className, ts, icon) {
      var item = el("li", "tl-item " + className);
      if (ts) item.appendChild(el("time", "tl-time", clock(ts)));
      if (icon) item.appendChild(el("span", "tl-icon", icon));
      return item;
    }

    function section(parent, title, text, cls, terminal) {
      var box = el("div", "tl-section");
      box.appendChild(el("h4", null, title));
      var pre = el("pre", "tl-pre" + (cls ? " " + cls : ""));
      if (terminal && global.SandboxAnsi) {
        // Command output keeps its colours, through the same safe parser as the log.
        String(text).split("\n").forEach(function (line, index) {
          if (index) pre.appendChild(document.createTextNode("\n"));
          global.SandboxAnsi.render(line, pre);
        });
      } else {
        pre.textContent = text;
      }
      box.appendChild(pre);
      parent.appendChild(box);
      return box;
    }

    function status(ev) {
      var d = ev.data;
      var item = row("tl-status tone-" + (TONES[d.status] || "muted"), ev.ts, "●");
      var text = STATUS_WORDS[d.status] || d.status;
      if (d.attempt > 1 && d.status === "provisioning") text += " (attempt " + d.attempt + ")";
      item.appendChild(el("span", "tl-label", text));
      if (d.message) item.appendChild(el("span", "tl-note", d.message));
      append(item);
    }

    function turnStarted(ev) {
      var d = ev.data;
      var item = row("tl-turn", ev.ts, "");
      item.appendChild(el("span", "tl-label", "Turn " + d.turn));
      item.appendChild(el("span", "tl-note", d.model || ""));
      var usage = el("span", "tl-usage");
      item.appendChild(usage);
      append(item);
      turns[d.turn] = { item: item, usage: usage, message: null };
    }

    function messageFor(turn, ts) {
      var t = turns[turn];
      if (!t) { turnStarted({ ts: ts, data: { turn: turn, model: "" } }); t = turns[turn]; }
      if (!t.message) {
        var item = row("tl-message", null, "");
        var body = el("div", "tl-text");
        item.appendChild(body);
        append(item);
        t.message = body;
        t.messageText = "";
      }
      return t;
    }

    function textDelta(ev) {
      var t = messageFor(ev.data.turn, ev.ts);
      if (t.final) return;
      t.messageText += ev.data.text || "";
      t.message.textContent = t.messageText;
      t.message.classList.add("streaming");
    }

    function assistantMessage(ev) {
      var d = ev.data;
      if (!d.text) { var t0 = turns[d.turn]; if (t0 && t0.message) t0.message.parentNode.remove(); if (t0) t0.message = null; return; }
      var t = messageFor(d.turn, ev.ts);
      t.final = true;
      t.message.textContent = d.text;
      t.message.classList.remove("streaming");
    }

    function usage(ev) {
      var t = turns[ev.data.turn];
      var delta = ev.data.delta || {};
      if (t) {
        var tokens = (delta.input_tokens || 0) + (delta.output_tokens || 0) + (delta.cache_read_tokens || 0) + (delta.cache_write_tokens || 0);
        t.usage.textContent = tokens.toLocaleString() + " tokens · $" + Number(delta.cost_usd || 0).toFixed(4);
      }
    }

    function toolCall(ev) {
      var d = ev.data;
      var item = row("tl-tool is-running", ev.ts, "");
      var details = el("details", "tl-details");
      details.open = true;
      var summary = el("summary");
      summary.appendChild(el("span", "tl-tool-name", d.tool));
      summary.appendChild(el("code", "tl-brief", brief(d.tool, d.input)));
      var state = el("span", "tl-state", "running…");
      summary.appendChild(state);
      var dur = el("span", "tl-dur");
      summary.appendChild(dur);
      details.appendChild(summary);
      var body = el("div", "tl-body");
      if (d.tool === "Bash" && d.input && d.input.command) section(body, "Command", d.input.command);
      else section(body, "Input", pretty(d.input));
      var decisions = el("div", "tl-decisions");
      body.appendChild(decisions);
      var files = el("ul", "tl-files");
      body.appendChild(files);
      details.appendChild(body);
      item.appendChild(details);
      append(item);
      item.id = "tool-" + d.tool_use_id;
      tools[d.tool_use_id] = { item: item, details: details, state: state, dur: dur, body: body, decisions: decisions, files: files };
      if (logLinks["tool:" + d.tool_use_id]) linkLog(tools[d.tool_use_id], logLinks["tool:" + d.tool_use_id]);
    }

    function interceptor(ev) {
      var d = ev.data, t = tools[d.tool_use_id];
      if (!t) return;
      var line = el("div", "tl-decision decision-" + d.decision);
      line.appendChild(el("strong", null, d.interceptor));
      line.appendChild(el("span", null, " " + d.phase + ": " + d.decision + (d.reason ? " — " + d.reason : "")));
      t.decisions.appendChild(line);
      if (d.decision === "blocked") t.item.classList.add("is-blocked");
    }

    function toolResult(ev) {
      var d = ev.data, t = tools[d.tool_use_id];
      if (!t) { toolCall({ ts: ev.ts, data: { tool: d.tool, tool_use_id: d.tool_use_id, input: {} } }); t = tools[d.tool_use_id]; }
      t.item.classList.remove("is-running");
      var blocked = t.item.classList.contains("is-blocked");
      t.item.classList.add(d.is_error ? "is-error" : "is-ok");
      t.state.textContent = blocked ? "blocked" : d.is_error ? "error" : "ok";
      t.dur.textContent = duration(d.duration_ms);
      section(t.body, "Output" + (d.truncated ? " (truncated)" : ""), d.output || "(no output)", d.is_error ? "is-error" : "", true);
      if (!d.is_error && !blocked) t.details.open = false;
    }

    function fileChanged(ev) {
      var d = ev.data, t = tools[d.tool_use_id];
      var text = d.action + " " + d.path + " (" + d.size + " bytes)";
      if (t) t.files.appendChild(el("li", null, text));
      else { var item = row("tl-note-row", ev.ts, "✎"); item.appendChild(el("span", "tl-note", text)); append(item); }
    }

    function commandStarted(ev) {
      var d = ev.data;
      var item = row("tl-command is-running", ev.ts, "$");
      var label = el("code", "tl-cmd", d.command);
      item.appendChild(label);
      var state = el("span", "tl-state", "running…");
      item.appendChild(state);
      var dur = el("span", "tl-dur");
      item.appendChild(dur);
      var link = el("a", "tl-loglink");
      link.hidden = true;
      item.appendChild(link);
      append(item);
      commands[d.index] = { item: item, state: state, dur: dur, link: link };
      if (logLinks["cmd:" + d.index]) linkLog(commands[d.index], logLinks["cmd:" + d.index]);
    }

    function commandFinished(ev) {
      var d = ev.data, c = commands[d.index];
      if (!c) { commandStarted({ ts: ev.ts, data: d }); c = commands[d.index]; }
      c.item.classList.remove("is-running");
      var ok = d.exit_code === 0 && !d.timed_out;
      c.item.classList.add(ok ? "is-ok" : "is-error");
      c.state.textContent = d.timed_out ? "timed out" : "exit " + d.exit_code;
      c.dur.textContent = duration(d.duration_ms);
    }

    function linkLog(target, line) {
      var link = target.link;
      if (!link) {
        link = el("a", "tl-loglink");
        target.link = link;
        var summary = target.details ? target.details.querySelector("summary") : target.item;
        summary.appendChild(link);
      }
      link.hidden = false;
      link.href = "#L" + line;
      link.textContent = "log L" + line;
      link.setAttribute("data-jump-line", line);
    }

    function noteLogLine(data) {
      var key = data.tool_use_id ? "tool:" + data.tool_use_id : data.command_index !== undefined && data.command_index !== null ? "cmd:" + data.command_index : null;
      if (!key || logLinks[key]) return;
      logLinks[key] = data.line;
      if (data.tool_use_id && tools[data.tool_use_id]) linkLog(tools[data.tool_use_id], data.line);
      if (key.indexOf("cmd:") === 0 && commands[data.command_index]) linkLog(commands[data.command_index], data.line);
    }

    function notice(ev, icon, text, tone) {
      var item = row("tl-note-row" + (tone ? " tone-" + tone : ""), ev.ts, icon);
      item.appendChild(el("span", "tl-note", text));
      append(item);
    }

    function finished(ev) {
      var d = ev.data;
      if (kind === "agent" && d.output) {
        var item = row("tl-final", ev.ts, "✓");
        item.appendChild(el("div", "tl-label", "Final answer"));
        item.appendChild(el("div", "tl-text", d.output));
        append(item);
      }
    }

    function filesCaptured(ev) {
      var d = ev.data;
      var text = "Captured " + d.count + " file" + (d.count === 1 ? "" : "s") + " (" + Math.round((d.total_bytes || 0) / 1024) + " KB)";
      if (d.limit_hit) text += " — stopped at the " + d.limit_hit + " limit";
      if (d.skipped && d.skipped.length) text += "; skipped " + d.skipped.length;
      notice(ev, "⇩", text);
      // Files the capture refused (apps/agents/capture.py REFUSED_PATTERNS), named one by one:
      // an agent writing git hooks or shell/editor start-up files is worth a reviewer's look.
      var refused = (d.skipped || []).filter(function (s) { return /^refused:/.test(s.reason); });
      if (refused.length) {
        var item = row("tl-note-row tone-bad", ev.ts, "⚠");
        item.setAttribute("data-testid", "capture-refused");
        item.appendChild(el("span", "tl-note", "Not captured, could run code where the files " +
          "are used: " + refused.map(function (s) { return s.path; }).join(", ")));
        append(item);
      }
    }

    var handlers = {
      status: status,
      phase: function (ev) { if (PHASES[ev.data.status]) notice(ev, "·", PHASES[ev.data.status]); },
      turn_started: turnStarted,
      text_delta: textDelta,
      assistant_message: assistantMessage,
      usage: usage,
      api_retry: function (ev) {
        var d = ev.data;
        notice(ev, "↻", "Model API " + (d.status_code || d.error_type) + ": retrying in " + d.delay_s + " s (attempt " + d.attempt + " of " + d.max_retries + ")", "warn");
      },
      tool_call: toolCall,
      interceptor: interceptor,
      tool_result: toolResult,
      file_changed: fileChanged,
      command_started: commandStarted,
      command_finished: commandFinished,
      files_captured: filesCaptured,
      run_finished: finished,
      log_truncated: function (ev) { notice(ev, "✂", "Log truncated at " + Math.round(ev.data.limit_bytes / 1048576) + " MB: further output is not stored", "warn"); },
      notice: function (ev) { notice(ev, "!", ev.data.message, "warn"); }
    };

    return {
      add: function (ev) {
        var h = handlers[ev.type];
        currentSeq = ev.seq;
        try { if (h) h(ev); } finally { currentSeq = null; }
        root.dispatchEvent(new CustomEvent("timeline:added", { bubbles: true, detail: { seq: ev.seq } }));
      },
      noteLogLine: noteLogLine,
      expandAll: function () { root.querySelectorAll("details").forEach(function (d) { d.open = true; }); },
      collapseAll: function () { root.querySelectorAll("details").forEach(function (d) { d.open = false; }); }
    };
  }

  global.SandboxTimeline = { create: create };
})(window);
