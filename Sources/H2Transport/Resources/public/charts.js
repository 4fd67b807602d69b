// Canvas charts for the dashboard: a time-series line chart and a fleet heatmap, plus number
// formatting. Hand-written because the dashboard ships inside the binary with no build step and no
// package registry is reachable; both components draw only on demand (the caller batches redraws
// into one animation frame) and size themselves to their element and the device pixel ratio.
"use strict";

// ---------------------------------------------------------------------------------------------
// Units and numbers

/** Guesses a metric's unit from its name. */
export function unitFor(name) {
  const n = (name || "").toLowerCase();
  if (/(percent|_pct$|pct_|usage|util|cpu(?!_count)|_ratio_percent)/.test(n)) return "%";
  if (/bytes|_mem(ory)?(_|$)|memory|_rss|heap/.test(n)) return "B";
  if (/(_seconds|_secs|_sec$|_s$)/.test(n)) return "s";
  if (/(_ms$|_millis|latency_ms|duration_ms)/.test(n)) return "ms";
  if (/(bits|_bps$)/.test(n)) return "b/s";
  return "";
}

const SI = [[1e18, "E"], [1e15, "P"], [1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
const IEC = [[2 ** 60, "EiB"], [2 ** 50, "PiB"], [2 ** 40, "TiB"], [2 ** 30, "GiB"], [2 ** 20, "MiB"], [2 ** 10, "KiB"]];

function sig(v, digits = 3) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  // Below a thousandth (or beyond the largest prefix): three significant digits with an exponent
  // ("8.7e-6"), where fixed decimals showed "0.000009" or "0".
  if (a < 1e-3 || a >= 1e21) return v.toExponential(digits - 1).replace(/\.?0+e/, "e").replace("e+", "e");
  const d = a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : Math.min(6, digits - 1 - Math.floor(Math.log10(a)));
  return v.toFixed(Math.max(0, d)).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
}

/** A short, human-friendly rendering of a value in a unit ("87.3 %", "1.21 GiB", "340 ms"). */
export function fmt(v, unit = "") {
  if (v == null || Number.isNaN(v)) return "–";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "-∞";
  // Rounded to three significant digits before the prefix is chosen: 999,700 is "1M", not "1000k".
  v = Number(v.toPrecision(3));
  const a = Math.abs(v);
  switch (unit) {
    case "%": return sig(v) + " %";
    case "B": for (const [f, s] of IEC) if (a >= f && a < f * 1024) return sig(v / f) + " " + s; return sig(v) + " B";
    case "s":
      if (a !== 0 && a < 1e-3) return sig(v * 1e6) + " µs";
      if (a !== 0 && a < 1) return sig(v * 1e3) + " ms";
      return sig(v) + " s";
    case "ms": return a >= 1000 ? sig(v / 1000) + " s" : sig(v) + " ms";
    case "b/s": for (const [f, s] of SI) if (a >= f && a < f * 1000) return sig(v / f) + " " + s + "b/s"; return sig(v) + " b/s";
    default: for (const [f, s] of SI) if (a >= f && a < f * 1000) return sig(v / f) + s; return sig(v);
  }
}

/** "3 s ago", "5 min ago", "2 h ago". */
export function ago(ms) {
  if (ms == null || !Number.isFinite(ms)) return "–";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) { const d = Math.abs(lo) || 1; lo -= d / 2; hi += d / 2; }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw) || 10 * mag;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toPrecision(12));
  return { ticks: out, lo: Math.floor(lo / step) * step, hi: Math.ceil(hi / step) * step };
}

function cssVar(el, name, fallback) {
  const v = getComputedStyle(el).getPropertyValue(name).trim();
  return v || fallback;
}

/** Makes a canvas's backing store match its CSS size and the device pixel ratio. */
function fit(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr)), h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  return dpr;
}

function timeLabel(t, span) {
  const d = new Date(t);
  if (span > 2 * 86400e3) {
    const m = d.getMinutes();
    return (d.getMonth() + 1) + "/" + d.getDate() + " " + String(d.getHours()).padStart(2, "0") + (m ? ":" + String(m).padStart(2, "0") : "h");
  }
  const hm = String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  return span <= 600e3 ? hm + ":" + String(d.getSeconds()).padStart(2, "0") : hm;
}

// ---------------------------------------------------------------------------------------------
// Line chart

/**
 * A time-series chart: lines, an optional min–max band, horizontal threshold lines, a time axis,
 * a value axis with round ticks, and a hover read-out.
 *
 * set({series: [{name, color, points: [[t, v], ...], dash?, width?}], band?: {color, points: [[t, lo, hi]]},
 *      thresholds?: [{value, color}], unit, window?: [t0, t1]})
 */
