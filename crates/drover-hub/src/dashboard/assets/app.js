// The dashboard: reads the hub's overview from /admin/events (server-sent
// events, read with fetch so the admin key can go in a header), draws the
// active view, and sends actions to the management API.
//
// Each view is drawn whole with h() and then laid over what the page shows
// by update(), which keeps every element that is still there (a backend's
// card, a model's row) and changes only what differs in it: an update a
// second must not take away a focused button, a selection or a press.
"use strict";

const { timeChart, sparkline, fmtNumber, fmtMs } = window.charts;
const KEY = "drover.adminKey";
const PALETTE = ["#58a6ff", "#3fb950", "#d29922", "#bc8cff", "#ff7b72", "#39c5cf", "#e3b341", "#f778ba"];
const HOUR_MS = 3600 * 1000;

const state = {
  key: localStorage.getItem(KEY) || "",
  overview: null,
  points: new Map(), // start_ms -> traffic point
  tab: "fleet",
  colors: new Map(),
};

// ---- small helpers -------------------------------------------------------

// What tells an element apart from its siblings across updates (a
// backend's or a model's name; an action's name for a button, so that a
// button whose meaning changed is a new one and a press on it is not
// taken for the new meaning), and the handlers h() set.
const keys = new WeakMap();
const handlers = new WeakMap();

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "key") keys.set(node, String(v));
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) {
      // A property, not a listener: an update hands the kept element the
      // new closure.
      node[k] = v;
      handlers.set(node, [...(handlers.get(node) || []), k]);
    } else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

// Makes `host`'s children `wanted` (nodes or text), keeping each old child
// that matches one: by key where it has one, else the next unkeyed child
// of the same tag. A kept child takes the wanted one's attributes,
// handlers and children the same way; the others are added or removed.
// Kept children move only when the order changed.
function update(host, wanted) {
  wanted = wanted.flat().filter((c) => c != null && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
  const old = [...host.childNodes];
  const byKey = new Map();
  const unkeyed = [];
  for (const n of old) {
    const k = keys.get(n);
    if (k == null) unkeyed.push(n);
    else if (!byKey.has(k)) byKey.set(k, n);
  }
  const kept = new Set();
  let next = 0;
  const nodes = wanted.map((w) => {
    const k = keys.get(w);
    const match = k == null ? unkeyed[next++] : byKey.get(k);
    if (!match || kept.has(match) || match.nodeName !== w.nodeName) return w;
    kept.add(match);
    patch(match, w);
    return match;
  });
  for (const n of old) if (!kept.has(n)) n.remove();
  let at = host.firstChild;
  for (const n of nodes) {
    if (n === at) at = at.nextSibling;
    else host.insertBefore(n, at);
  }
}

function patch(old, fresh) {
  if (old.nodeType !== Node.ELEMENT_NODE) {
    if (old.nodeValue !== fresh.nodeValue) old.nodeValue = fresh.nodeValue;
    return;
  }
  for (const { name, value } of fresh.attributes) {
    if (old.getAttribute(name) === value) continue;
    // The content security policy refuses style attributes, not the CSSOM.
    if (name === "style") old.style.cssText = fresh.style.cssText;
    else old.setAttribute(name, value);
  }
  for (const { name } of [...old.attributes]) if (!fresh.hasAttribute(name)) old.removeAttribute(name);
  for (const on of new Set([...(handlers.get(old) || []), ...(handlers.get(fresh) || [])])) old[on] = fresh[on];
  handlers.set(old, handlers.get(fresh) || []);
  update(old, [...fresh.childNodes]);
}

// Text that is the same is left alone, with any selection in it.
function setText(el, text) {
  text = String(text);
  if (el.textContent !== text) el.textContent = text;
}

const $ = (id) => document.getElementById(id);

function colorFor(name) {
  if (!state.colors.has(name)) state.colors.set(name, PALETTE[state.colors.size % PALETTE.length]);
  return state.colors.get(name);
}

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function ago(ms) {
  if (ms == null) return "never";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}

function toast(text, kind) {
  const t = h("div", { class: "toast " + (kind || "ok"), role: "status" }, text);
  $("toasts").appendChild(t);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
}

// ---- the stream ----------------------------------------------------------

function setLive(text, cls) {
  const live = $("live");
  setText(live, text);
  live.className = "live " + cls;
}

async function connect() {
  let backoff = 1000;
  for (;;) {
    let reason;
    try {
      const headers = state.key ? { Authorization: "Bearer " + state.key } : {};
      const res = await fetch("/admin/events", { headers, cache: "no-store" });
      if (res.status === 401 || res.status === 403) {
        const body = await res.json().catch(() => ({}));
        askForKey((body.error && body.error.message) || res.statusText);
        return;
      }
      if (!res.ok || !res.body) throw new Error("the hub answered " + res.status);
      backoff = 1000;
      await read(res.body);
      reason = "the hub closed the stream";
    } catch (e) {
      reason = e.message || String(e);
    }
    const wait = backoff;
    backoff = Math.min(backoff * 2, 8000);
    setLive("reconnecting", "off");
    $("live").title = reason + "; trying again in " + wait / 1000 + " s";
    await new Promise((r) => setTimeout(r, wait));
  }
}

async function read(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let first = true;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart())
        .join("\n");
      if (!data) continue;
      receive(JSON.parse(data), first);
      first = false;
    }
  }
}

function receive(overview, whole) {
  if (whole) state.points.clear();
  for (const p of overview.traffic.series) state.points.set(p.start_ms, p);
  const newest = Math.max(...state.points.keys());
  for (const k of state.points.keys()) if (k < newest - HOUR_MS + 1) state.points.delete(k);
  state.overview = overview;
  setLive("live", "on");
  $("live").title = "Updated " + new Date(overview.at_ms).toLocaleTimeString();
  setText($("version"), "v" + overview.version + (overview.leader ? " · led by " + overview.leader : ""));
  render();
}

