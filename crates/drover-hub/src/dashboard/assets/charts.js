// Small SVG charts for the dashboard: time series (lines or stacked areas)
// and sparklines. No library: the dashboard must work with no internet.
(() => {
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

// A readable upper bound for an axis: 1, 2 or 5 times a power of ten.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmtNumber(v) {
  if (v == null || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a === 0) return "0";
  return v.toFixed(2);
}

function fmtMs(ms) {
  if (ms == null || Number.isNaN(ms)) return "–";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  return (ms / 60000).toFixed(1) + " min";
}

function clock(ms, seconds) {
  return new Date(ms).toTimeString().slice(0, seconds ? 8 : 5);
}

// Draws `series` ([{name, color, values}]) over `times` (ms) into `host`.
// opts: {stacked, unit: "ms" | "", bars}
function timeChart(host, times, series, opts) {
  opts = opts || {};
  const width = Math.max(host.clientWidth, 240);
  const height = 170;
  const pad = { l: 46, r: 10, t: 10, b: 22 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const n = times.length;
  const stackTop = new Array(n).fill(0);
  const drawn = series.map((s) => {
    const base = stackTop.slice();
    const top = s.values.map((v, i) => (opts.stacked ? base[i] : 0) + (v == null ? 0 : v));
    if (opts.stacked) top.forEach((v, i) => (stackTop[i] = v));
    return { s, base, top };
  });
  let max = 0;
  for (const d of drawn) {
    d.top.forEach((v, i) => {
      if (d.s.values[i] != null || opts.stacked) max = Math.max(max, v);
    });
  }
  max = niceMax(max);
  const x = (i) => pad.l + (n <= 1 ? 0 : (i / (n - 1)) * w);
  const y = (v) => pad.t + h - (v / max) * h;
  const fmt = opts.unit === "ms" ? fmtMs : fmtNumber;

  const svg = el("svg", { width, height, class: "tchart", role: "img" });
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    el("line", { x1: pad.l, x2: pad.l + w, y1: y(v), y2: y(v), class: "grid" }, svg);
    el("text", { x: pad.l - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, svg).textContent = fmt(v);
  }
  const short = n > 1 && times[n - 1] - times[0] < 10 * 60 * 1000;
  // Evenly spaced labels at least 90 px apart: the first starts at the left
  // edge, the last ends at the right one.
  const labels = Math.min(n, Math.floor(w / 90) + 1);
  for (let k = 0; k < labels; k++) {
    const i = labels > 1 ? Math.round(((n - 1) * k) / (labels - 1)) : n - 1;
    const anchor = labels === 1 ? "end" : k === 0 ? "start" : k === labels - 1 ? "end" : "middle";
    el("text", { x: x(i), y: height - 6, class: "axis", "text-anchor": anchor }, svg).textContent = clock(times[i], short);
  }
  for (const d of drawn) {
    if (opts.stacked) {
      let path = "";
      d.top.forEach((v, i) => (path += (i ? "L" : "M") + x(i).toFixed(1) + "," + y(v).toFixed(1)));
      for (let i = n - 1; i >= 0; i--) path += "L" + x(i).toFixed(1) + "," + y(d.base[i]).toFixed(1);
      el("path", { d: path + "Z", fill: d.s.color, "fill-opacity": 0.35, stroke: "none" }, svg);
      let line = "";
      d.top.forEach((v, i) => (line += (i ? "L" : "M") + x(i).toFixed(1) + "," + y(v).toFixed(1)));
      el("path", { d: line, fill: "none", stroke: d.s.color, "stroke-width": 1.5 }, svg);
    } else {
      let line = "";
      let pen = false;
      d.s.values.forEach((v, i) => {
        if (v == null) { pen = false; return; }
        line += (pen ? "L" : "M") + x(i).toFixed(1) + "," + y(v).toFixed(1);
        pen = true;
      });
      el("path", { d: line, fill: "none", stroke: d.s.color, "stroke-width": 1.6, "stroke-linejoin": "round" }, svg);
      // A point with no neighbour draws no line: a dot shows it.
      d.s.values.forEach((v, i) => {
        const alone = v != null && d.s.values[i - 1] == null && d.s.values[i + 1] == null;
        if (alone) el("circle", { cx: x(i), cy: y(v), r: 2.5, fill: d.s.color }, svg);
      });
    }
  }
  // A cursor that reads every series at the pointer.
  const cursor = el("line", { y1: pad.t, y2: pad.t + h, class: "cursor", visibility: "hidden" }, svg);
  const tip = document.createElement("div");
  tip.className = "tip";
  tip.hidden = true;
  svg.addEventListener("mousemove", (e) => {
    const r = svg.getBoundingClientRect();
    const i = Math.max(0, Math.min(n - 1, Math.round(((e.clientX - r.left - pad.l) / w) * (n - 1))));
    if (n === 0) return;
    cursor.setAttribute("x1", x(i));
    cursor.setAttribute("x2", x(i));
    cursor.setAttribute("visibility", "visible");
    tip.hidden = false;
    tip.replaceChildren();
    const head = document.createElement("div");
    head.textContent = new Date(times[i]).toLocaleTimeString();
    tip.appendChild(head);
    for (const s of series) {
      const row = document.createElement("div");
      const sw = document.createElement("i");
      sw.style.background = s.color;
      row.append(sw, s.name + " " + fmt(s.values[i]));
      tip.appendChild(row);
    }
    tip.style.left = Math.min(x(i) + 12, width - 150) + "px";
  });
  svg.addEventListener("mouseleave", () => {
    cursor.setAttribute("visibility", "hidden");
    tip.hidden = true;
  });

  const legend = document.createElement("div");
  legend.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    const sw = document.createElement("i");
    sw.style.background = s.color;
    item.append(sw, s.name);
    legend.appendChild(item);
  }
  host.replaceChildren(svg, tip, legend);
}

// A line of the last `values` into an <svg> sized by CSS.
function sparkline(svg, values, color) {
  const width = svg.clientWidth || 120;
  const height = svg.clientHeight || 28;
  const max = Math.max(...values.map((v) => v || 0), 1e-9);
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  let d = "";
  values.forEach((v, i) => {
    d += (i ? "L" : "M") + (i * step).toFixed(1) + "," + (height - 2 - ((v || 0) / max) * (height - 4)).toFixed(1);
  });
  svg.replaceChildren();
  el("path", { d: d + `L${width},${height}L0,${height}Z`, fill: color, "fill-opacity": 0.18, stroke: "none" }, svg);
  el("path", { d, fill: "none", stroke: color, "stroke-width": 1.5 }, svg);
}

window.charts = { timeChart, sparkline, fmtNumber, fmtMs };
})();
