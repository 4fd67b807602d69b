// The dashboard page: one EventSource that asks only for what is on screen (one metric's fleet
// view, the top-N worst servers, and the drill-down server), rendered once per animation frame.
// View state lives in the URL fragment so a view can be shared. See Docs/dashboard.md.
import { LineChart, Heatmap, fmt, ago, unitFor, rgba, hexRGB } from "./charts.js";

const $ = id => document.getElementById(id);
const TOP_N = 20;
const LIVE_POINTS = 900;        // per drill-down series (15 min at 1 s ticks)
const DIST_POINTS = 900;        // fleet distribution history kept in the page

// ---------------------------------------------------------------------------------------------
// View state (URL fragment)

const defaults = { metric: "", q: "", warn: "", crit: "", worst: "high", server: "", dmetric: "", dlabels: "", range: "1h", theme: "" };
const RANGES = { "15m": ["-15m", 900e3], "1h": ["-1h", 3600e3], "6h": ["-6h", 21600e3], "24h": ["-24h", 86400e3], "7d": ["-7d", 604800e3] };
const view = { ...defaults };

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  for (const k of Object.keys(defaults)) view[k] = p.get(k) ?? defaults[k];
}

function writeHash() {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(view)) if (v !== defaults[k] && v !== "") p.set(k, v);
  const h = "#" + p.toString();
  if (location.hash !== h) history.replaceState(null, "", h === "#" ? location.pathname : h);
}

const num = s => (s === "" || s == null || !Number.isFinite(+s)) ? null : +s;

// ---------------------------------------------------------------------------------------------
// Live data held by the page

const live = {
  tickMs: 1000,
  lastEventAt: 0,         // Date.now() of the last event
  serverTime: 0,          // server timestamp of the last event
  seq: null,
  fleet: null,            // the current metric's fleet view (counts, percentiles, heat)
  members: [],            // cell -> first server id
  heat: new Uint8Array(0),
  top: [],                // rows of the current metric, worst first
  rows: new Map(),        // focus server's rows by metric+labels
  series: new Map(),      // focus server: key -> [[t, v], ...] live points
  dist: { ts: [], p50: [], p95: [], p99: [], max: [] },
};

const stats = { events: 0, bytes: 0, updates: 0, updateBytes: 0, maxUpdateBytes: 0, lastBytes: 0, recent: [] };
const perf = { renders: 0, totalMs: 0, maxMs: 0, recent: [], longTasks: 0 };
window.rtd = { view, live, stats, perf };

// ---------------------------------------------------------------------------------------------
// Connection

let source = null;
let retryTimer = null;
let retryDelay = 1000;

/** The filter box's terms: `k=v` label pairs and server id prefixes. */
function filterTerms() {
  const terms = view.q.trim().split(/\s+/).filter(Boolean);
  return { labels: terms.filter(t => t.includes("=")), prefixes: terms.filter(t => !t.includes("=")) };
}

/** Whether a row passes the filter box, as the server filters (any prefix; every label pair). */
function matchesFilter(r) {
  const { labels, prefixes } = filterTerms();
  if (prefixes.length && !prefixes.some(p => r.server_id.startsWith(p))) return false;
  const have = (r.labels || "").split(",");
  return labels.every(l => have.includes(l));
}

function streamURL() {
  const q = new URLSearchParams();
  if (view.metric) q.set("metrics", view.metric);
  q.set("heatmap", "1");
  q.set("fleet", "0");
  q.set("top", String(TOP_N));
  const { labels, prefixes } = filterTerms();
  if (labels.length) q.set("labels", labels.join(","));
  if (prefixes.length) q.set("server_prefix", prefixes.join(","));
  if (num(view.warn) != null) q.set("warn", view.warn);
  if (num(view.crit) != null) q.set("crit", view.crit);
  if (view.worst === "low") q.set("worst", "low");
  if (view.server) q.set("focus", view.server);
  return "/api/dashboard/stream?" + q;
}

function setState(cls, text) {
  const el = $("state");
  if (el.className !== cls) el.className = cls;
  if (el.textContent !== text) el.textContent = text;
}