function askForKey(why) {
  setLive("needs key", "off");
  $("signin-why").textContent = why;
  $("signin").hidden = false;
  $("signin-form").elements.namedItem("key").focus();
}

// ---- actions -------------------------------------------------------------

async function act(method, path, body, done) {
  const headers = { "Content-Type": "application/json" };
  if (state.key) headers.Authorization = "Bearer " + state.key;
  try {
    const res = await fetch(path, { method, headers, body: body == null ? undefined : JSON.stringify(body) });
    const answer = await res.json().catch(() => ({}));
    if (!res.ok) {
      toast((answer.error && answer.error.message) || "the hub answered " + res.status, "error");
      return;
    }
    toast(done(answer));
  } catch (e) {
    toast("could not reach the hub: " + e.message, "error");
  }
}

const enc = encodeURIComponent;
const backendAction = (name, verb) =>
  act("POST", `/admin/backends/${enc(name)}/${verb}`, null, () => `${name}: ${verb === "drain" ? "draining, no new work" : "taking work again"}`);
const removeBackend = (name) => {
  if (!confirm(`Remove backend ${name}? Running requests finish; nothing new goes there.`)) return;
  act("DELETE", `/admin/backends/${enc(name)}`, null, () => `${name} removed`);
};
// The model travels in the body: an id with `.` or `..` segments would be
// folded by the browser in a URL, and the action would hit another model.
const modelAction = (model, verb, backend) =>
  act("POST", `/admin/models/${verb}`, { model, backend: backend || null }, (a) => {
    const where = a.backends && a.backends.length ? " on " + a.backends.join(", ") : "";
    if (a.already) return `${model} was ${verb}ed already${where}`;
    const took = a.seconds != null ? ` in ${a.seconds.toFixed(1)} s` : "";
    return `${model} ${verb === "pin" || verb === "unpin" ? verb + "ned" : verb + "ed"}${where}${took}`;
  });

// ---- views ---------------------------------------------------------------

function render() {
  const o = state.overview;
  if (!o) return;
  renderKpis(o);
  ({ fleet: renderFleet, models: renderModels, queue: renderQueue, traffic: renderTraffic, keys: renderKeys, jobs: renderJobs, workers: renderWorkers, nodes: renderNodes })[state.tab](o);
}

function series() {
  return [...state.points.values()].sort((a, b) => a.start_ms - b.start_ms);
}

// Seconds a point covers: its bucket, or for the one still filling the
// part gone by (so its rate does not dip while it fills).
function covered(o, p) {
  const secs = o.traffic.bucket_seconds;
  return Math.max(1, Math.min(secs, (o.at_ms - p.start_ms) / 1000));
}

// Whether what a backend last said can be taken as true now: it answered
// its last probe and its breaker is not open.
const down = (b) => b.breaker === "unreachable" || b.breaker === "open" || !!b.last_error;

// A backend's state in a user's words: down (it does not answer, or its
// requests fail), recovering (one trial request may go), draining, busy
// (every slot taken, or its own queue full), healthy.
function backendState(b) {
  const states = [];
  if (b.breaker === "unreachable") states.push(["down", "bad", "it has never answered"]);
  else if (b.breaker === "open") states.push(["down", "bad", "its requests or probes failed; drover tries again after a pause"]);
  else if (b.last_error) states.push(["down", "bad", "its last probe failed"]);
  else if (b.breaker === "half_open") states.push(["recovering", "warn", "one trial request may go; it is back when that succeeds"]);
  else states.push(["healthy", "good", ""]);
  if (b.draining) states.push(["draining", "warn", "no new work; what runs there finishes"]);
  const loaded = b.models.filter((m) => m.loaded);
  const full = loaded.length && loaded.every((m) => m.busy >= m.slots);
  if (b.saturated || (full && !down(b))) states.push(["busy", "warn", b.saturated ? "its own queue is full" : "every slot is taken"]);
  return states;
}

function renderKpis(o) {
  const now = o.traffic.now;
  setText($("kpi-rps"), fmtNumber(now.requests_per_second));
  setText($("kpi-tps"), fmtNumber(now.tokens_per_second));
  setText($("kpi-eps"), fmtNumber(now.errors_per_second));
  const pts = series();
  const recent = pts.slice(-60);
  const lastTtft = [...pts].reverse().slice(0, 6).find((p) => p.ttft_p50_ms != null);
  setText($("kpi-ttft"), lastTtft ? fmtMs(lastTtft.ttft_p50_ms) : "–");
  setText($("kpi-ttft95"), lastTtft ? "p95 " + fmtMs(lastTtft.ttft_p95_ms) : "");
  setText($("kpi-waiting"), o.queue.waiting);
  setText($("kpi-oldest"), o.queue.oldest_ms != null ? "oldest " + fmtMs(o.queue.oldest_ms) : "nothing waits");
  let busy = 0, slots = 0, healthy = 0;
  for (const b of o.backends) {
    if (!down(b) && b.breaker === "closed") healthy++;
    // A backend that is down has no slots to offer now.
    if (!down(b)) for (const m of b.models) if (m.loaded) { busy += m.busy; slots += m.slots; }
  }
  setText($("kpi-slots"), `${busy} / ${slots}`);
  setText($("kpi-backends"), `${healthy} of ${o.backends.length} backends healthy`);
  setText($("kpi-refused"), o.refused.length ? `${o.refused.length} refused lately` : "");
  sparkline($("spark-rps"), recent.map((p) => p.requests / covered(o, p)), "#58a6ff");
  sparkline($("spark-tps"), recent.map((p) => p.tokens / covered(o, p)), "#3fb950");
  sparkline($("spark-ttft"), recent.map((p) => p.ttft_p50_ms), "#d29922");
}

