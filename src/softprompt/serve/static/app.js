// The page of `softprompt serve`: library, playground, similarity heatmaps, training curves,
// live figures. Plain JS and inline SVG; every value from the server goes in as text, never HTML.
"use strict";

const KEY = "softprompt-api-key";
const SVG = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);
let listing = null; // GET /prompts

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- API ------------------------------------------------------------------------------------

function headers(json) {
  const h = {};
  const key = sessionStorage.getItem(KEY);
  if (key) h["X-API-Key"] = key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

function detail(data, status) {
  const d = data && data.detail;
  if (Array.isArray(d)) return d.map((e) => e.msg || JSON.stringify(e)).join("; ");
  return d ? String(d) : `HTTP ${status}`;
}

async function api(path, body) {
  const init = body === undefined ? { headers: headers(false) } : { method: "POST", headers: headers(true), body: JSON.stringify(body) };
  const reply = await fetch(path, init);
  let data = null;
  try { data = await reply.json(); } catch (_) { /* not JSON */ }
  if (reply.status === 401) {
    banner("This server needs an API key: type it above (it is kept in this tab only).");
    throw new Error(detail(data, 401));
  }
  if (!reply.ok) throw new Error(`${reply.status}: ${detail(data, reply.status)}`);
  return data;
}

function banner(text) {
  const b = $("#banner");
  b.textContent = text || "";
  b.hidden = !text;
}

function keyStatus() {
  $("#key-status").textContent = sessionStorage.getItem(KEY) ? "key set for this tab" : "no key";
}

// -- library --------------------------------------------------------------------------------

function fmtBytes(n) {
  if (n == null) return "";
  return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`;
}

function fmtMetrics(m) {
  const bookkeeping = new Set(["step", "dev_examples"]);
  const parts = Object.entries(m || {}).filter(([k, v]) => typeof v === "number" && !bookkeeping.has(k))
    .map(([k, v]) => `${k} ${Math.abs(v) <= 1 ? (100 * v).toFixed(1) : v.toFixed(2)}`);
  if (parts.length && typeof (m || {}).step === "number") parts.push(`(step ${m.step})`);
  return parts.join(", ") || "–";
}

async function loadLibrary() {
  listing = await api("/prompts");
  let files = { prompts: {}, runs: [] };
  try { files = await api("/web/library"); } catch (err) { console.warn(err); }
  const m = listing.model || {};
  $("#model").textContent = `model ${m.name || "?"} · hidden ${m.hidden_size ?? "?"} · ${listing.prompts.length} prompts`;
  const body = $("#library-table tbody");
  body.replaceChildren();
  for (const p of listing.prompts) {
    const f = files.prompts[p.name] || {};
    body.append(el("tr", { "data-name": p.name },
      el("td", {}, el("b", {}, p.name)), el("td", {}, p.task), el("td", {}, p.kind), el("td", {}, p.model),
      el("td", { class: "num" }, p.prompt_length), el("td", {}, fmtMetrics(p.dev_metrics)),
      el("td", { class: "num" }, fmtBytes(f.bytes)), el("td", {}, f.created || ""),
      el("td", {}, f.embedding ? "yes" : ""), el("td", {}, f.log ? "yes" : "")));
  }
  const ens = Object.entries(listing.ensembles || {});
  $("#ensembles").replaceChildren(...(ens.length ? [el("h3", {}, "Ensembles"), el("ul", {}, ...ens.map(([n, e]) =>
    el("li", {}, el("b", {}, n), ` = ${e.combine} of ${e.prompts.join(", ")}`)))] : []));
  const skipped = Object.entries(listing.skipped || {});
  $("#skipped").replaceChildren(...(skipped.length ? [el("h3", {}, "Skipped"), el("ul", { id: "skipped-list" }, ...skipped.map(([n, why]) =>
    el("li", {}, el("b", {}, n), ": ", el("span", { class: "muted" }, why))))] : []));
  fillTargets();
  fillRuns(files.runs);
}

// -- playground -----------------------------------------------------------------------------

function fillTargets() {
  const select = $("#target");
  const previous = select.value;
  const prompts = new Set(listing.prompts.map((p) => p.name));
  const ensembles = new Set(Object.keys(listing.ensembles || {}));
  const groups = { tasks: [], prompts: [], ensembles: [] };
  for (const [name, info] of Object.entries(listing.names || {})) {
    const group = ensembles.has(name) ? "ensembles" : prompts.has(name) ? "prompts" : "tasks";
    groups[group].push(el("option", { value: name, "data-kind": info.kind }, `${name} (${info.kind})`));
  }
  select.replaceChildren(...Object.entries(groups).filter(([, o]) => o.length).map(([g, o]) => {
    const group = el("optgroup", { label: g });
    group.append(...o);
    return group;
  }));
  if (previous && listing.names[previous]) select.value = previous;
  targetChanged();
}

function targetInfo(name) {
  const info = listing && listing.names[name];
  if (!info) return null;
  const first = listing.prompts.find((p) => p.name === info.prompts[0]);
  return { ...info, first };
}

function targetChanged() {
  const t = targetInfo($("#target").value);
  if (!t) return;
  const generate = t.kind === "generate";
  $("#normalize-label").hidden = generate;
  $("#max-tokens-label").hidden = !generate;
  const parts = [`answered by ${t.prompts.join(", ")}${t.combine ? ` (${t.combine})` : ""}`];
  if (t.first) parts.push(`template “${t.first.template}”`);
  if (t.first && t.first.labels.length) parts.push(`labels ${t.first.labels.join(" / ")}`);
  $("#target-info").textContent = parts.join(" · ");
  showCurl();
}

function request() {
  const name = $("#target").value;
  const t = targetInfo(name);
  const items = $("#inputs").value.split("\n").filter((line) => line.trim()).map((line) => {
    const s = line.trim();
    if (s.startsWith("{")) { try { return JSON.parse(s); } catch (_) { /* plain text */ } }
    return line;
  });
  const body = { task: name };
  if (items.length === 1) body.input = items[0]; else body.inputs = items;
  const generate = t && t.kind === "generate";
  if (!generate && $("#normalize").checked) body.length_normalize = true;
  if (generate && $("#max-tokens").value) body.max_tokens = Number($("#max-tokens").value);
  return { path: generate ? "/generate" : "/classify", body, items };
}

function showCurl() {
  if (!listing) return;
  const { path, body } = request();
  const json = JSON.stringify(body).replace(/'/g, "'\\''");
  const key = sessionStorage.getItem(KEY) ? ` -H "X-API-Key: $SOFTPROMPT_API_KEY"` : "";
  $("#curl").textContent = `curl -s ${location.origin}${path}${key} --json '${json}'`;
}

function bars(probabilities, best) {
  const rows = Object.entries(probabilities).map(([label, p]) => el("div", { class: "bar-row" + (label === best ? " best" : "") },
    el("span", { class: "bar-label" }, label),
    el("span", { class: "bar" }, el("span", { class: "bar-fill", style: `width:${(100 * p).toFixed(1)}%` })),
    el("span", { class: "bar-value" }, `${(100 * p).toFixed(1)}%`)));
  return el("div", { class: "bars" }, ...rows);
}

async function run(event) {
  event.preventDefault();
  const { path, body, items } = request();
  const out = $("#results");
  const error = $("#play-error");
  error.hidden = true;
  showCurl();
  if (!items.length) { error.textContent = "type an input"; error.hidden = false; return; }
  out.replaceChildren(el("p", { class: "muted" }, "…"));
  const started = performance.now();
  try {
    const reply = await api(path, body);
    const ms = performance.now() - started;
    const cards = reply.results.map((r, i) => {
      const input = typeof items[i] === "string" ? items[i] : JSON.stringify(items[i]);
      const card = el("div", { class: "result" }, el("div", { class: "muted small" }, input));
      if ("label" in r) {
        card.append(el("div", {}, "label ", el("b", { class: "label" }, r.label)), bars(r.probabilities, r.label));
        if (r.votes) card.append(el("div", { class: "muted small" }, "votes " + Object.entries(r.votes).map(([l, n]) => `${l} ${n}`).join(", ")));
        if (r.members) card.append(el("div", { class: "muted small" }, r.members.map((m) => `${m.prompt}: ${m.label}`).join(" · ")));
      } else {
        card.append(el("pre", { class: "generated" }, r.text));
        if (r.members) card.append(el("div", { class: "muted small" }, r.members.map((m) => `${m.prompt}: ${m.text}`).join(" · ")));
      }
      return card;
    });
    out.replaceChildren(el("div", { class: "muted small" }, `${reply.prompts.join(", ")}${reply.combine ? ` (${reply.combine})` : ""} · ${ms.toFixed(0)} ms`), ...cards);
    document.body.dataset.played = String(Number(document.body.dataset.played || 0) + 1);
  } catch (err) {
    out.replaceChildren();
    error.textContent = err.message;
    error.hidden = false;
  }
}

// -- similarity heatmaps --------------------------------------------------------------------

function color(v) { // -1 blue, 0 white, 1 red
  const t = Math.max(-1, Math.min(1, v));
  const a = Math.round(255 * (1 - Math.abs(t)));
  return t >= 0 ? `rgb(255,${a},${a})` : `rgb(${a},${a},255)`;
}

function heatmap(title, names, matrix) {
  const cell = Math.max(14, Math.min(34, Math.floor(300 / Math.max(1, names.length))));
  const longest = Math.max(...names.map((n) => Math.min(n.length, 16)));
  const left = 8 + 6.5 * longest, top = 28, size = names.length * cell;
  const svg = svgEl("svg", { width: left + size + 8, height: top + size + 12 + 6.5 * longest, class: "heatmap", "data-measure": title });
  svg.append(svgEl("text", { x: left, y: 16, class: "title" }, title));
  names.forEach((row, i) => {
    svg.append(svgEl("text", { x: left - 4, y: top + i * cell + cell / 2 + 4, "text-anchor": "end" }, row.slice(0, 16)));
    const x = left + i * cell + cell / 2 - 4, y = top + size + 4;
    svg.append(svgEl("text", { x, y, transform: `rotate(90 ${x} ${y})` }, row.slice(0, 16)));
    names.forEach((col, j) => {
      const v = matrix[i][j];
      const rect = svgEl("rect", { x: left + j * cell, y: top + i * cell, width: cell - 1, height: cell - 1, fill: color(v), class: "cell" });
      rect.append(svgEl("title", {}, `${row} · ${col}: ${v.toFixed(3)}`));
      svg.append(rect);
      if (cell >= 30) svg.append(svgEl("text", { x: left + j * cell + cell / 2, y: top + i * cell + cell / 2 + 3, "text-anchor": "middle", class: "value" }, v.toFixed(2)));
    });
  });
  return svg;
}

async function loadSimilarity() {
  const box = $("#similarity");
  try {
    const sim = await api("/web/similarity");
    if (!sim.names.length) { box.replaceChildren(el("p", { class: "muted" }, "no prompts")); return; }
    box.replaceChildren(...Object.entries(sim.measures).map(([m, matrix]) => heatmap(m, sim.names, matrix)));
    const fromPrompt = sim.names.filter((n) => sim.source[n] !== "embedding");
    $("#similarity-note").textContent = "colour: blue −1 · white 0 · red 1"
      + (fromPrompt.length ? ` · no embedding/, the prompt stands in: ${fromPrompt.join(", ")}` : "");
    document.body.dataset.similarity = "ready";
  } catch (err) {
    box.replaceChildren(el("p", { class: "error" }, err.message));
  }
}

// -- training curves ------------------------------------------------------------------------

function fillRuns(runs) {
  const select = $("#run-select");
  const previous = select.value;
  select.replaceChildren(...runs.map((r) => el("option", { value: r }, r)));
  if (!runs.length) { $("#curve").replaceChildren(el("p", { class: "muted" }, "no library folder has a log.jsonl")); return; }
  if (runs.includes(previous)) select.value = previous;
  loadCurve();
}

function ticks(lo, hi, n) {
  const step = (hi - lo) / n;
  return Array.from({ length: n + 1 }, (_, i) => lo + i * step);
}

function polyline(points, sx, sy) {
  return points.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
}

async function loadCurve() {
  const run = $("#run-select").value;
  const box = $("#curve");
  if (!run) return;
  try {
    const c = await api(`/web/curves?run=${encodeURIComponent(run)}`);
    const W = 520, H = 270, L = 48, R = 48, T = 28, B = 34;
    const svg = svgEl("svg", { width: W, height: H, class: "curve", "data-run": run });
    const evals = Object.entries(c.eval);
    const steps = [...c.loss.map((p) => p[0]), ...evals.flatMap(([, pts]) => pts.map((p) => p[0]))];
    if (!steps.length) { box.replaceChildren(el("p", { class: "muted" }, "the log has no records yet")); return; }
    const x0 = Math.min(...steps), x1 = Math.max(x0 + 1, ...steps);
    const sx = (x) => L + (W - L - R) * (x - x0) / (x1 - x0);
    const losses = c.loss.map((p) => p[1]);
    const l0 = Math.min(0, ...losses), l1 = Math.max(l0 + 1e-9, ...losses);
    const sl = (y) => H - B - (H - T - B) * (y - l0) / (l1 - l0);
    const values = evals.flatMap(([, pts]) => pts.map((p) => p[1]));
    const e0 = Math.min(0, ...values), e1 = Math.max(1, ...values);
    const se = (y) => H - B - (H - T - B) * (y - e0) / (e1 - e0);
    svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
    svg.append(svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    svg.append(svgEl("line", { x1: W - R, y1: T, x2: W - R, y2: H - B, class: "axis" }));
    for (const x of ticks(x0, x1, 5)) svg.append(svgEl("text", { x: sx(x), y: H - B + 14, "text-anchor": "middle" }, Math.round(x)));
    svg.append(svgEl("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "muted" }, "step"));
    if (losses.length) {
      for (const y of ticks(l0, l1, 4)) svg.append(svgEl("text", { x: L - 4, y: sl(y) + 4, "text-anchor": "end", class: "loss" }, y.toFixed(2)));
      svg.append(svgEl("path", { d: polyline(c.loss, sx, sl), class: "loss-line" }));
    }
    const palette = ["#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    if (evals.length) for (const y of ticks(e0, e1, 4)) svg.append(svgEl("text", { x: W - R + 4, y: se(y) + 4, class: "metric" }, y.toFixed(2)));
    evals.forEach(([name, pts], k) => {
      svg.append(svgEl("path", { d: polyline(pts, sx, se), class: "metric-line", stroke: palette[k % palette.length] }));
      for (const [x, y] of pts) svg.append(svgEl("circle", { cx: sx(x), cy: se(y), r: 3, fill: palette[k % palette.length] }));
    });
    const legend = [["train loss", "#1f77b4"], ...evals.map(([n], k) => [`dev ${n}`, palette[k % palette.length]])];
    let lx = L;
    for (const [name, colour] of legend) { // one row above the plot
      svg.append(svgEl("rect", { x: lx, y: 6, width: 10, height: 10, fill: colour }));
      svg.append(svgEl("text", { x: lx + 14, y: 15 }, name));
      lx += 24 + 6.5 * name.length;
    }
    box.replaceChildren(svg);
    document.body.dataset.curve = "ready";
  } catch (err) {
    box.replaceChildren(el("p", { class: "error" }, err.message));
  }
}

// -- live figures ---------------------------------------------------------------------------

function fmtMs(v) { return v == null ? "–" : v < 10 ? v.toFixed(1) : v.toFixed(0); }

async function loadStats() {
  const box = $("#stats");
  try {
    const s = await api("/web/stats");
    const endpoints = Object.keys(s.requests).sort();
    const table = el("table", { id: "stats-table" }, el("thead", {}, el("tr", {},
      ...["endpoint", "requests", "by status", "p50", "p90", "p99", "mean"].map((h) => el("th", {}, h)))));
    const body = el("tbody");
    for (const e of endpoints) {
      const byStatus = s.requests[e];
      const total = Object.values(byStatus).reduce((a, b) => a + b, 0);
      const lat = s.latency[e] || {};
      body.append(el("tr", { "data-endpoint": e }, el("td", {}, e), el("td", { class: "num" }, total),
        el("td", { class: "small" }, Object.entries(byStatus).map(([c, n]) => `${c}: ${n}`).join(", ")),
        el("td", { class: "num" }, fmtMs(lat.p50_ms)), el("td", { class: "num" }, fmtMs(lat.p90_ms)),
        el("td", { class: "num" }, fmtMs(lat.p99_ms)), el("td", { class: "num" }, fmtMs(lat.mean_ms))));
    }
    table.append(body);
    const b = s.batches;
    const summary = el("p", { class: "small" }, `${b.count} batches · ${b.rows} rows · ${b.mean_rows == null ? "–" : b.mean_rows.toFixed(1)} rows/batch · `
      + `${fmtMs(b.mean_ms)} ms/batch · queue ${s.queue} · ${s.prompts} prompts`);
    const W = 300, H = 90, n = b.histogram.length, most = Math.max(1, ...b.histogram.map((h) => h.batches));
    const chart = svgEl("svg", { width: W, height: H + 16, class: "batch-chart" });
    b.histogram.forEach((h, i) => {
      const bh = (H - 12) * h.batches / most, w = W / n;
      const rect = svgEl("rect", { x: i * w + 2, y: H - bh, width: w - 4, height: bh, class: "batch-bar" });
      rect.append(svgEl("title", {}, `≤ ${h.le} rows: ${h.batches} batches`));
      chart.append(rect, svgEl("text", { x: i * w + w / 2, y: H + 12, "text-anchor": "middle" }, `≤${h.le}`));
      if (h.batches) chart.append(svgEl("text", { x: i * w + w / 2, y: H - bh - 2, "text-anchor": "middle" }, h.batches));
    });
    const note = el("div", { class: "muted small" }, "latency in ms (percentiles estimated from the histogram buckets)");
    box.replaceChildren(table, note, summary, el("div", { class: "muted small" }, "batch sizes (rows per forward pass)"), chart);
    $("#stats-time").textContent = new Date().toLocaleTimeString();
  } catch (err) {
    box.replaceChildren(el("p", { class: "error" }, err.message));
  }
}

// -- start ----------------------------------------------------------------------------------

async function loadAll() {
  banner("");
  keyStatus();
  try {
    await loadLibrary();
  } catch (err) {
    $("#library-table tbody").replaceChildren(el("tr", {}, el("td", { colspan: 10, class: "error" }, err.message)));
    return;
  }
  await Promise.all([loadSimilarity(), loadStats()]);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("#api-key").value.trim();
    if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
    $("#api-key").value = "";
    loadAll();
  });
  $("#key-forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); loadAll(); });
  $("#play-form").addEventListener("submit", run);
  $("#target").addEventListener("change", targetChanged);
  for (const id of ["#inputs", "#normalize", "#max-tokens"]) $(id).addEventListener("input", showCurl);
  $("#run-select").addEventListener("change", loadCurve);
  loadAll();
  setInterval(() => { if (!document.hidden && listing) loadStats(); }, 3000);
});