/** Opens (or re-opens, after a view change) the one subscription. Data stays on screen meanwhile. */
function connect() {
  clearTimeout(retryTimer);
  if (source) source.close();
  if (!view.metric) return;   // waiting for the catalog
  const es = new EventSource(streamURL());
  source = es;
  live.answered = false;   // no event of this subscription yet
  es.addEventListener("init", e => { if (source === es) onEvent(e, true); });
  es.addEventListener("update", e => { if (source === es) onEvent(e, false); });
  es.onopen = () => { retryDelay = 1000; };
  es.onerror = () => {
    if (source !== es) return;
    // CONNECTING: the browser retries by itself and resumes with Last-Event-ID.
    // CLOSED (an HTTP error, or the server restarting): find out which. A request the server
    // refuses (a filter it rejects, an unknown server id in the URL) is shown, not retried: it
    // would be refused again. Anything else is retried with backoff.
    setState("reconnecting", "reconnecting…");
    updateAge();
    if (es.readyState === EventSource.CLOSED) {
      refusal().then(message => {
        if (source !== es) return;
        if (message) { setState("error", message); return; }
        retryTimer = setTimeout(connect, retryDelay);
        retryDelay = Math.min(15000, retryDelay * 2);
      });
    }
  };
}

/** The server's reason when it refuses the stream request itself (4xx but 408/429), else null. */
async function refusal() {
  const ctl = new AbortController();
  try {
    const r = await fetch(streamURL(), { signal: ctl.signal, headers: { accept: "text/event-stream" } });
    if (r.status >= 400 && r.status < 500 && r.status !== 408 && r.status !== 429) {
      let message = "refused (" + r.status + ")";
      try { const j = await r.json(); if (j && j.error) message = "refused: " + j.error; } catch { /* not JSON */ }
      return message;
    }
    ctl.abort();   // it answered: the stream works again, connect() reopens it
  } catch { /* unreachable: retry */ }
  return null;
}

function onEvent(e, isInit) {
  const t0 = performance.now();
  const bytes = e.data.length + 64;  // data plus the id/event lines, close enough for ASCII JSON
  stats.events++; stats.bytes += bytes; stats.lastBytes = bytes;
  if (!isInit) {
    stats.updates++; stats.updateBytes += bytes; stats.maxUpdateBytes = Math.max(stats.maxUpdateBytes, bytes);
    stats.recent.push(bytes); if (stats.recent.length > 30) stats.recent.shift();
  }
  const msg = JSON.parse(e.data);
  live.tickMs = msg.tick_ms || live.tickMs;
  live.seq = msg.seq;
  live.eventId = e.lastEventId;
  live.lastEventAt = Date.now();
  live.answered = true;
  live.serverTime = msg.timestamp;
  setState("live", "live");
  if (isInit) live.rows.clear();
  // Series the server dropped (idle past --series-idle-timeout): forget their rows and points.
  for (const r of msg.removed || []) {
    if (view.server && r.server_id === view.server) {
      const k = r.metric_name + "\u0000" + (r.labels || "");
      live.rows.delete(k);
      live.series.delete(k);
    }
  }
  const metric = view.metric;
  const top = [];
  for (const r of msg.data) {
    const focus = view.server && r.server_id === view.server;
    if (focus) {
      const k = r.metric_name + "\u0000" + (r.labels || "");
      live.rows.set(k, r);
      appendLive(k, r);
    }
    // The drill-down server's rows come whether or not the filter selects it: they rank only
    // when the filter would have selected them.
    if (r.metric_name === metric && (!focus || matchesFilter(r))) top.push(r);
  }
  // A fresh snapshot lists every series of the drill-down server: forget the points of the others.
  if (isInit) for (const k of [...live.series.keys()]) if (!live.rows.has(k)) live.series.delete(k);
  if (view.server && live.seededFor !== view.server && live.rows.size) {
    live.seededFor = view.server;
    seedLive(view.server, [...live.rows.values()]);
  }
  const worstLow = view.worst === "low";
  top.sort((a, b) => worstLow ? a.last - b.last : b.last - a.last);
  live.top = top.slice(0, TOP_N);
  const v = (msg.views || []).find(x => x.metric_name === metric);
  if (!v) {
    // Every event carries a view of the selected metric while some server reports it.
    live.fleet = null; live.heat = new Uint8Array(0); live.members = [];
  } else {
    live.fleet = v;
    if (v.members) live.members = v.members;
    live.heat = decodeBase64(v.heat);
    if (v.history) {
      const h = v.history;
      live.dist = { ts: h.ts.slice(), p50: h.p50.slice(), p95: h.p95.slice(), p99: h.p99.slice(), max: h.max.slice() };
    } else if (isInit) {
      live.dist = { ts: [], p50: [], p95: [], p99: [], max: [] };
    }
    if (!v.history || !live.dist.ts.length || live.dist.ts[live.dist.ts.length - 1] < msg.timestamp) {
      const d = live.dist;
      d.ts.push(msg.timestamp); d.p50.push(v.p50); d.p95.push(v.p95); d.p99.push(v.p99); d.max.push(v.max);
      if (d.ts.length > DIST_POINTS) for (const a of Object.values(d)) a.splice(0, a.length - DIST_POINTS);
    }
  }
  const parseMs = performance.now() - t0;
  schedule(parseMs);
}