function badge(text, cls) {
  return h("span", { class: "badge " + (cls || "") }, text);
}

function slotBar(busy, slots) {
  const cells = [];
  const shown = Math.min(slots, 16);
  for (let i = 0; i < shown; i++) cells.push(h("i", { class: i < busy ? "busy" : "" }));
  return h("span", { class: "slots", title: `${busy} of ${slots} slots busy` }, cells, h("em", {}, `${busy}/${slots}`));
}

function residency(m) {
  const r = m.residency || (m.loaded ? "loaded" : "unloaded");
  const cls = { loaded: "good", loading: "load", unloading: "warn", unloaded: "" }[r] || "";
  const bits = [badge(r, cls)];
  if (r === "loading") {
    // The server's own progress where it tells; else the time so far
    // against how long loads took here before (at most 95%: it is a guess).
    const guess = m.loading_seconds != null && m.load_seconds ? Math.min(0.95, m.loading_seconds / m.load_seconds) : null;
    const p = m.progress != null ? m.progress : guess;
    const told = m.progress != null ? "" : "~";
    const secs = m.loading_seconds != null ? ` for ${m.loading_seconds.toFixed(0)} s` : "";
    if (p != null) bits.push(h("span", { class: "progress", title: `${told}${Math.round(p * 100)}%${secs}` }, h("i", { style: `width:${Math.round(p * 100)}%` })));
    if (secs) bits.push(h("small", { class: "muted" }, secs.trim()));
  }
  if (m.pinned) bits.push(badge("pinned", "pin"));
  if (m.state === "sleeping") bits.push(badge("sleeping", "warn"));
  return bits;
}

function renderFleet(o) {
  update($("backends"), o.backends.length
    ? o.backends.map((b) => backendCard(o, b))
    : [h("p", { class: "empty", key: "empty" }, "No backends yet. Add one above, or start the hub with --backend URL.")]);
}

function backendCard(o, b) {
  // The room for models is the hub's count, the one its model manager
  // keeps to; what it reserves is the rest of the memory.
  const budget = b.memory_for_models;
  const reserved = budget != null ? b.memory_total - budget : 0;
  const memory = budget != null
    ? h("div", { class: "memory", key: "memory", title: `memory ${bytes(b.memory_total)}; system ${bytes(b.system)}, margin ${bytes(b.margin)}, ${bytes(b.slot_buffer)} for each slot of a model in memory` },
        h("span", { class: "meter" }, h("i", { style: `width:${Math.min(100, budget ? ((b.memory_used || 0) / budget) * 100 : 100).toFixed(1)}%` })),
        h("small", {}, `models ${bytes(b.memory_used || 0)} of ${bytes(budget)}` + (reserved ? ` (${bytes(b.memory_total)} less ${bytes(reserved)} for system, margin and slots)` : "")))
    : null;
  const models = b.models
    .slice()
    .sort((x, y) => (y.loaded - x.loaded) || x.id.localeCompare(y.id))
    .map((m) =>
      // What a backend that is down last said is not known now.
      h("tr", { key: m.id, "data-model": m.id, class: down(b) ? "unknown" : "", title: down(b) ? "as last seen: the backend is down" : "" },
        h("td", { class: "mono" }, m.id),
        h("td", {}, down(b) ? badge((m.residency || (m.loaded ? "loaded" : "unloaded")) + "?", "") : residency(m)),
        h("td", {}, m.loaded ? slotBar(m.busy, m.slots) : h("span", { class: "muted" }, "–")),
        h("td", { class: "num muted" }, m.size_bytes ? bytes(m.size_bytes) : ""),
        h("td", { class: "err" }, m.load_error || "")));
  return h("article", { key: b.name, class: "card" + (b.draining ? " draining" : ""), "data-backend": b.name },
    h("header", {},
      h("h3", {}, b.name),
      badge(b.kind, "kind"),
      backendState(b).map(([t, c, why]) => h("span", { class: "badge " + c, title: why }, t)),
      h("span", { class: "grow", key: "grow" }),
      b.draining
        ? h("button", { key: "undrain", onclick: () => backendAction(b.name, "undrain") }, "Undrain")
        : h("button", { key: "drain", onclick: () => backendAction(b.name, "drain") }, "Drain"),
      h("button", { key: "remove", class: "danger", onclick: () => removeBackend(b.name) }, "Remove")),
    h("div", { class: "meta", key: "meta" },
      h("span", { class: "mono" }, b.url),
      b.version ? h("span", {}, "v" + b.version) : null,
      b.mode ? h("span", {}, b.mode) : null,
      h("span", {}, `${b.in_flight} running`),
      b.max_concurrent ? h("span", {}, `max ${b.max_concurrent} at once`) : null,
      h("span", {}, `probe (${b.probe}) ${b.last_probe_unix_ms ? ago(o.at_ms - b.last_probe_unix_ms) : "pending"}`)),
    memory,
    b.last_error ? h("div", { class: "error-line", key: "error" }, b.last_error) : null,
    models.length
      ? h("table", { class: "grid compact", key: "models" }, h("tbody", {}, models))
      : h("p", { class: "empty", key: "no-models" }, "No models listed."));
}

