#include "pgproxy/admin/dashboard.h"

namespace pgproxy::admin {

// One page, no build step and nothing fetched from elsewhere: it reads /api/v1 every 2 s with
// the bearer token the operator types (kept in the tab's sessionStorage), keeps the last 10
// minutes of per-mapping rates in the browser, and sends the console's commands as POSTs.
// Compiled in, so the binary and its page never disagree about the API.
std::string_view dashboardPage() {
  return R"PGPROXYUI(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pgproxy</title>
<style>
  :root { --fg: #1d2430; --muted: #6b7480; --line: #dfe3e8; --up: #1a7f37; --down: #c62828;
          --warn: #b26a00; --bg: #f7f8fa; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
  header { display: flex; gap: 16px; align-items: center; padding: 10px 20px; background: #fff;
           border-bottom: 1px solid var(--line); }
  header h1 { font-size: 18px; margin: 0; }
  header .grow { flex: 1; }
  main { padding: 16px 20px; display: grid; gap: 16px; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; }
  section h2 { font-size: 15px; margin: 0 0 8px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th { color: var(--muted); font-weight: 600; font-size: 12px; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .state { font-weight: 600; }
  .state.up { color: var(--up); } .state.down { color: var(--down); } .state.unknown { color: var(--muted); }
  .badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px; background: #fff3e0;
           color: var(--warn); margin-left: 4px; }
  button { font: inherit; padding: 2px 8px; border: 1px solid var(--line); border-radius: 4px;
           background: #fff; cursor: pointer; }
  button:hover { border-color: var(--fg); }
  #message { color: var(--muted); }
  #message.error { color: var(--down); }
  .charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
  .chart { border: 1px solid var(--line); border-radius: 4px; padding: 6px 8px; }
  .chart .title { font-size: 12px; color: var(--muted); display: flex; justify-content: space-between; }
  .chart svg { width: 100%; height: 60px; }
  .chart polyline { fill: none; stroke-width: 1.5; }
  .chart polyline.rate { stroke: #1f6feb; } .chart polyline.bytes { stroke: #8250df; }
  .muted { color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>pgproxy</h1><span id="version" class="muted"></span>
  <span class="grow"></span>
  <span id="message"></span>
  <label>token <input id="token" type="password" size="24" autocomplete="off"></label>
  <button id="save-token">use</button>
  <button id="reload" data-action="reload">reload configuration</button>
</header>
<main>
  <section><h2>Mappings</h2>
    <table id="mappings"><thead><tr><th>name</th><th>tls</th><th>pool</th><th>backends up</th>
      <th>connections</th><th>max</th><th>state</th><th></th></tr></thead><tbody></tbody></table></section>
  <section><h2>Backends</h2>
    <table id="backends"><thead><tr><th>mapping</th><th>backend</th><th>state</th><th>role</th>
      <th>weight</th><th>sessions</th><th>lag</th><th>last check</th><th>last error</th><th></th></tr></thead>
      <tbody></tbody></table></section>
  <section><h2>Connections and bytes per mapping <span class="muted">(last 10 minutes, kept by this page)</span></h2>
    <div id="charts" class="charts"></div></section>
  <section><h2>Pools</h2>
    <table id="pools"><thead><tr><th>mapping</th><th>backend</th><th>database</th><th>user</th>
      <th>waiting</th><th>pinned</th><th>active</th><th>idle</th><th>used</th><th>login</th><th>mode</th></tr></thead>
      <tbody></tbody></table></section>
  <section><h2>Sessions <span id="sessions-count" class="muted"></span></h2>
    <table id="clients"><thead><tr><th>id</th><th>worker</th><th>mapping</th><th>user</th><th>database</th>
      <th>state</th><th>client</th><th>tls</th><th>since</th><th>backend</th></tr></thead><tbody></tbody></table></section>
  <section><h2>Generations and reloads</h2>
    <table id="generations"><thead><tr><th>generation</th><th>state</th><th>workers</th><th>config</th>
      <th>started</th><th>serving since</th><th>ended</th><th>detail</th></tr></thead><tbody></tbody></table></section>
</main>
<script>
"use strict";
const REFRESH_MS = 2000, KEEP_MS = 10 * 60 * 1000, MAX_CLIENTS = 100;
const series = new Map();   // mapping -> [{t, rate, bytes}]
const last = new Map();     // mapping -> {t, connections, bytes}

function token() { return sessionStorage.getItem("pgproxy-token") || ""; }
function headers() { const t = token(); return t ? { "Authorization": "Bearer " + t } : {}; }
function say(text, error) {
  const m = document.getElementById("message");
  m.textContent = text; m.className = error ? "error" : "";
}
async function api(path, method) {
  const r = await fetch("/api/v1/" + path, { method: method || "GET", headers: headers() });
  let body = {};
  try { body = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) { throw new Error((body && body.error) || (r.status + " " + r.statusText)); }
  return body;
}
function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}
function button(label, action, path) {
  const b = document.createElement("button");
  b.textContent = label; b.dataset.action = action; b.dataset.path = path;
  b.addEventListener("click", () => act(path, label));
  return b;
}
function fill(id, rows, make) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows.map(make));
}
async function act(path, label) {
  try {
    const r = await api(path, "POST");
    say(label + ": " + (r.result || "done") + (r.notices ? " (" + r.notices.join("; ") + ")" : ""));
  } catch (e) {
    say(label + ": " + e.message, true);
  }
  refresh();
}
function time(ts) { return ts ? new Date(ts).toLocaleTimeString() : ""; }
function draw(name, points) {
  let box = document.querySelector('.chart[data-mapping="' + CSS.escape(name) + '"]');
  if (!box) {
    box = document.createElement("div");
    box.className = "chart"; box.dataset.mapping = name;
    box.innerHTML = '<div class="title"><span class="name"></span><span class="now"></span></div>' +
      '<svg viewBox="0 0 300 60" preserveAspectRatio="none"><polyline class="rate"></polyline>' +
      '<polyline class="bytes"></polyline></svg>';
    box.querySelector(".name").textContent = name;
    document.getElementById("charts").appendChild(box);
  }
  const now = Date.now();
  // The window grows with the history the page has, up to 10 minutes.
  const span = points.length ? Math.max(4 * REFRESH_MS, Math.min(KEEP_MS, now - points[0].t)) : KEEP_MS;
  const scale = (key) => Math.max(1e-9, ...points.map(p => p[key]));
  for (const key of ["rate", "bytes"]) {
    const max = scale(key);
    const line = box.querySelector("polyline." + key);
    line.setAttribute("points", points.map(p =>
      ((300 * (1 - (now - p.t) / span)).toFixed(1)) + "," + (58 - 56 * p[key] / max).toFixed(1)).join(" "));
  }
  box.dataset.points = String(points.length);
  const p = points[points.length - 1];
  box.querySelector(".now").textContent = p ?
    p.rate.toFixed(1) + " conn/s, " + (p.bytes / 1024).toFixed(1) + " KiB/s" : "";
}
function sample(stats) {
  const now = Date.now();
  for (const s of stats) {
    const bytes = s.total_received + s.total_sent;
    const prev = last.get(s.database);
    last.set(s.database, { t: now, connections: s.total_connections, bytes: bytes });
    if (!prev) continue;
    const dt = (now - prev.t) / 1000;
    if (dt <= 0) continue;
    const list = series.get(s.database) || [];
    list.push({ t: now, rate: Math.max(0, s.total_connections - prev.connections) / dt,
                bytes: Math.max(0, bytes - prev.bytes) / dt });
    while (list.length && now - list[0].t > KEEP_MS) list.shift();
    series.set(s.database, list);
  }
  for (const [name, points] of series) draw(name, points);
}
async function refresh() {
  try {
    const [v, m, b, p, s, g, c] = await Promise.all([api("version"), api("mappings"), api("backends"),
      api("pools"), api("stats"), api("generations"), api("clients")]);
    document.getElementById("version").textContent = v.version[0].version;
    fill("mappings", m.mappings, (x) => {
      const tr = document.createElement("tr"); tr.dataset.name = x.name;
      const state = cell(x.disabled ? "disabled" : x.paused ? "paused" : "serving", "state");
      tr.append(cell(x.name), cell(x.tls), cell(x.pool_mode || "-"),
        cell(x.backends_up + " / " + x.backends, "num"), cell(x.current_connections, "num"),
        cell(x.max_connections === null ? "-" : x.max_connections, "num"), state);
      const acts = document.createElement("td");
      const name = encodeURIComponent(x.name);
      if (x.pool_mode) {
        acts.append(x.paused ? button("resume", "resume", "mappings/" + name + "/resume")
                             : button("pause", "pause", "mappings/" + name + "/pause"));
      }
      acts.append(x.disabled ? button("enable", "enable", "mappings/" + name + "/enable")
                             : button("disable", "disable", "mappings/" + name + "/disable"));
      tr.append(acts);
      return tr;
    });
    fill("backends", b.backends, (x) => {
      const key = x.host + ":" + x.port;
      const tr = document.createElement("tr"); tr.dataset.backend = key; tr.dataset.mapping = x.mapping;
      const state = cell(x.state, "state " + x.state);
      if (x.drained) { const d = document.createElement("span"); d.className = "badge"; d.textContent = "drained"; state.append(d); }
      tr.append(cell(x.mapping), cell(key), state, cell(x.role), cell(x.weight, "num"),
        cell(x.active_sessions, "num"),
        cell(x.replica_lag_ms === null ? "" : (x.replica_lag_ms / 1000).toFixed(1) + " s", "num"),
        cell(time(x.last_check)), cell(x.last_error));
      const acts = document.createElement("td");
      const path = "backends/" + encodeURIComponent(key) + "/";
      acts.append(x.drained ? button("undrain", "undrain", path + "undrain") : button("drain", "drain", path + "drain"));
      tr.append(acts);
      return tr;
    });
    fill("pools", p.pools, (x) => {
      const tr = document.createElement("tr");
      tr.append(cell(x.mapping), cell(x.backend), cell(x.database), cell(x.user), cell(x.cl_waiting, "num"),
        cell(x.cl_pinned, "num"), cell(x.sv_active, "num"), cell(x.sv_idle, "num"), cell(x.sv_used, "num"),
        cell(x.sv_login, "num"), cell(x.pool_mode));
      return tr;
    });
    const clients = c.clients.filter(x => x.state !== "console");
    document.getElementById("sessions-count").textContent = "(" + clients.length + ")" +
      (c.missing ? " " + c.missing.length + " worker(s) did not answer" : "");
    fill("clients", clients.slice(0, MAX_CLIENTS), (x) => {
      const tr = document.createElement("tr");
      tr.append(cell(x.id), cell(x.worker), cell(x.mapping), cell(x.user), cell(x.database), cell(x.state),
        cell(x.addr + ":" + x.port), cell(x.tls), cell(time(x.connect_time)), cell(x.backend));
      return tr;
    });
    fill("generations", g.generations, (x) => {
      const tr = document.createElement("tr"); tr.dataset.state = x.state;
      tr.append(cell(x.generation === null ? "-" : x.generation, "num"),
        cell(x.state, "state " + (x.state === "serving" ? "up" : /failed|refused/.test(x.state) ? "down" : "unknown")),
        cell(x.workers, "num"), cell(x.config_hash), cell(time(x.started)), cell(time(x.serving_since)),
        cell(time(x.ended)), cell(x.detail));
      return tr;
    });
    sample(s.stats);
    document.body.dataset.refreshed = String(Date.now());
    if (document.getElementById("message").className === "error" && /401|token/.test(document.getElementById("message").textContent)) say("");
  } catch (e) {
    say(e.message, true);
  }
}
document.getElementById("token").value = token();
document.getElementById("save-token").addEventListener("click", () => {
  sessionStorage.setItem("pgproxy-token", document.getElementById("token").value);
  refresh();
});
document.getElementById("reload").addEventListener("click", () => act("reload", "reload"));
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
)PGPROXYUI";
}

}  // namespace pgproxy::admin