function decodeBase64(s) {
  const bin = atob(s || "");
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function appendLive(k, r) {
  let pts = live.series.get(k);
  if (!pts) { pts = []; live.series.set(k, pts); }
  if (r.lastUpdate == null || r.last == null) return;
  const lastT = pts.length ? pts[pts.length - 1][0] : -Infinity;
  if (r.lastUpdate > lastT) pts.push([r.lastUpdate, r.last]);
  else if (r.lastUpdate === lastT) pts[pts.length - 1][1] = r.last;
  if (pts.length > LIVE_POINTS) pts.splice(0, pts.length - LIVE_POINTS);
}

// ---------------------------------------------------------------------------------------------
// Rendering (at most once per animation frame)

let pending = false, pendingParse = 0;
function schedule(parseMs = 0) {
  pendingParse += parseMs;
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    const t0 = performance.now();
    render();
    const ms = performance.now() - t0 + pendingParse;
    pendingParse = 0;
    perf.renders++; perf.totalMs += ms; perf.maxMs = Math.max(perf.maxMs, ms);
    perf.recent.push(ms); if (perf.recent.length > 60) perf.recent.shift();
  });
}

const heatmap = new Heatmap($("heatmap"), { onHover: hoverCell, onClick: i => openServer(live.members[i]) });
const dist = new LineChart($("distchart"));
const historyChart = new LineChart($("d-history"));
const sparks = new Map();   // metric key -> LineChart

function colors() {
  const cs = getComputedStyle(document.documentElement);
  const c = n => cs.getPropertyValue(n).trim();
  return { lo: c("--heat-lo"), hi: c("--heat-hi"), warn: c("--heat-warn"), crit: c("--heat-crit"), stale: c("--heat-stale"),
           s1: c("--s1"), s2: c("--s2"), s3: c("--s3"), s4: c("--s4"), warnFg: c("--warn"), critFg: c("--crit"), muted: c("--muted") };
}

function beyond(v, t) {
  if (t == null || v == null) return false;
  return view.worst === "low" ? v <= t : v >= t;
}

/** 256-entry colour table for heat bytes: 0 none, 1 stale, 2..255 values between lo and hi. */
function heatLUT(f, col) {
  const lut = new Uint32Array(256);
  const lo = hexRGB(col.lo), hi = hexRGB(col.hi), w = hexRGB(col.warn), c = hexRGB(col.crit), st = hexRGB(col.stale);
  lut[0] = 0; lut[1] = rgba(...st);
  const warn = num(view.warn), crit = num(view.crit), low = view.worst === "low";
  for (let b = 2; b < 256; b++) {
    const v = f.lo + (b - 2) / 253 * (f.hi - f.lo);
    if (beyond(v, crit)) { lut[b] = rgba(...c); continue; }
    if (beyond(v, warn)) { lut[b] = rgba(...w); continue; }
    // Sequential ramp towards "bad": high values darker/brighter unless low is worse.
    let x = f.hi > f.lo ? (b - 2) / 253 : 0.5;
    if (low) x = 1 - x;
    x = Math.pow(x, 0.8);
    lut[b] = rgba(Math.round(lo[0] + (hi[0] - lo[0]) * x), Math.round(lo[1] + (hi[1] - lo[1]) * x), Math.round(lo[2] + (hi[2] - lo[2]) * x));
  }
  return lut;
}