// Per model: where it is, from every backend's list, and its queue.
function modelRows(o) {
  const rows = new Map();
  for (const q of o.queue.by_model) rows.set(q.model, { model: q.model, queue: q, where: [] });
  for (const b of o.backends) {
    for (const m of b.models) {
      if (!rows.has(m.id)) rows.set(m.id, { model: m.id, queue: null, where: [] });
      rows.get(m.id).where.push({ backend: b, m });
    }
  }
  return [...rows.values()].sort((a, b) => a.model.localeCompare(b.model));
}

// A backend new work may go to: not draining, not down.
const takesWork = (b) => !b.draining && b.breaker !== "open" && b.breaker !== "unreachable";

// The row's Unload acts on every backend: said, and asked, first.
function unloadEverywhere(r) {
  const where = r.where.filter((w) => w.m.loaded).map((w) => w.backend.name);
  if (!confirm(`Unload ${r.model} from ${where.length === 1 ? where[0] : `all ${where.length} backends that have it loaded (${where.join(", ")})`}?`)) return;
  modelAction(r.model, "unload");
}

function renderModels(o) {
  const body = $("models-table").tBodies[0];
  const rows = modelRows(o).map((r) => {
    const loadedSomewhere = r.where.some((w) => w.m.loaded);
    const pinned = r.where.some((w) => w.m.pinned);
    const busy = r.where.some((w) => w.m.busy > 0);
    const idle = r.where.map((w) => w.m.idle_seconds).filter((s) => s != null);
    const loadTimes = r.where.map((w) => w.m.load_seconds).filter((s) => s != null);
    return h("tr", { key: r.model, "data-model": r.model },
      h("td", { class: "mono" }, r.model),
      h("td", {}, h("div", { class: "chips" }, r.where.map(({ backend, m }) =>
        h("span", { key: backend.name, class: "chip" + (down(backend) ? " unknown" : ""), title: down(backend) ? "as last seen: the backend is down" : m.load_error || "" },
          h("b", {}, backend.name), down(backend) ? badge((m.residency || (m.loaded ? "loaded" : "unloaded")) + "?", "") : residency(m),
          m.loaded ? slotBar(m.busy, m.slots) : null,
          m.loaded && backend.can_unload ? h("button", { key: "unload", class: "mini", title: "Unload here", onclick: () => modelAction(r.model, "unload", backend.name) }, "unload") : null,
          !m.loaded && m.residency !== "loading" && backend.can_load && takesWork(backend) ? h("button", { key: "load", class: "mini", title: "Load here", onclick: () => modelAction(r.model, "load", backend.name) }, "load") : null)))),
      h("td", { class: "num" }, r.queue ? r.queue.waiting : 0),
      h("td", { class: "num" }, r.queue ? fmtMs(r.queue.expected_wait_ms) : "–"),
      h("td", {}, busy ? "in use" : idle.length ? ago(Math.min(...idle) * 1000) : "–"),
      h("td", { class: "num" }, loadTimes.length ? (Math.max(...loadTimes)).toFixed(1) + " s" : "–"),
      h("td", { class: "actions" },
        !loadedSomewhere ? h("button", { key: "load", onclick: () => modelAction(r.model, "load") }, "Load") : null,
        loadedSomewhere ? h("button", { key: "unload", title: "Unload it from every backend that has it loaded", onclick: () => unloadEverywhere(r) }, "Unload everywhere") : null,
        pinned
          ? h("button", { key: "unpin", onclick: () => modelAction(r.model, "unpin") }, "Unpin")
          : h("button", { key: "pin", onclick: () => modelAction(r.model, "pin") }, "Pin")));
  });
  update(body, rows.length ? rows : [h("tr", { key: "empty" }, h("td", { colspan: 7, class: "empty" }, "No models yet."))]);
}

// A model's state for who waits for it, in a user's words.
function queueState(o, q) {
  if (q.loading) return badge("loading", "load");
  const where = o.backends.flatMap((b) => b.models.filter((m) => m.id === q.model).map((m) => ({ b, m })));
  if (!where.length) return badge("no backend lists it", "bad");
  const up = where.filter(({ b }) => !down(b) && !b.draining);
  if (!up.length) return badge("every backend with it is down or draining", "bad");
  const loaded = up.filter(({ m }) => m.loaded);
  if (!loaded.length) return badge("not loaded", "");
  if (loaded.some(({ m }) => m.busy < m.slots)) return badge("ready", "good");
  return badge("every slot busy", "warn");
}

function renderQueue(o) {
  const q = o.queue;
  setText($("queue-summary"), q.waiting
    ? `${q.waiting} waiting, the oldest for ${fmtMs(q.oldest_ms)}, holding ${bytes(q.bytes)}`
    : "Nothing waits");
  const waitingFirst = q.by_model.slice().sort((a, b) => b.waiting - a.waiting || a.model.localeCompare(b.model));
  update($("queue-models").tBodies[0], waitingFirst.map((m) =>
    h("tr", { key: m.model, class: m.waiting ? "" : "muted" },
      h("td", { class: "mono" }, m.model),
      h("td", { class: "num" }, m.waiting),
      h("td", { class: "num" }, m.oldest_ms != null ? fmtMs(m.oldest_ms) : "–"),
      h("td", { class: "num" }, fmtMs(m.expected_wait_ms)),
      h("td", {}, queueState(o, m)))));
  const empty = (n) => h("tr", { key: "empty" }, h("td", { colspan: n, class: "empty" }, "none"));
  update($("queue-priority").tBodies[0], q.by_priority.length
    ? q.by_priority.slice().reverse().map((p) => h("tr", { key: p.priority }, h("td", {}, p.priority), h("td", { class: "num" }, p.waiting)))
    : [empty(2)]);
  update($("queue-clients").tBodies[0], q.by_client.length
    ? q.by_client.map((c) => h("tr", { key: c.client }, h("td", {}, c.client), h("td", { class: "num" }, c.waiting)))
    : [empty(2)]);
  // A refusal has no id: when, why, for what and whom tell it apart well
  // enough (a twin is drawn as a row of its own).
  update($("refused").tBodies[0], o.refused.length
    ? o.refused.map((r) => h("tr", { key: [r.at_ms, r.code, r.model, r.client].join(" ") },
        h("td", {}, ago(o.at_ms - r.at_ms)),
        h("td", {}, badge(r.status, r.status >= 500 ? "bad" : "warn")),
        h("td", { class: "mono" }, r.code),
        h("td", { class: "mono" }, r.model),
        h("td", {}, r.client),
        h("td", { class: "msg" }, r.message)))
    : [empty(6)]);
}