export class LineChart {
  constructor(canvas, { compact = false } = {}) {
    this.canvas = canvas;
    this.compact = compact;
    this.data = { series: [], thresholds: [], unit: "" };
    this.hoverX = null;
    canvas.addEventListener("mousemove", e => { this.hoverX = e.offsetX; this.draw(); });
    canvas.addEventListener("mouseleave", () => { this.hoverX = null; this.draw(); });
  }

  set(data) { this.data = data; this.draw(); }

  /** Points drawn (tests read it from `data-points`). */
  get pointCount() { return this.data.series.reduce((n, s) => n + s.points.length, 0) + ((this.data.band && this.data.band.points.length) || 0); }

  draw() {
    const c = this.canvas, ctx = c.getContext("2d");
    if (!c.clientWidth) return;
    const dpr = fit(c);
    const W = c.width / dpr, H = c.height / dpr;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    c.dataset.points = String(this.pointCount);
    const { series, band, thresholds = [], unit = "" } = this.data;
    const fg = cssVar(c, "--fg", "#ddd"), muted = cssVar(c, "--muted", "#888"), grid = cssVar(c, "--grid", "#8883");
    const font = (this.compact ? 10 : 11) + "px system-ui, sans-serif";
    ctx.font = font;
    // Domains.
    let t0 = Infinity, t1 = -Infinity, v0 = Infinity, v1 = -Infinity;
    const seeT = t => { if (t < t0) t0 = t; if (t > t1) t1 = t; };
    const seeV = v => { if (v == null || !Number.isFinite(v)) return; if (v < v0) v0 = v; if (v > v1) v1 = v; };
    for (const s of series) for (const [t, v] of s.points) { seeT(t); seeV(v); }
    if (band) for (const [t, lo, hi] of band.points) { seeT(t); seeV(lo); seeV(hi); }
    if (this.data.window) [t0, t1] = this.data.window;
    for (const th of thresholds) if (th.value != null && Number.isFinite(th.value) && v0 <= v1) {
      // Show a threshold when it is near the data (within half the range), so lines stay readable.
      const pad = (v1 - v0 || Math.abs(v1) || 1) * 0.5;
      if (th.value >= v0 - pad && th.value <= v1 + pad) seeV(th.value);
    }
    if (!(t1 > t0) || !(v1 >= v0)) {
      ctx.fillStyle = muted; ctx.textAlign = "center"; ctx.textBaseline = "middle";
      ctx.fillText(this.data.empty || "no data yet", W / 2, H / 2);
      return;
    }
    if (unit === "%" && v0 >= 0 && v1 <= 100) { v0 = 0; v1 = Math.max(v1, 1); }
    const nt = niceTicks(v0, v1, this.compact ? 3 : 5);
    v0 = Math.min(v0, nt.lo); v1 = Math.max(v1, nt.hi);
    const left = this.compact ? 44 : 58, right = 8, top = 6, bottom = this.compact ? 16 : 20;
    const pw = Math.max(10, W - left - right), ph = Math.max(10, H - top - bottom);
    const X = t => left + (t - t0) / (t1 - t0) * pw;
    const Y = v => top + ph - (v - v0) / (v1 - v0 || 1) * ph;
    // Grid and axes.
    ctx.strokeStyle = grid; ctx.lineWidth = 1; ctx.fillStyle = muted;
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const v of nt.ticks) {
      if (v < v0 || v > v1) continue;
      const y = Math.round(Y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + pw, y); ctx.stroke();
      ctx.fillText(fmt(v, unit), left - 4, y);
    }
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    const span = t1 - t0, nx = Math.max(2, Math.floor(pw / (this.compact ? 90 : 110)));
    const step = [1e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 10800e3, 21600e3, 43200e3, 86400e3, 172800e3]
      .find(s => span / s <= nx) || 604800e3;
    // Ticks fall on round local times (a day step at local midnight, also in half-hour zones).
    const off = -new Date(t0).getTimezoneOffset() * 60e3;
    for (let t = Math.ceil((t0 + off) / step) * step - off; t <= t1; t += step) {
      const x = Math.round(X(t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + ph); ctx.stroke();
      const label = timeLabel(t, span), half = ctx.measureText(label).width / 2;
      // Labels that would run into the value axis or off the right edge are left out.
      if (x - half >= left - 2 && x + half <= W) ctx.fillText(label, x, top + ph + 3);
    }
    ctx.save();
    ctx.beginPath(); ctx.rect(left, top, pw, ph); ctx.clip();
    // Band.
    if (band && band.points.length > 1) {
      ctx.fillStyle = band.color;
      ctx.beginPath();
      band.points.forEach(([t, lo], i) => i ? ctx.lineTo(X(t), Y(lo)) : ctx.moveTo(X(t), Y(lo)));
      for (let i = band.points.length - 1; i >= 0; i--) ctx.lineTo(X(band.points[i][0]), Y(band.points[i][2]));
      ctx.closePath(); ctx.fill();
    }
    // Thresholds.
    for (const th of thresholds) {
      if (th.value == null || th.value < v0 || th.value > v1) continue;
      ctx.strokeStyle = th.color; ctx.setLineDash([4, 4]); ctx.lineWidth = 1;
      const y = Math.round(Y(th.value)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + pw, y); ctx.stroke();
    }
    ctx.setLineDash([]);
    // Lines (gaps where a value is null or time jumps by more than 3 median steps).
    for (const s of series) {
      if (!s.points.length) continue;
      ctx.strokeStyle = s.color; ctx.lineWidth = s.width || 1.5; ctx.setLineDash(s.dash || []);
      const gap = medianStep(s.points) * 3.5;
      ctx.beginPath();
      let pen = false, prevT = null;
      for (const [t, v] of s.points) {
        if (v == null || !Number.isFinite(v)) { pen = false; continue; }
        if (prevT != null && gap > 0 && t - prevT > gap) pen = false;
        pen ? ctx.lineTo(X(t), Y(v)) : ctx.moveTo(X(t), Y(v));
        pen = true; prevT = t;
      }
      ctx.stroke();
      if (s.points.length === 1 || s.dots) {
        ctx.fillStyle = s.color;
        for (const [t, v] of s.points) if (v != null) { ctx.beginPath(); ctx.arc(X(t), Y(v), 2, 0, 7); ctx.fill(); }
      }
    }
    ctx.setLineDash([]);
    ctx.restore();
    // Hover read-out.
    if (this.hoverX != null && this.hoverX >= left && this.hoverX <= left + pw) {
      const t = t0 + (this.hoverX - left) / pw * (t1 - t0);
      ctx.strokeStyle = muted; ctx.beginPath(); ctx.moveTo(this.hoverX + 0.5, top); ctx.lineTo(this.hoverX + 0.5, top + ph); ctx.stroke();
      const lines = [timeLabel(t, 0)];
      for (const s of series) {
        const p = nearest(s.points, t);
        if (p) lines.push({ color: s.color, text: s.name + " " + fmt(p[1], unit) });
      }
      if (band) { const p = nearest(band.points, t); if (p) lines.push({ color: muted, text: "min " + fmt(p[1], unit) + " · max " + fmt(p[2], unit) }); }
      const lh = 14, bw = Math.max(...lines.map(l => ctx.measureText(typeof l === "string" ? l : l.text).width)) + 18;
      let bx = this.hoverX + 8; if (bx + bw > W) bx = this.hoverX - 8 - bw;
      ctx.fillStyle = cssVar(c, "--panel", "#222"); ctx.strokeStyle = grid;
      ctx.fillRect(bx, top + 2, bw, lines.length * lh + 6); ctx.strokeRect(bx + 0.5, top + 2.5, bw, lines.length * lh + 6);
      ctx.textAlign = "left"; ctx.textBaseline = "top";
      lines.forEach((l, i) => {
        const y = top + 5 + i * lh;
        if (typeof l === "string") { ctx.fillStyle = muted; ctx.fillText(l, bx + 6, y); return; }
        ctx.fillStyle = l.color; ctx.fillRect(bx + 6, y + 4, 6, 6);
        ctx.fillStyle = fg; ctx.fillText(l.text, bx + 16, y);
      });
    }
  }
}