function text(id, s) { const el = $(id); if (el.textContent !== s) el.textContent = s; }

function render() {
  const f = live.fleet, unit = unitFor(view.metric), col = colors();
  const warn = num(view.warn), crit = num(view.crit);
  // Summary cards.
  text("c-servers", f ? String(f.servers) : "–");
  text("c-reporting", f ? String(f.reporting) : "–");
  text("c-stale", f ? String(f.stale) : "–");
  text("c-warn", f && warn != null ? String(f.over_warn) : "–");
  text("c-crit", f && crit != null ? String(f.over_crit) : "–");
  $("c-warn").parentElement.classList.toggle("on", !!(f && f.over_warn));
  $("c-crit").parentElement.classList.toggle("on", !!(f && f.over_crit));
  for (const k of ["p50", "p95", "p99", "max"]) text("c-" + k, f ? fmt(f[k], unit) : "–");
  // Heatmap.
  if (f) {
    heatmap.canvas.dataset.servers = String(f.servers);
    heatmap.set(live.heat, heatLUT(f, col));
    text("heat-note", f.group > 1 ? `${f.servers} servers, ${f.group} per cell` : `${f.servers} servers`);
    const legend = $("legend");
    const grad = `linear-gradient(90deg, ${view.worst === "low" ? col.hi + "," + col.lo : col.lo + "," + col.hi})`;
    legend.innerHTML = "";
    const a = document.createElement("span"); a.textContent = fmt(f.lo, unit);
    const bar = document.createElement("span"); bar.className = "bar"; bar.style.background = grad;
    const b = document.createElement("span"); b.textContent = fmt(f.hi, unit);
    const s = document.createElement("span"); s.innerHTML = `<i style="--c:${col.stale}"></i> stale`;
    legend.append(a, bar, b, s);
    if (warn != null) { const w = document.createElement("span"); w.innerHTML = `<i style="--c:${col.warn}"></i> ≥ ${fmt(warn, unit)}`; legend.append(w); }
    if (crit != null) { const c = document.createElement("span"); c.innerHTML = `<i style="--c:${col.crit}"></i> ≥ ${fmt(crit, unit)}`; legend.append(c); }
  } else if (live.answered) {
    // The metric's last series left (or none matches the filter): nothing to draw.
    heatmap.canvas.dataset.servers = "0";
    heatmap.set(live.heat, new Uint32Array(256));
    text("heat-note", "no servers report this metric");
    $("legend").replaceChildren();
  }
  // Distribution over time.
  const d = live.dist;
  const zip = k => d.ts.map((t, i) => [t, d[k][i]]);
  dist.set({
    unit, empty: "waiting for data",
    series: [
      { name: "max", color: col.s4, points: zip("max"), dash: [3, 3], width: 1 },
      { name: "p99", color: col.s3, points: zip("p99") },
      { name: "p95", color: col.s2, points: zip("p95") },
      { name: "p50", color: col.s1, points: zip("p50") },
    ],
    thresholds: [{ value: warn, color: col.warnFg }, { value: crit, color: col.critFg }],
  });
  renderTop(unit);
  renderDrill();
  updateAge();
  // Footer.
  text("f-seq", "seq " + (live.seq ?? "–"));
  const avg = stats.recent.length ? stats.recent.reduce((a, b) => a + b, 0) / stats.recent.length : 0;
  text("f-bytes", stats.recent.length ? `${fmt(avg, "B")}/tick (max ${fmt(stats.maxUpdateBytes, "B")})` : "–");
  const pr = perf.recent.length ? perf.recent.reduce((a, b) => a + b, 0) / perf.recent.length : 0;
  text("f-render", `render ${pr.toFixed(1)} ms`);
}