function renderTraffic(o) {
  const pts = series();
  const secs = pts.map((p) => covered(o, p));
  const times = pts.map((p) => p.start_ms);
  const backends = [...new Set(pts.flatMap((p) => Object.keys(p.by_backend)))].sort();
  timeChart($("chart-requests"), times,
    backends.map((b) => ({ name: b, color: colorFor(b), values: pts.map((p, i) => (p.by_backend[b] || 0) / secs[i]) })),
    { stacked: true });
  timeChart($("chart-tokens"), times, [{ name: "tokens/s", color: "#3fb950", values: pts.map((p, i) => p.tokens / secs[i]) }], {});
  timeChart($("chart-ttft"), times, [
    { name: "p50", color: "#58a6ff", values: pts.map((p) => p.ttft_p50_ms) },
    { name: "p95", color: "#bc8cff", values: pts.map((p) => p.ttft_p95_ms) },
  ], { unit: "ms" });
  timeChart($("chart-latency"), times, [
    { name: "p50", color: "#39c5cf", values: pts.map((p) => p.latency_p50_ms) },
    { name: "p95", color: "#f778ba", values: pts.map((p) => p.latency_p95_ms) },
  ], { unit: "ms" });
  const codes = [...new Set(pts.flatMap((p) => Object.keys(p.errors)))].sort();
  timeChart($("chart-errors"), times,
    (codes.length ? codes : ["no errors"]).map((c, i) => ({
      name: c, color: ["#ff7b72", "#d29922", "#e3b341", "#f778ba"][i % 4], values: pts.map((p, i) => (p.errors[c] || 0) / secs[i]),
    })), { stacked: true });
  timeChart($("chart-retries"), times, [
    { name: "retries", color: "#d29922", values: pts.map((p, i) => p.retries / secs[i]) },
    { name: "failovers", color: "#58a6ff", values: pts.map((p, i) => p.failovers / secs[i]) },
  ], {});
  totalsTable($("traffic-backends"), "Backend", o.traffic.by_backend);
  totalsTable($("traffic-models"), "Model", o.traffic.by_model);
}

function totalsTable(table, what, rows) {
  const errors = (e) => Object.entries(e).map(([code, n]) => `${n}×${code}`).join(" ") || "–";
  update(table, [
    h("thead", {}, h("tr", {}, [what, "Requests", "Errors", "Tokens", "Retries", "Failovers", "First token p50", "p95", "Latency p50", "p95"].map((t, i) => h("th", { class: i && i !== 2 ? "num" : "" }, t)))),
    h("tbody", {}, rows.length
      ? rows.map((r) => h("tr", { key: r.name },
          h("td", { class: "mono" }, r.name), h("td", { class: "num" }, r.requests), h("td", {}, errors(r.errors)),
          h("td", { class: "num" }, fmtNumber(r.tokens)), h("td", { class: "num" }, r.retries), h("td", { class: "num" }, r.failovers),
          h("td", { class: "num" }, fmtMs(r.ttft_p50_ms)), h("td", { class: "num" }, fmtMs(r.ttft_p95_ms)),
          h("td", { class: "num" }, fmtMs(r.latency_p50_ms)), h("td", { class: "num" }, fmtMs(r.latency_p95_ms))))
      : h("tr", { key: "empty" }, h("td", { colspan: 10, class: "empty" }, "No traffic in the last hour.")))]);
}

// A key's limits in a few words: "models a, b · 60 rpm · 2 at once".
function describeLimits(l) {
  const parts = [];
  if (l.models) parts.push("models " + l.models.join(", "));
  if (l.requests_per_minute) parts.push(`${l.requests_per_minute} rpm`);
  if (l.tokens_per_minute) parts.push(`${fmtNumber(l.tokens_per_minute)} tpm`);
  if (l.max_concurrent) parts.push(`${l.max_concurrent} at once`);
  if (l.priority != null) parts.push(`priority ${l.priority}`);
  if (l.max_priority != null) parts.push(`up to ${l.max_priority}`);
  return parts.length ? parts.join(" · ") : "none";
}