function medianStep(points) {
  if (points.length < 3) return 0;
  const steps = [];
  const stride = Math.max(1, Math.floor(points.length / 64));
  for (let i = stride; i < points.length; i += stride) steps.push((points[i][0] - points[i - stride][0]) / stride);
  steps.sort((a, b) => a - b);
  return steps[steps.length >> 1];
}

function nearest(points, t) {
  let lo = 0, hi = points.length - 1;
  if (hi < 0) return null;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (points[mid][0] < t) lo = mid + 1; else hi = mid; }
  if (lo > 0 && Math.abs(points[lo - 1][0] - t) < Math.abs(points[lo][0] - t)) lo--;
  return points[lo];
}

// ---------------------------------------------------------------------------------------------
// Heatmap

/**
 * One square per cell (server, or group of servers), laid out row by row to fill the element.
 * Colours come from `colorOf(level)` (a 256-entry lookup the page rebuilds when thresholds or the
 * scale change), so a redraw of 10,000 cells is one pass over a byte array into an ImageData.
 */
export class Heatmap {
  constructor(canvas, { onHover, onClick } = {}) {
    this.canvas = canvas;
    this.cells = new Uint8Array(0);
    this.lut = new Uint32Array(256);
    this.layout = { cols: 1, size: 1, gap: 0 };
    this.highlight = -1;
    canvas.addEventListener("mousemove", e => onHover && onHover(this.cellAt(e.offsetX, e.offsetY), e));
    canvas.addEventListener("mouseleave", () => onHover && onHover(-1));
    canvas.addEventListener("click", e => { const i = this.cellAt(e.offsetX, e.offsetY); if (i >= 0 && onClick) onClick(i); });
  }

