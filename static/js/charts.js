/* Small canvas line charts for a run's resource samples (our own code: no chart library).
 *
 * SandboxCharts.create(root, {memoryLimit, diskLimit}) finds canvas[data-chart] elements inside
 * root and returns {setSamples(list), push(sample)}. A sample is the data of a "stats" event plus
 * its ts: {ts, cpu, memory_mb, memory_limit_mb, disk_mb, disk_limit_mb, rx_mb, tx_mb, pids}.
 */
(function (global) {
  "use strict";

  function css(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name);
    return (value && value.trim()) || fallback;
  }

  function fmtNumber(value, unit) {
    if (value === null || value === undefined || isNaN(value)) return "—";
    var digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
    return value.toFixed(digits) + (unit ? " " + unit : "");
  }

  function fmtBytesMb(mb) {
    if (mb >= 1024) return (mb / 1024).toFixed(2) + " GB";
    if (mb >= 1) return mb.toFixed(mb >= 100 ? 0 : 1) + " MB";
    return Math.round(mb * 1024) + " KB";
  }

  function fmtRate(kbps) {
    if (kbps >= 1024) return (kbps / 1024).toFixed(1) + " MB/s";
    return kbps.toFixed(kbps >= 10 ? 0 : 1) + " KB/s";
  }

  function LineChart(canvas, options) {
    this.canvas = canvas;
    this.options = options;
    this.points = [];
  }

  LineChart.prototype.setPoints = function (points) { this.points = points; this.draw(); };

  LineChart.prototype.draw = function () {
    var canvas = this.canvas, opts = this.options;
    var ratio = global.devicePixelRatio || 1;
    var width = canvas.clientWidth || 300, height = canvas.clientHeight || 90;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    var pad = { l: 4, r: 4, t: 6, b: 14 };
    var w = width - pad.l - pad.r, h = height - pad.t - pad.b;
    var points = this.points;
    var grid = css("--chart-grid", "rgba(128,128,128,0.18)");
    var muted = css("--muted", "#888");
    ctx.font = "10px " + css("--mono", "monospace");

    var maxY = opts.minMax || 1;
    for (var i = 0; i < points.length; i++) {
      for (var s = 0; s < opts.series.length; s++) {
        var v = points[i][opts.series[s].key];
        if (v > maxY) maxY = v;
      }
    }
    if (opts.limit && opts.limit > 0) maxY = Math.max(maxY, opts.limit);
    maxY *= 1.08;

    ctx.strokeStyle = grid;
    ctx.lineWidth = 1;
    for (var g = 0; g <= 3; g++) {
      var gy = pad.t + (h * g) / 3 + 0.5;
      ctx.beginPath(); ctx.moveTo(pad.l, gy); ctx.lineTo(pad.l + w, gy); ctx.stroke();
    }
    ctx.fillStyle = muted;
    ctx.textBaseline = "top";
    if (!(opts.limit > 0)) ctx.fillText(opts.format(maxY / 1.08), pad.l + 2, pad.t);

    if (points.length === 0) {
      ctx.fillText("no samples yet", pad.l + w / 2 - 36, pad.t + h / 2 - 5);
      return;
    }
    var t0 = points[0].ts, t1 = points[points.length - 1].ts;
    var span = Math.max(1, t1 - t0);
    function x(t) { return pad.l + ((t - t0) / span) * w; }
    function y(v) { return pad.t + h - (Math.max(0, v) / maxY) * h; }

    if (opts.limit && opts.limit > 0) {
      ctx.save();
      ctx.setLineDash([4, 3]);
      ctx.strokeStyle = css("--bad", "#e03131");
      ctx.beginPath(); ctx.moveTo(pad.l, y(opts.limit) + 0.5); ctx.lineTo(pad.l + w, y(opts.limit) + 0.5); ctx.stroke();
      ctx.restore();
      ctx.fillStyle = css("--bad", "#e03131");
      ctx.textBaseline = "bottom";
      var label = "limit " + opts.format(opts.limit);
      ctx.fillText(label, pad.l + w - ctx.measureText(label).width - 2, y(opts.limit) - 1);
    }

    for (var k = 0; k < opts.series.length; k++) {
      var series = opts.series[k];
      ctx.strokeStyle = css(series.color, "#748ffc");
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      var started = false;
      for (var p = 0; p < points.length; p++) {
        var value = points[p][series.key];
        if (value === null || value === undefined || isNaN(value)) continue;
        if (!started) { ctx.moveTo(x(points[p].ts), y(value)); started = true; }
        else ctx.lineTo(x(points[p].ts), y(value));
      }
      ctx.stroke();
      if (points.length === 1 && started) {
        ctx.fillStyle = ctx.strokeStyle;
        ctx.beginPath(); ctx.arc(x(points[0].ts), y(points[0][series.key]), 2, 0, Math.PI * 2); ctx.fill();
      }
    }
    ctx.fillStyle = muted;
    ctx.textBaseline = "bottom";
    var seconds = Math.round(span);
    ctx.fillText(seconds >= 120 ? Math.round(seconds / 60) + " min" : seconds + " s", pad.l + 2, height - 1);
  };

  function create(root, limits) {
    var samples = [];
    var charts = {};
    var defs = {
      cpu: { series: [{ key: "cpu", color: "--chart-1" }], minMax: 100, format: function (v) { return fmtNumber(v, "%"); } },
      memory: { series: [{ key: "memory_mb", color: "--chart-2" }], format: fmtBytesMb, limit: limits.memoryLimit },
      network: { series: [{ key: "rx_rate", color: "--chart-3" }, { key: "tx_rate", color: "--chart-4" }], minMax: 1, format: fmtRate },
      disk: { series: [{ key: "disk_mb", color: "--chart-5" }], format: fmtBytesMb, limit: limits.diskLimit }
    };
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var name = canvas.getAttribute("data-chart");
      if (defs[name]) charts[name] = new LineChart(canvas, defs[name]);
    });
    var nowLabels = {};
    root.querySelectorAll("[data-now]").forEach(function (el) { nowLabels[el.getAttribute("data-now")] = el; });

    function derive(list) {
      // Network counters are cumulative: draw the rate between samples.
      for (var i = 0; i < list.length; i++) {
        var prev = list[i - 1], cur = list[i];
        if (!prev) { cur.rx_rate = 0; cur.tx_rate = 0; continue; }
        var dt = Math.max(0.001, cur.ts - prev.ts);
        cur.rx_rate = Math.max(0, ((cur.rx_mb || 0) - (prev.rx_mb || 0)) * 1024 / dt);
        cur.tx_rate = Math.max(0, ((cur.tx_mb || 0) - (prev.tx_mb || 0)) * 1024 / dt);
      }
    }

    var pending = false;
    function redraw() {
      if (pending) return;
      pending = true;
      global.requestAnimationFrame(function () {
        pending = false;
        Object.keys(charts).forEach(function (name) { charts[name].setPoints(samples); });
        var last = samples[samples.length - 1];
        if (last) {
          if (nowLabels.cpu) nowLabels.cpu.textContent = fmtNumber(last.cpu, "%");
          if (nowLabels.memory) nowLabels.memory.textContent = fmtBytesMb(last.memory_mb || 0) + " / " + fmtBytesMb(last.memory_limit_mb || limits.memoryLimit || 0);
          if (nowLabels.network) nowLabels.network.textContent = "↓ " + fmtRate(last.rx_rate || 0) + "  ↑ " + fmtRate(last.tx_rate || 0);
          if (nowLabels.disk) nowLabels.disk.textContent = fmtBytesMb(last.disk_mb || 0) + (last.pids !== undefined ? " · " + last.pids + " procs" : "");
        }
      });
    }

    global.addEventListener("resize", redraw);
    return {
      setSamples: function (list) { samples = list.slice(); derive(samples); redraw(); },
      push: function (sample) {
        samples.push(sample);
        if (samples.length > 5000) samples.splice(0, samples.length - 5000);
        var n = samples.length;
        if (n >= 2) {
          var prev = samples[n - 2], cur = samples[n - 1], dt = Math.max(0.001, cur.ts - prev.ts);
          cur.rx_rate = Math.max(0, ((cur.rx_mb || 0) - (prev.rx_mb || 0)) * 1024 / dt);
          cur.tx_rate = Math.max(0, ((cur.tx_mb || 0) - (prev.tx_mb || 0)) * 1024 / dt);
        } else { samples[0].rx_rate = 0; samples[0].tx_rate = 0; }
        redraw();
      },
      count: function () { return samples.length; }
    };
  }

  global.SandboxCharts = { create: create };
})(window);