function renderKeys(o) {
  // Every key the hub keeps, with its use; then use by names it keeps no
  // key for ([[clients]] in the config).
  const usage = new Map(o.keys.map((u) => [u.key, u]));
  const used = (name) => {
    const u = usage.get(name);
    usage.delete(name);
    return u || { requests: 0, prompt_tokens: 0, completion_tokens: 0, limited: 0 };
  };
  const keys = [...(o.api_keys || [])].sort((a, b) => Number(a.revoked_unix != null) - Number(b.revoked_unix != null));
  const rows = keys.map((k) => {
    const revoked = k.revoked_unix != null;
    const u = revoked ? { requests: 0, prompt_tokens: 0, completion_tokens: 0, limited: 0 } : used(k.name);
    return h("tr", { key: "key " + k.id, class: revoked ? "unknown" : "", "data-key": k.name },
      h("td", {}, k.name, " ", h("span", { class: "mono hint" }, k.prefix + "…")),
      h("td", {}, h("span", { class: "badge kind" }, k.kind)),
      h("td", {}, h("span", { class: "badge " + (revoked ? "bad" : "good") }, revoked ? "revoked" : "active")),
      h("td", {}, k.kind === "client" ? describeLimits(k.limits || {}) : "—"),
      h("td", { class: "num" }, u.requests), h("td", { class: "num" }, fmtNumber(u.prompt_tokens)),
      h("td", { class: "num" }, fmtNumber(u.completion_tokens)), h("td", { class: "num" }, u.limited));
  });
  for (const u of usage.values()) {
    rows.push(h("tr", { key: "usage " + u.key, "data-key": u.key },
      h("td", {}, u.key), h("td", {}, h("span", { class: "badge kind" }, "config")), h("td", {}, h("span", { class: "badge good" }, "active")),
      h("td", {}, "—"), h("td", { class: "num" }, u.requests), h("td", { class: "num" }, fmtNumber(u.prompt_tokens)),
      h("td", { class: "num" }, fmtNumber(u.completion_tokens)), h("td", { class: "num" }, u.limited)));
  }
  update($("keys-table").tBodies[0], rows.length
    ? rows
    : [h("tr", { key: "empty" }, h("td", { colspan: 8, class: "empty" }, "No keys: inference is open to anyone who can reach the hub. Create one with drover keys create NAME."))]);
}

// A count as a person reads it: whole, grouped by thousands.
const count = (n) => n.toLocaleString("en-US");

// A batch's status in a user's words, and its colour.
const BATCH_STATUS = {
  validating: ["validating", "load"], in_progress: ["in progress", "load"], finalizing: ["finalizing", "load"],
  cancelling: ["cancelling", "warn"], completed: ["completed", "good"], failed: ["failed", "bad"],
  expired: ["expired", "bad"], cancelled: ["cancelled", ""],
};

// A batch's lines as a bar: completed, failed, and what is still to run.
function batchBar(c) {
  const part = (n) => (c.total ? Math.min(100, (n / c.total) * 100) : 0).toFixed(1).replace(/\.0$/, "") + "%";
  return [
    h("span", { class: "batchbar", title: `${c.completed} completed, ${c.failed} failed, of ${c.total}` },
      h("i", { class: "done", style: `width:${part(c.completed)}` }),
      h("i", { class: "failed", style: `width:${part(c.failed)}` })),
    h("small", {}, `${c.completed} of ${c.total} done, ${c.failed} failed`),
  ];
}

const cancelBatch = (id) => {
  if (!confirm(`Cancel batch ${id}? Its waiting lines are cancelled; running ones finish.`)) return;
  act("POST", `/admin/batches/${enc(id)}/cancel`, null, (b) => `${b.id}: ${b.status === "cancelled" ? "cancelled" : "cancelling"}`);
};
const retryJob = (id) => act("POST", `/admin/jobs/${enc(id)}/retry`, null, (j) => `${j.id} queued again`);

function renderJobs(o) {
  const j = o.jobs;
  $("jobs-none").hidden = j != null;
  $("jobs-store").hidden = j == null;
  if (j == null) {
    setText($("jobs-summary"), "");
    return;
  }
  const inState = (s) => (j.by_state.find((c) => c.state === s) || { jobs: 0 }).jobs;
  setText($("jobs-summary"), j.by_state.length
    ? `${count(inState("queued"))} waiting, ${count(inState("running"))} running (${count(j.held)} held by this hub), ${count(j.batches_open)} ${j.batches_open === 1 ? "batch" : "batches"} open`
    : "");
  const error = $("jobs-error");
  error.hidden = !j.error;
  setText(error, j.error
    ? "The job store: " + j.error + (j.read_at_ms ? ` (as it was ${ago(o.at_ms - j.read_at_ms)})` : "")
    : "");
  update($("jobs-states"), [
    ...j.by_state.map((c) => h("div", { key: c.state, class: "state" + (c.state === "dead" && c.jobs ? " bad" : ""), "data-state": c.state },
      h("b", {}, count(c.jobs)), h("label", {}, c.state))),
    h("div", { key: "held", class: "state", "data-state": "held", title: "Jobs this hub has claimed and not yet ended" },
      h("b", {}, count(j.held)), h("label", {}, "held by this hub")),
  ]);
  const batches = [...j.open_batches, ...j.ended_batches].map((b) => {
    const [word, cls] = BATCH_STATUS[b.status] || [b.status, ""];
    const ended = b.ended_at != null;
    return h("tr", { key: b.id, "data-batch": b.id, class: ended ? "muted" : "" },
      h("td", { class: "mono" }, b.id),
      h("td", {}, b.key || "–"),
      h("td", { class: "mono" }, b.endpoint),
      h("td", {}, badge(word, cls)),
      h("td", { class: "progress-cell" }, batchBar(b.request_counts)),
      h("td", {}, ended ? "ended " + ago(o.at_ms - b.ended_at * 1000) : "started " + ago(o.at_ms - b.created_at * 1000)),
      h("td", { class: "actions" },
        b.status === "in_progress" ? h("button", { key: "cancel", class: "danger", onclick: () => cancelBatch(b.id) }, "Cancel") : null));
  });
  if (j.batches_open > j.open_batches.length) {
    batches.splice(j.open_batches.length, 0, h("tr", { key: "more" },
      h("td", { colspan: 7, class: "empty" }, `and ${j.batches_open - j.open_batches.length} more open (GET /admin/batches)`)));
  }
  update($("jobs-batches").tBodies[0], batches.length
    ? batches
    : [h("tr", { key: "empty" }, h("td", { colspan: 7, class: "empty" }, "No batches."))]);
  update($("jobs-dead").tBodies[0], j.dead.length
    ? j.dead.map((d) => h("tr", { key: d.id, "data-job": d.id },
        h("td", { class: "mono" }, d.id),
        h("td", {}, d.key || "–"),
        h("td", { class: "mono" }, d.model),
        h("td", { class: "mono" }, d.batch_id ? `${d.batch_id} ${d.custom_id || ""}` : "–"),
        h("td", { class: "num" }, d.attempts),
        h("td", {}, d.ended_at != null ? ago(o.at_ms - d.ended_at * 1000) : "–"),
        h("td", { class: "msg" }, d.error || (d.status != null ? `status ${d.status}` : "")),
        h("td", { class: "actions" }, h("button", { key: "retry", onclick: () => retryJob(d.id) }, "Retry"))))
    : [h("tr", { key: "empty" }, h("td", { colspan: 8, class: "empty" }, "No dead jobs."))]);
}