function renderTop(unit) {
  const body = $("toptable").tBodies[0];
  const warn = num(view.warn), crit = num(view.crit);
  const now = live.serverTime || Date.now();
  const staleMs = (catalogCache && catalogCache.stale_after_ms) || 30000;
  while (body.rows.length > live.top.length) body.deleteRow(-1);
  live.top.forEach((r, i) => {
    const tr = body.rows[i] || body.insertRow();
    if (tr.cells.length === 0) {
      for (let c = 0; c < 7; c++) { const td = tr.insertCell(); if (c >= 2) td.className = "num"; }
      tr.cells[1].classList.add("server");
      tr.tabIndex = 0;
      tr.addEventListener("click", () => openServer(tr.dataset.server));
      tr.addEventListener("keydown", e => { if (e.key === "Enter") openServer(tr.dataset.server); });
    }
    tr.dataset.server = r.server_id;
    tr.classList.toggle("selected", r.server_id === view.server);
    tr.classList.toggle("stale", now - r.lastUpdate > staleMs);
    const cells = tr.cells;
    setCell(cells[0], String(i + 1));
    // Long ids keep their distinguishing ends: "app0dd39f6b-00007" → "app0dd…-00007".
    const id = r.server_id.length > 16 ? r.server_id.slice(0, 6) + "…" + r.server_id.slice(-8) : r.server_id;
    const label = escapeHTML(id) + (r.labels ? `<span class="lbl">${escapeHTML(r.labels)}</span>` : "");
    if (cells[1].dataset.html !== label) { cells[1].innerHTML = label; cells[1].dataset.html = label; cells[1].title = r.server_id + (r.labels ? " " + r.labels : ""); }
    setCell(cells[2], fmt(r.last, unit));
    cells[2].className = "num v " + (beyond(r.last, crit) ? "val-crit" : beyond(r.last, warn) ? "val-warn" : "");
    setCell(cells[3], fmt(r.avg, unit));
    setCell(cells[4], fmt(r.p95, unit));
    setCell(cells[5], fmt(r.max5m, unit));
    setCell(cells[6], agoShort(now - r.lastUpdate));
  });
  text("top-note", live.top.length ? (view.worst === "low" ? "lowest first" : "highest first") : "no servers match");
}

function agoShort(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 2 ? "now" : s < 120 ? s + "s" : s < 7200 ? Math.round(s / 60) + "m" : Math.round(s / 3600) + "h";
}

function setCell(td, s) { if (td.textContent !== s) td.textContent = s; }
function escapeHTML(s) { return String(s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]); }

function hoverCell(i, e) {
  const tip = $("tip");
  heatmap.highlight = i;
  if (i < 0 || !live.fleet) { tip.hidden = true; heatmap.draw(); return; }
  const f = live.fleet, b = live.heat[i], unit = unitFor(view.metric);
  const id = live.members[i] || "?";
  const v = b >= 2 ? f.lo + (b - 2) / 253 * (f.hi - f.lo) : null;
  const who = f.group > 1 ? `${id} +${f.group - 1} more` : id;
  tip.textContent = `${who} · ${b === 1 ? "stale" : b === 0 ? "no data" : "≈ " + fmt(v, unit)}`;
  tip.hidden = false;
  const wrap = tip.parentElement.getBoundingClientRect();
  tip.style.left = Math.min(wrap.width - tip.offsetWidth, e.clientX - wrap.left + 12) + "px";
  tip.style.top = Math.max(0, e.clientY - wrap.top - 28) + "px";
  heatmap.draw();
}

// ---------------------------------------------------------------------------------------------
// Drill-down

/** Opens the drill-down of server `id`; `fromURL`: keep the URL's chart metric and label set. */
function openServer(id, fromURL = false) {
  if (!id || id === view.server) { if (id) $("drill").hidden = false; return; }
  view.server = id;
  if (!fromURL || !view.dmetric) { view.dmetric = view.metric; view.dlabels = ""; }
  live.rows.clear(); live.series.clear();
  for (const s of sparks.values()) s.canvas.parentElement.remove();
  sparks.clear();
  writeHash();
  $("drill").hidden = false;
  live.seededFor = "";
  connect();
  loadHistory();
  schedule();
}

