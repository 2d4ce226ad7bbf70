// redispool's web view. Every value from the server is put on the page with
// textContent or an SVG attribute, never as markup (worker ids are hostile data).
"use strict";

const REFRESH_MS = 1000;
const HISTORY_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const state = { pool: null, actions: false, span: 60, lastHistory: 0 };

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function cell(value) {
  return el("td", value === null || value === undefined ? "-" : value);
}

function seconds(value) {
  return value === null || value === undefined ? "-" : value.toFixed(1) + " s";
}

async function getJSON(path) {
  const reply = await fetch(path, { cache: "no-store" });
  if (!reply.ok) throw new Error(path + ": " + reply.status);
  return reply.json();
}

function replaceRows(table, rows) {
  const body = document.querySelector(table + " tbody");
  body.replaceChildren(...rows);
}

function showPools(pools) {
  if (!state.pool && pools.length) state.pool = pools[0].pool;
  replaceRows("#pools", pools.map((p) => {
    const row = el("tr", null, p.pool === state.pool ? "selected" : "");
    const link = el("a", p.pool);
    link.href = "#" + encodeURIComponent(p.pool);
    const name = el("td");
    name.append(link);
    if (p.error) {  // unreadable (junk in its keys): its error, as text, across the row
      const why = el("td", p.error, "error");
      why.colSpan = 6;
      row.append(name, why);
    } else {
      row.append(name, cell(p.size), cell(p.idle), cell(p.busy), cell(p.waiting),
        cell(p.draining), cell(p.dead));
    }
    return row;
  }));
}

function actionButton(label, worker) {
  const button = el("button", label);
  button.type = "button";
  button.addEventListener("click", () => act("drain", worker));
  return button;
}

function showPool(p) {
  document.getElementById("detail").hidden = false;
  document.getElementById("pool-title").textContent = "Pool " + p.pool;
  document.getElementById("pool-numbers").textContent =
    `size ${p.size} · idle ${p.idle} · busy ${p.busy} · waiting ${p.waiting} · ` +
    `draining ${p.draining} · dead ${p.dead} · lease TTL ${p.lease_ttl} s · ${p.strategy}`;
  document.getElementById("workers-count").textContent =
    p.workers.length < p.workers_total ? `(first ${p.workers.length} of ${p.workers_total})`
      : `(${p.workers_total})`;
  replaceRows("#workers", p.workers.map((w) => {
    const row = el("tr", null, "worker " + w.state);
    row.dataset.worker = w.id;
    const stateCell = cell(w.state + (w.draining ? " (draining)" : "") + (w.overflow ? " (overflow)" : ""));
    stateCell.className = "state";
    const act = el("td");
    if (state.actions) act.append(actionButton("drain", w.id));
    row.append(cell(w.id), stateCell, cell(w.host), cell(w.pid), cell(w.token), cell(w.jobs),
      cell(w.failed), cell(seconds(w.heartbeat_left)), act);
    return row;
  }));
  replaceRows("#leases", p.leases.map((l) => {
    const row = el("tr");
    row.append(cell(l.worker), cell(l.token), cell(l.holder), cell(seconds(l.ttl_left)));
    return row;
  }));
}

function showEvents(events) {
  replaceRows("#events", events.slice().reverse().map((e) => {
    const row = el("tr", null, "event " + e.kind);
    row.append(cell(new Date(e.at).toLocaleTimeString()), cell(e.kind), cell(e.worker || "-"),
      cell(e.detail), cell(e.by));
    return row;
  }));
}

function chart(id, minutes, series) {
  const svg = document.getElementById(id);
  const width = 600, height = 120, top = 14;
  let max = 0;
  for (const s of series) for (const m of minutes) max = Math.max(max, m[s.field] || 0);
  const scale = max > 0 ? (height - top - 4) / max : 0;
  const step = minutes.length > 1 ? width / (minutes.length - 1) : width;
  const nodes = [];
  series.forEach((s, i) => {
    const points = minutes.map((m, x) =>
      `${(x * step).toFixed(1)},${(height - 2 - (m[s.field] || 0) * scale).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("class", "series s" + i);
    nodes.push(line);
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", String(4 + i * 150));
    label.setAttribute("y", "11");
    label.setAttribute("class", "legend s" + i);
    label.textContent = s.label;
    nodes.push(label);
  });
  const peak = document.createElementNS(SVG, "text");
  peak.setAttribute("x", String(width - 4));
  peak.setAttribute("y", "11");
  peak.setAttribute("class", "peak");
  peak.textContent = "max " + (Math.round(max * 1000) / 1000);
  nodes.push(peak);
  svg.replaceChildren(...nodes);
}

function showHistory(minutes) {
  chart("chart-numbers", minutes, [
    { field: "busy", label: "busy" }, { field: "idle", label: "idle" },
    { field: "waiting", label: "waiting" }]);
  chart("chart-checkouts", minutes, [
    { field: "checkouts", label: "checkouts" }, { field: "timeouts", label: "timeouts" }]);
  chart("chart-waits", minutes, [
    { field: "wait_p50", label: "p50" }, { field: "wait_p99", label: "p99" }]);
  chart("chart-trouble", minutes, [
    { field: "reclaims", label: "reclaims" }, { field: "burials", label: "burials" },
    { field: "refused", label: "refused" }]);
}

async function act(what, worker) {
  const token = document.getElementById("token").value;
  const out = document.getElementById("action-result");
  const reply = await fetch(`api/pools/${encodeURIComponent(state.pool)}/${what}`, {
    method: "POST",
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
    body: JSON.stringify(worker === undefined ? {} : { worker: worker }),
  });
  const body = await reply.json();
  out.textContent = reply.ok ? JSON.stringify(body) : (body.error || String(reply.status));
}

async function refresh() {
  try {
    showPools(await getJSON("api/pools"));
    if (state.pool) {
      const name = encodeURIComponent(state.pool);
      showPool(await getJSON(`api/pools/${name}`));
      showEvents(await getJSON(`api/pools/${name}/events?count=50`));
      if (Date.now() - state.lastHistory >= HISTORY_MS) {
        state.lastHistory = Date.now();
        showHistory(await getJSON(`api/pools/${name}/history?minutes=${state.span}`));
      }
    }
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    document.getElementById("updated").textContent = "cannot read: " + err.message;
  }
}

function choosePool() {
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (wanted) state.pool = wanted;
  state.lastHistory = 0;
}

async function start() {
  const config = await getJSON("api/config");
  state.actions = config.actions;
  document.getElementById("actions").hidden = !state.actions;
  document.getElementById("reap").addEventListener("click", () => act("reap"));
  for (const radio of document.querySelectorAll("input[name=span]")) {
    radio.addEventListener("change", () => { state.span = Number(radio.value); state.lastHistory = 0; refresh(); });
  }
  window.addEventListener("hashchange", () => { choosePool(); refresh(); });
  choosePool();
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

start();
