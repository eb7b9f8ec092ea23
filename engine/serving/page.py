"""The live page at ``/``: one self-contained HTML file that polls ``/api/live`` and updates in place."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tthf live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#1b1f24;background:#f6f7f9}
h1{font-size:1.3em;margin:0 0 .3em} .sub{color:#57606a;margin-bottom:1em}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:.6em;margin-bottom:1em}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.5em .8em}
.card b{display:block;font-size:1.3em} .card span{color:#57606a;font-size:.85em}
.tables{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:.8em}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de}
th,td{padding:.25em .6em;text-align:right} th:first-child,td:first-child{text-align:left}
caption{text-align:left;font-weight:600;padding:.3em 0} tr:nth-child(even){background:#f6f8fa}
.up{color:#1a7f37} .down{color:#cf222e} .bad{background:#ffebe9} .ok{background:#dafbe1}
</style></head><body>
<h1>tthf live <span id="run"></span></h1>
<div class="sub">day <span id="day">-</span> &middot; minute <span id="minute">-</span>
 &middot; updated <span id="updated">never</span></div>
<div class="cards">
 <div class="card" id="ready-card"><span>service</span><b id="ready">-</b></div>
 <div class="card" id="feed-card"><span>feed</span><b id="feed">-</b></div>
 <div class="card"><span>symbols predicted</span><b id="symbols">-</b></div>
 <div class="card"><span>without prediction</span><b id="missing">-</b></div>
 <div class="card"><span>server ms p50 / p99</span><b id="latency">-</b></div>
 <div class="card"><span>queue</span><b id="queue">-</b></div>
 <div class="card"><span>rows / late / revised</span><b id="rows">-</b></div>
 <div class="card"><span>rejected rows</span><b id="rejected">-</b></div>
</div>
<div class="tables">
 <table id="strongest"><caption>Strongest ret_1h</caption><thead><tr><th>symbol</th><th>ret_1h</th>
 <th>vol_10m</th></tr></thead><tbody></tbody></table>
 <table id="weakest"><caption>Weakest ret_1h</caption><thead><tr><th>symbol</th><th>ret_1h</th>
 <th>vol_10m</th></tr></thead><tbody></tbody></table>
 <table id="volatile"><caption>Highest vol_10m</caption><thead><tr><th>symbol</th><th>ret_1h</th>
 <th>vol_10m</th></tr></thead><tbody></tbody></table>
</div>
<script>
"use strict";
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? {Authorization: "Bearer " + token} : {};
const $ = (id) => document.getElementById(id);
const fmt = (x, d) => (x === null || x === undefined) ? "-" : Number(x).toFixed(d);
function fill(id, rows) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    for (const [i, v] of [r.symbol, r.ret_1h, r.vol_10m].entries()) {
      const td = document.createElement("td");
      td.textContent = i === 0 ? v : fmt(v, 5);
      if (i === 1 && v !== null) td.className = v >= 0 ? "up" : "down";
      tr.appendChild(td);
    }
    return tr;
  }));
}
function show(s) {
  $("run").textContent = "- " + s.run + " (" + s.backend + ")";
  $("day").textContent = s.day || "-";
  $("minute").textContent = s.minute ? s.minute.slice(11, 16) + " UTC" : "-";
  $("ready").textContent = s.ready ? "ready" : "not ready";
  $("ready-card").className = "card " + (s.ready ? "ok" : "bad");
  const stale = s.input_age_s !== null && s.input_age_s > 120;
  $("feed").textContent = s.feeding ? (stale ? "idle " + s.input_age_s + " s" : "connected") : "no feeder";
  $("feed-card").className = "card " + (s.feeding && !stale ? "ok" : "bad");
  $("symbols").textContent = s.symbols;
  $("missing").textContent = s.no_prediction;
  $("latency").textContent = fmt(s.latency_ms.p50, 1) + " / " + fmt(s.latency_ms.p99, 1);
  $("queue").textContent = s.queue + " / " + s.bound;
  $("rows").textContent = s.rows + " / " + s.late_rows + " / " + s.revision_rows;
  const rej = Object.entries(s.rejected).filter(([, n]) => n > 0).map(([k, n]) => k + " " + n);
  $("rejected").textContent = rej.length ? rej.join(", ") : "none";
  fill("strongest", s.strongest); fill("weakest", s.weakest); fill("volatile", s.volatile);
  $("updated").textContent = new Date().toLocaleTimeString();
}
async function poll() {
  try {
    const r = await fetch("api/live", {headers, cache: "no-store"});
    if (r.ok) show(await r.json()); else $("updated").textContent = "HTTP " + r.status;
  } catch (e) {
    $("updated").textContent = "unreachable";
  }
  setTimeout(poll, 1000);
}
poll();
</script></body></html>
"""