function closeServer() {
  view.server = ""; view.dmetric = ""; view.dlabels = "";
  historyKey = "";
  $("drill").hidden = true;
  live.rows.clear(); live.series.clear();
  writeHash();
  connect();
}

/** Seeds the live charts of the drill-down server's series (known from its first event) with the
 *  last 15 minutes from /api/history: raw points when the store keeps them, minute averages otherwise. */
async function seedLive(id, rows) {
  await Promise.all(rows.map(async r => {
    const k = r.metric_name + "\u0000" + (r.labels || "");
    const labels = r.labels ? "&labels=" + encodeURIComponent(r.labels) : "";
    try {
      const res = await fetch(`/api/history?server_id=${encodeURIComponent(id)}&metric_name=${encodeURIComponent(r.metric_name)}${labels}&from=-15m&raw=auto&max_points=900`);
      if (!res.ok || view.server !== id) return;
      const h = await res.json();
      const seeded = h.points.map(p => [p.ts, h.kind === "raw" ? p.value : p.avg]).filter(p => p[1] != null);
      const have = live.series.get(k) || [];
      const first = have.length ? have[0][0] : Infinity;
      live.series.set(k, seeded.filter(p => p[0] < first).concat(have));
    } catch { /* live points still arrive */ }
  }));
  schedule();
}

let historyToken = 0, historyAt = 0, historyKey = "";
async function loadHistory() {
  const id = view.server, metric = view.dmetric || view.metric, token = ++historyToken;
  if (!id || !metric) return;
  historyAt = Date.now();
  text("d-hmetric", metric + (view.dlabels ? " {" + view.dlabels + "}" : ""));
  const key = [id, metric, view.dlabels, view.range].join("\u0000");
  if (key !== historyKey) { historyKey = key; text("d-hnote", "loading…"); }  // not on the periodic reload
  for (const b of document.querySelectorAll(".ranges button")) b.classList.toggle("on", b.dataset.range === view.range);
  const [range, spanMs] = Object.hasOwn(RANGES, view.range) ? RANGES[view.range] : RANGES["1h"];
  const width = Math.max(200, $("d-history").clientWidth || 600);
  // One series: the chosen card's label set (without it, every label set of the metric blended).
  const labels = view.dlabels ? "&labels=" + encodeURIComponent(view.dlabels) : "";
  try {
    const r = await fetch(`/api/history?server_id=${encodeURIComponent(id)}&metric_name=${encodeURIComponent(metric)}${labels}&from=${range}&max_points=${Math.round(width / 2)}&raw=auto`);
    if (token !== historyToken) return;
    if (!r.ok) { text("d-hnote", "history unavailable (" + r.status + ")"); historyChart.set({ series: [], unit: unitFor(metric), empty: "no history" }); return; }
    const h = await r.json();
    const unit = unitFor(metric), col = colors();
    // The window ends at the server's clock when known (a browser clock behind it cut the newest points off).
    const now = Math.max(Date.now(), live.serverTime || 0);
    if (h.kind === "raw") {
      historyChart.set({ unit, window: [now - spanMs, now], series: [{ name: "value", color: col.s1, points: h.points.map(p => [p.ts, p.value]) }],
        thresholds: [{ value: num(view.warn), color: col.warnFg }, { value: num(view.crit), color: col.critFg }] });
      text("d-hnote", `${h.points.length} raw points`);
    } else {
      historyChart.set({
        unit, window: [now - spanMs, now], empty: "no history in this range",
        band: { color: col.s1 + "33", points: h.points.map(p => [p.ts, p.min, p.max]) },
        series: [{ name: "avg", color: col.s1, points: h.points.map(p => [p.ts, p.avg]) },
                 { name: "p95", color: col.s2, points: h.points.map(p => [p.ts, p.p95]), width: 1 }],
        thresholds: [{ value: num(view.warn), color: col.warnFg }, { value: num(view.crit), color: col.critFg }],
      });
      text("d-hnote", `${h.points.length} points · ${Math.round(h.resolution_ms / 60000)} min resolution`);
    }
  } catch (err) {
    if (token === historyToken) text("d-hnote", "history failed: " + err);
  }
}