// A task's state as a badge: where it stands, in the jobs' colours.
const TASK_STATE = {
  queued: "load", running: "load", completed: "good", failed: "bad", dead: "bad", expired: "bad", cancelled: "", gone: "",
};

const drainWorker = (w, draining) => act("POST", `/admin/workers/${enc(w.id)}/${draining ? "drain" : "undrain"}`, null,
  () => draining ? `${w.name}: draining (its running tasks finish, it takes no new one)` : `${w.name}: taking tasks again`);

function renderWorkers(o) {
  const workers = o.workers || [];
  const draining = workers.filter((w) => w.draining).length;
  const busy = workers.reduce((n, w) => n + w.in_flight, 0);
  setText($("workers-summary"), workers.length
    ? `${count(workers.length)} ${workers.length === 1 ? "worker" : "workers"}${draining ? ` (${draining} draining)` : ""}, ${count(busy)} ${busy === 1 ? "task" : "tasks"} in flight`
    : "");
  update($("workers-table").tBodies[0], workers.length
    ? workers.map((w) => h("tr", { key: w.id, "data-worker": w.id, class: w.draining ? "muted" : "" },
        h("td", {}, h("b", {}, w.name), h("br"), h("small", { class: "mono" }, w.id)),
        h("td", {}, w.capabilities.map((c) => h("span", { key: c.name, class: "badge", title: c.description || "" },
          `${c.name} ×${c.max_concurrency}`))),
        h("td", { class: "num" }, w.in_flight),
        h("td", {}, ago(w.last_seen_s * 1000)),
        h("td", {}, w.draining ? badge("draining", "warn") : badge("taking tasks", "good")),
        h("td", { class: "actions" }, w.draining
          ? h("button", { key: "undrain", onclick: () => drainWorker(w, false) }, "Undrain")
          : h("button", { key: "drain", class: "danger", onclick: () => drainWorker(w, true) }, "Drain"))))
    : [h("tr", { key: "empty" }, h("td", { colspan: 6, class: "empty" }, "No workers. Start one with drover worker --capability NAME -- COMMAND, or examples/worker.py."))]);
  const j = o.jobs;
  $("tasks-store").hidden = j == null;
  if (j == null) return;
  update($("tasks-states"), (j.tasks_by_state || []).map((c) =>
    h("div", { key: c.state, class: "state" + (c.state === "dead" && c.jobs ? " bad" : ""), "data-state": c.state },
      h("b", {}, count(c.jobs)), h("label", {}, c.state))));
  const plans = j.plans || [];
  update($("plans-table").tBodies[0], plans.length
    ? plans.map((p) => h("tr", { key: p.id, "data-plan": p.id },
        h("td", { class: "mono" }, p.id),
        h("td", {}, p.key || "–"),
        h("td", { class: "msg" }, p.request),
        h("td", { class: "mono" }, p.model),
        h("td", {}, p.error
          ? [badge("refused", "bad"), " ", h("span", { key: "why", class: "msg" }, p.error),
             h("div", { key: "answer", class: "answer mono", title: p.answer },
               "the model answered: " + (p.answer.length > 300 ? p.answer.slice(0, 300) + "…" : p.answer))]
          : p.tasks.map((t) => h("span", { key: t.id, class: "badge " + (TASK_STATE[t.state] || ""), title: t.id },
              `${t.capability}: ${t.state}`))),
        h("td", {}, ago(o.at_ms - p.created_at * 1000))))
    : [h("tr", { key: "empty" }, h("td", { colspan: 6, class: "empty" }, "No plans yet: POST /v1/tasks/plan, or drover tasks plan \"...\"."))]);
}

// A command for nodes' agents: the hub stores it, the agent takes it at
// once while connected, and the next heartbeat shows what came of it.
const nodeServices = (n, action, service) =>
  act("POST", n ? `/admin/nodes/${enc(n.id)}/services` : "/admin/nodes/services",
    service ? { action, service } : { action },
    () => `${n ? n.name : "every node"}: ${action} ${service || "all services"} asked`);
const drainNode = (n, draining) => act("POST", `/admin/nodes/${enc(n.id)}/${draining ? "drain" : "undrain"}`, null,
  () => draining ? `${n.name}: draining (new requests go to other machines; running ones finish)` : `${n.name}: taking work again`);
const SERVICE_STATE = { running: "good", starting: "warn", backoff: "bad", stopped: "" };