  /** `lut`: Uint32Array(256) of ABGR colours (little-endian RGBA bytes) per level. */
  set(cells, lut) { this.cells = cells; this.lut = lut; this.draw(); }

  cellAt(x, y) {
    const { cols, size, gap, ox, oy } = this.layout;
    const pitch = size + gap;
    const c = Math.floor((x - ox) / pitch), r = Math.floor((y - oy) / pitch);
    if (c < 0 || c >= cols || r < 0) return -1;
    const i = r * cols + c;
    return i < this.cells.length ? i : -1;
  }

  draw() {
    const c = this.canvas;
    if (!c.clientWidth) return;
    // Work in CSS pixels on a 1:1 backing store: cells are whole pixels, crisp at any DPR.
    const W = Math.max(1, c.clientWidth), H = Math.max(1, c.clientHeight);
    if (c.width !== W || c.height !== H) { c.width = W; c.height = H; }
    const n = this.cells.length;
    c.dataset.cells = String(n);
    const ctx = c.getContext("2d");
    if (!n) { ctx.clearRect(0, 0, W, H); return; }
    // Largest square size that fits n cells into W×H.
    let size = Math.max(1, Math.min(28, Math.floor(Math.sqrt(W * H / n))));
    let cols, rows;
    for (; size > 1; size--) {
      const gap = size >= 6 ? 1 : 0;
      cols = Math.floor((W + gap) / (size + gap)); rows = Math.ceil(n / Math.max(1, cols));
      if (rows * (size + gap) - gap <= H) break;
    }
    const gap = size >= 6 ? 1 : 0;
    cols = Math.max(1, Math.floor((W + gap) / (size + gap)));
    rows = Math.ceil(n / cols);
    const usedW = cols * (size + gap) - gap, usedH = rows * (size + gap) - gap;
    const ox = Math.max(0, Math.floor((W - usedW) / 2)), oy = 0;
    this.layout = { cols, size, gap, ox, oy };
    const img = ctx.createImageData(W, H);
    const px = new Uint32Array(img.data.buffer);
    const pitch = size + gap, lut = this.lut, cells = this.cells;
    for (let i = 0; i < n; i++) {
      const color = lut[cells[i]];
      const x0 = ox + (i % cols) * pitch, y0 = oy + Math.floor(i / cols) * pitch;
      for (let y = y0; y < y0 + size && y < H; y++) {
        const row = y * W;
        for (let x = x0; x < x0 + size && x < W; x++) px[row + x] = color;
      }
    }
    ctx.putImageData(img, 0, 0);
    if (this.highlight >= 0 && this.highlight < n) {
      const x0 = ox + (this.highlight % cols) * pitch, y0 = oy + Math.floor(this.highlight / cols) * pitch;
      ctx.strokeStyle = cssVar(c, "--fg", "#fff"); ctx.lineWidth = 2;
      ctx.strokeRect(x0 - 1, y0 - 1, size + 2, size + 2);
    }
  }
}

/** Packs r, g, b (0–255) into the little-endian Uint32 an ImageData expects. */
export function rgba(r, g, b, a = 255) { return ((a << 24) | (b << 16) | (g << 8) | r) >>> 0; }

/** "#rrggbb" → [r, g, b]. */
export function hexRGB(hex) {
  const h = hex.replace("#", "");
  return [parseInt(h.slice(0, 2), 16), parseInt(h.slice(2, 4), 16), parseInt(h.slice(4, 6), 16)];
}