function renderDrill() {
  const drill = $("drill");
  if (!view.server) { drill.hidden = true; return; }
  drill.hidden = false;
  drill.dataset.server = view.server;
  text("d-title", view.server);
  const rows = [...live.rows.values()].sort((a, b) => (a.metric_name + a.labels).localeCompare(b.metric_name + b.labels));
  const now = live.serverTime || Date.now();
  const lastSeen = rows.reduce((m, r) => Math.max(m, r.lastUpdate || 0), 0);
  text("d-seen", lastSeen ? "last seen " + ago(now - lastSeen) : "no live data yet");
  const labels = [...new Set(rows.map(r => r.labels).filter(Boolean))];
  text("d-labels", labels.join(" · "));
  const grid = $("d-metrics"), col = colors();
  for (const r of rows) {
    const k = r.metric_name + "\u0000" + (r.labels || "");
    let chart = sparks.get(k);
    if (!chart) {
      const card = document.createElement("div");
      card.className = "mcard"; card.tabIndex = 0; card.dataset.metric = r.metric_name;
      card.innerHTML = `<span class="name"></span><span class="last"></span><span class="stats"></span><canvas></canvas>`;
      card.querySelector(".name").textContent = r.metric_name + (r.labels ? " {" + r.labels + "}" : "");
      const pick = () => { view.dmetric = r.metric_name; view.dlabels = r.labels || ""; writeHash(); loadHistory(); schedule(); };
      card.addEventListener("click", pick);
      card.addEventListener("keydown", e => { if (e.key === "Enter") pick(); });
      grid.append(card);
      chart = new LineChart(card.querySelector("canvas"), { compact: true });
      sparks.set(k, chart);
    }
    const card = chart.canvas.parentElement, unit = unitFor(r.metric_name);
    card.classList.toggle("selected", r.metric_name === (view.dmetric || view.metric) && (!view.dlabels || view.dlabels === (r.labels || "")));
    card.querySelector(".last").textContent = fmt(r.last, unit);
    card.querySelector(".stats").textContent =
      `1m min ${fmt(r.min, unit)} · avg ${fmt(r.avg, unit)} · max ${fmt(r.max, unit)} · p95 ${fmt(r.p95, unit)}`;
    const pts = live.series.get(k) || [];
    // Up to 15 minutes, but never less than one: a new server's first seconds stay readable.
    const end = live.serverTime || Date.now();
    const start = Math.max(end - 15 * 60e3, Math.min(pts.length ? pts[0][0] : end, end - 60e3));
    chart.set({ unit, window: [start, end], series: [{ name: r.metric_name, color: col.s1, points: pts }], empty: "waiting" });
  }
  // Cards of series the server removed (idle past its timeout) go too.
  for (const [k, chart] of sparks) {
    if (!live.rows.has(k)) { chart.canvas.parentElement.remove(); sparks.delete(k); }
  }
}

// ---------------------------------------------------------------------------------------------
// Controls, catalog, theme, clock

let catalogCache = null, catalogAt = 0;
async function loadCatalog() {
  if (catalogCache && Date.now() - catalogAt < 10000) return catalogCache;
  try {
    const r = await fetch("/api/catalog");
    if (r.ok) { catalogCache = await r.json(); catalogAt = Date.now(); }
  } catch { /* offline: keep the last one */ }
  return catalogCache || { metrics: [] };
}

async function refreshMetrics() {
  const c = await loadCatalog();
  const sel = $("metric");
  const names = c.metrics.map(m => m.metric_name);
  if (view.metric && !names.includes(view.metric)) names.unshift(view.metric);
  const current = [...sel.options].map(o => o.value).join("\u0000");
  if (current !== names.join("\u0000")) {
    sel.replaceChildren(...names.map(n => { const o = document.createElement("option"); o.value = n; o.textContent = n; return o; }));
  }
  if (!view.metric && names.length) {
    view.metric = names.find(n => /cpu/.test(n)) || names[0];
    writeHash();
    connect();
  }
  sel.value = view.metric;
}