// A service's log tail: a command for its node's agent, whose answer is
// waited for (up to 30 s) and shown.
async function showLogs(n, service) {
  const headers = { "Content-Type": "application/json" };
  if (state.key) headers.Authorization = "Bearer " + state.key;
  setText($("logs-title"), `${n.name}: ${service}`);
  setText($("logs-text"), "asking its agent…");
  $("logs").hidden = false;
  try {
    const asked = await fetch(`/admin/nodes/${enc(n.id)}/services`, { method: "POST", headers, body: JSON.stringify({ action: "logs", service }) });
    let c = await asked.json();
    if (!asked.ok) throw new Error((c.error && c.error.message) || "the hub answered " + asked.status);
    for (let i = 0; i < 300 && (c.state === "queued" || c.state === "sent") && !$("logs").hidden; i++) {
      await new Promise((r) => setTimeout(r, 100));
      c = await (await fetch(`/admin/nodes/commands/${enc(c.id)}`, { headers })).json();
    }
    setText($("logs-text"), c.state === "done" ? (c.result || "(nothing printed yet)")
      : c.state === "failed" ? "failed: " + c.result : "its agent has not answered: is the node up?");
  } catch (e) {
    setText($("logs-text"), "could not get the logs: " + e.message);
  }
}

function serviceRow(n, s) {
  const why = [s.pid ? `pid ${s.pid}` : "", s.restarts ? `${s.restarts} restarts` : "",
    s.last_exit ? `last ${s.last_exit}` : "", s.healthy === false ? "health check failing" : ""].filter(Boolean).join(", ");
  return h("div", { key: s.name, class: "service", "data-service": s.name },
    badge(`${s.name}: ${s.state}`, SERVICE_STATE[s.state] || ""), " ",
    h("small", { key: "why" }, why), " ",
    s.state === "stopped"
      ? h("button", { key: "start", onclick: () => nodeServices(n, "start", s.name) }, "Start")
      : h("button", { key: "stop", class: "danger", onclick: () => nodeServices(n, "stop", s.name) }, "Stop"),
    h("button", { key: "restart", onclick: () => nodeServices(n, "restart", s.name) }, "Restart"),
    h("button", { key: "logs", onclick: () => showLogs(n, s.name) }, "Logs"));
}

// The machines whose agents joined: up or down, their agent's version (one
// other than the hub's is drift), CPUs, memory, GPUs and the services their
// agents run, with Start All and Stop All.
function renderNodes(o) {
  const nodes = o.nodes || [];
  const down = nodes.filter((n) => !n.up).length;
  const drift = nodes.filter((n) => n.version !== o.version).length;
  setText($("nodes-summary"), nodes.length
    ? `${count(nodes.length)} ${nodes.length === 1 ? "node" : "nodes"}${down ? `, ${down} down` : ""}${drift ? `, ${drift} not on ${o.version}` : ""}`
    : "");
  update($("nodes-table").tBodies[0], nodes.length
    ? nodes.map((n) => {
        const f = n.facts;
        return h("tr", { key: n.id, "data-node": n.id, class: n.up ? "" : "muted" },
          h("td", {}, h("b", {}, n.name), h("br"), h("small", { class: "mono" }, f.hostname ? `${f.hostname} · ${f.os_version || f.os} ${f.arch}` : n.id)),
          h("td", {}, !n.up ? badge("down", "bad") : n.draining ? badge("draining", "warn") : badge("up", "good")),
          h("td", {}, n.version === o.version ? n.version : badge(`${n.version} (drift)`, "warn")),
          h("td", { class: "num" }, f.cpus),
          h("td", {}, `${bytes(f.memory_available_bytes)} of ${bytes(f.memory_total_bytes)}`),
          h("td", {}, f.gpus.length ? f.gpus.map((g) => h("span", { key: g.name, class: "badge" }, `${g.name} ${bytes(g.memory_total_bytes)}`)) : "–"),
          h("td", {}, (n.services || []).length ? n.services.map((s) => serviceRow(n, s)) : "–"),
          h("td", {}, ago(o.at_ms - n.last_seen_at * 1000)),
          h("td", { class: "actions" }, n.draining
            ? h("button", { key: "undrain", onclick: () => drainNode(n, false) }, "Undrain")
            : h("button", { key: "drain", class: "danger", onclick: () => drainNode(n, true) }, "Drain")));
      })
    : [h("tr", { key: "empty" }, h("td", { colspan: 9, class: "empty" }, "No nodes. Join a machine with drover agent --hub URL --token $(drover nodes token create)."))]);
  $("nodes-all").hidden = !nodes.length;
}

// ---- wiring --------------------------------------------------------------

function showTab() {
  const tab = (location.hash || "#fleet").slice(1);
  state.tab = ["fleet", "models", "queue", "traffic", "keys", "jobs", "workers", "nodes"].includes(tab) ? tab : "fleet";
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === state.tab);
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + state.tab;
  render();
}

window.addEventListener("hashchange", showTab);
window.addEventListener("resize", () => render());

$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = e.target.elements.namedItem("key");
  state.key = input.value.trim();
  localStorage.setItem(KEY, state.key);
  input.value = "";
  $("signin").hidden = true;
  $("signout").hidden = false;
  connect();
});
$("signout").hidden = !state.key;
$("signout").addEventListener("click", () => {
  localStorage.removeItem(KEY);
  location.reload();
});
$("start-all").addEventListener("click", () => nodeServices(null, "start"));
$("logs-close").addEventListener("click", () => { $("logs").hidden = true; });
$("stop-all").addEventListener("click", () => {
  if (confirm("Stop every service on every node?")) nodeServices(null, "stop");
});
$("add-backend").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.target;
  const field = (n) => f.elements.namedItem(n).value.trim();
  const spec = { url: field("url"), kind: field("kind") };
  if (field("name")) spec.name = field("name");
  act("POST", "/admin/backends", spec, (b) => {
    f.reset();
    return `${b.name} added; probing it`;
  });
});

showTab();
connect();