function applyControls() {
  $("q").value = view.q; $("warn").value = view.warn; $("crit").value = view.crit; $("worst").value = view.worst;
  if (view.metric) $("metric").value = view.metric;
}

function changed(k, v) {
  if (view[k] === v) return;
  view[k] = v;
  writeHash();
  if (k === "metric") { live.fleet = null; live.heat = new Uint8Array(0); live.members = []; live.top = []; live.dist = { ts: [], p50: [], p95: [], p99: [], max: [] }; }
  connect();
  schedule();
}

function applyTheme() {
  const stored = view.theme || localStorage.getItem("rtd-theme") || "";
  const dark = stored ? stored === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
}

let qTimer = null;
$("metric").addEventListener("change", e => changed("metric", e.target.value));
$("q").addEventListener("input", e => { clearTimeout(qTimer); qTimer = setTimeout(() => changed("q", e.target.value.trim()), 400); });
$("q").addEventListener("keydown", e => { if (e.key === "Enter") { e.preventDefault(); clearTimeout(qTimer); changed("q", e.target.value.trim()); } });
$("warn").addEventListener("change", e => changed("warn", e.target.value));
$("crit").addEventListener("change", e => changed("crit", e.target.value));
$("worst").addEventListener("change", e => changed("worst", e.target.value));
$("controls").addEventListener("submit", e => e.preventDefault());
$("theme").addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  view.theme = next; localStorage.setItem("rtd-theme", next); writeHash(); applyTheme(); schedule();
  if (view.server) loadHistory();
});
$("d-close").addEventListener("click", closeServer);
document.addEventListener("keydown", e => { if (e.key === "Escape" && view.server) closeServer(); });
for (const b of document.querySelectorAll(".ranges button")) b.addEventListener("click", () => { view.range = b.dataset.range; writeHash(); loadHistory(); });
/** What the drill-down's history chart shows (a change reloads it). */
const chartKey = () => [view.dmetric, view.dlabels, view.range].join("\u0000");
window.addEventListener("hashchange", () => {
  const before = streamURL(), server = view.server, chart = chartKey();
  readHash(); applyControls(); applyTheme();
  if (streamURL() !== before) connect();
  if (view.server !== server) { if (view.server) { const s = view.server; view.server = ""; openServer(s, true); } else closeServer(); }
  else if (view.server && chartKey() !== chart) loadHistory();
  schedule();
});
window.addEventListener("resize", () => schedule());
if ("PerformanceObserver" in window) {
  try { new PerformanceObserver(l => { perf.longTasks += l.getEntries().length; }).observe({ entryTypes: ["longtask"] }); } catch { /* unsupported */ }
}

/** The data-age read-out next to the connection state; "stale" when events stopped arriving on an open stream. */
function updateAge() {
  if (!live.lastEventAt) { text("age", "waiting for data"); return; }
  const age = Date.now() - live.lastEventAt;
  text("age", "data " + (age < Math.max(1500, 1.5 * live.tickMs) ? "current" : ago(age).replace(" ago", " old")));
  const el = $("state");
  if (el.className === "live" && age > Math.max(5000, 3 * live.tickMs)) setState("stale", "stale");
}

// Data age and staleness, once a second (independent of events arriving); the open history chart
// is reloaded every 30 s so its window keeps up.
setInterval(() => {
  updateAge();
  if (view.server) { schedule(); if (Date.now() - historyAt > 30e3) loadHistory(); }
}, 1000);
setInterval(refreshMetrics, 15000);

readHash();
applyTheme();
applyControls();
// One subscription at start: openServer() subscribes with the drill-down server; otherwise connect()
// now if the URL names a metric, or refreshMetrics() once the catalog has picked one.
if (view.server) { const s = view.server; view.server = ""; refreshMetrics().then(() => openServer(s, true)); }
else {
  connect();
  refreshMetrics().then(() => { if (!view.metric) { text("age", "no metrics yet"); setTimeout(function retry() { refreshMetrics().then(() => { if (!view.metric) setTimeout(retry, 2000); }); }, 2000); } });
}
