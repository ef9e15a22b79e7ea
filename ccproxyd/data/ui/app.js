"use strict";
// The /ui page: reads /ui/data (counters and state) and /spend (the ledger) every few seconds
// and draws them with plain SVG. No libraries, nothing fetched from outside the daemon.

const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function key() { return sessionStorage.getItem("ccproxyd-key") || ""; }

async function get(path) {
  const headers = key() ? { "x-api-key": key() } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw Object.assign(new Error("a client key is needed"), { needsKey: true });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

const usd = (v) => v == null ? "unknown" : (v < 0 ? "−$" : "$") + (Math.abs(v) >= 100 ? Math.abs(v).toFixed(0) : Math.abs(v) >= 1 ? Math.abs(v).toFixed(2) : Math.abs(v).toFixed(4));
const unknownNote = (n) => n ? ` (${n} request${n === 1 ? "" : "s"} unknown)` : "";
const ms = (v) => v == null ? "–" : v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(0) + " ms";
const count = (v) => String(Math.round(v));

function text(tag, content, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (content != null) el.textContent = content;
  return el;
}

// Horizontal bars, one row per entry: [{label, value, second?}]; `second` draws a thinner bar
// under the first (the Claude price under the cost).
function bars(figure, rows, format) {
  figure.querySelectorAll("svg, .empty").forEach((el) => el.remove());
  if (!rows.length) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = "nothing yet";
    figure.append(p);
    return;
  }
  const rowHeight = 26, labelWidth = 150, width = 440, valueWidth = 78;
  const max = Math.max(...rows.map((r) => Math.max(r.value, r.second || 0)), 1e-12);
  const height = rows.length * rowHeight;
  const svg = text("svg", null, { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img" });
  rows.forEach((row, i) => {
    const y = i * rowHeight, span = width - labelWidth - valueWidth;
    const g = text("g", null, { "data-label": row.label, "data-value": row.value });
    g.append(text("text", row.label.length > 22 ? row.label.slice(0, 21) + "…" : row.label, { x: 0, y: y + 15 }));
    g.append(text("rect", null, { class: "bar", x: labelWidth, y: y + 4, height: row.second != null ? 9 : 16,
                                  width: Math.max(1, span * row.value / max) }));
    if (row.second != null) {
      g.append(text("rect", null, { class: "bar2", x: labelWidth, y: y + 14, height: 7,
                                    width: Math.max(1, span * row.second / max) }));
    }
    g.append(text("text", format(row.value), { x: width - valueWidth + 6, y: y + 15 }));
    svg.append(g);
  });
  figure.append(svg);
}

const entries = (object) => Object.entries(object || {}).map(([label, value]) => ({ label: label || "(none)", value }));

function spendRows(spend) {
  // an unknown figure (no price on that side) draws no bar; its value reads "unknown"
  return spend ? spend.rows.map((r) => ({ label: String(r.key), value: r.cost_usd, second: r.claude_price_usd })) : [];
}

function drawSpend(id, spend) {
  const figure = $(id);
  if (spend === null) {
    figure.querySelectorAll("svg, .empty").forEach((el) => el.remove());
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = "the spend ledger is off";
    figure.append(p);
    return;
  }
  bars(figure, spendRows(spend), usd);
}

const percent = (v) => v == null ? "–" : (100 * v).toFixed(1) + " %";

// One row per route: how much of its input the providers' prompt caches served, what the misses cost.
function drawCache(byRoute) {
  const body = $("cache-by-route").tBodies[0];
  const rows = byRoute ? byRoute.rows : [];
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.route = String(r.key);
    const cells = [String(r.key), count(r.requests), count(r.input_tokens + r.cached_input_tokens),
                   percent(r.cached_share), usd(r.miss_cost_usd), usd(r.cost_usd)];
    for (const [i, value] of cells.entries()) {
      const td = document.createElement("td");
      td.textContent = value;
      td.className = ["route", "requests", "input", "cached", "misses", "spent"][i];
      tr.append(td);
    }
    return tr;
  }));
}

function draw(data, byDay, byModel, byRoute) {
  const errors = Object.values(data.requests.errors_by_type).reduce((a, b) => a + b, 0);
  $("cost").textContent = usd(data.money.cost_usd) + unknownNote(data.money.cost_unknown);
  $("savings").textContent = usd(data.money.savings_usd) + unknownNote(data.money.savings_unknown);
  $("savings").classList.toggle("negative", data.money.savings_usd != null && data.money.savings_usd < 0);
  $("savings-note").textContent = data.money.savings_usd != null && data.money.savings_usd < 0
    ? "the routes cost more than the Claude list price" : "against the Claude list price of each model asked for";
  $("requests").textContent = count(data.requests.total);
  $("errors").textContent = errors === 1 ? "1 error" : `${count(errors)} errors`;
  $("latency").textContent = `${ms(data.latency.p50_ms)} / ${ms(data.latency.p95_ms)}`;
  $("ttft").textContent = `${ms(data.ttft.p50_ms)} / ${ms(data.ttft.p95_ms)}`;
  $("table-version").textContent = `table ${data.table.version}`;
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  drawSpend("spend-by-day", byDay);
  drawSpend("spend-by-model", byModel);
  drawSpend("spend-by-route", byRoute);
  drawCache(byRoute);
  bars($("requests-by-model"), entries(data.requests.by_model), count);
  bars($("requests-by-status"), entries(data.requests.by_status), count);
  bars($("errors-by-type"), entries(data.requests.errors_by_type), count);

  const body = $("providers").tBodies[0];
  body.replaceChildren(...Object.entries(data.providers).map(([name, p]) => {
    const tr = document.createElement("tr");
    tr.dataset.provider = name;
    for (const [value, cls] of [[name], [p.state, p.state], [p.consecutive_failures], [p.trips], [p.in_flight]]) {
      const td = document.createElement("td");
      td.textContent = String(value);
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  }));

  const table = data.table;
  const facts = [["file", table.path], ["version", table.version],
                 ["loaded", new Date(table.loaded_at * 1000).toLocaleString()],
                 ["reloads", `${table.accepted} accepted, ${table.rejected} refused`],
                 ["last refused edit", table.last_error ? `${table.last_error} (${new Date(table.last_error_at * 1000).toLocaleString()})` : "none"]];
  $("table").replaceChildren(...facts.flatMap(([k, v]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = v;
    dd.id = "table-" + k.replaceAll(" ", "-");
    return [dt, dd];
  }));
}

async function refresh() {
  try {
    const data = await get("/ui/data");
    const since = new Date(Date.now() - 30 * 86400e3).toISOString().slice(0, 10);
    const [byDay, byModel, byRoute] = data.ledger
      ? await Promise.all(["day", "model", "route"].map((by) => get(`/spend?by=${by}&since=${since}`)))
      : [null, null, null];
    draw(data, byDay, byModel, byRoute);
    $("board").hidden = false;
    $("key-form").hidden = true;
    $("problem").hidden = true;
    document.body.dataset.state = "loaded";
  } catch (error) {
    if (error.needsKey) {
      $("key-form").hidden = false;
      $("board").hidden = true;
      $("key-error").textContent = key() ? "that key was refused" : "";
      document.body.dataset.state = "key";
    } else {
      $("problem").textContent = `The daemon did not answer: ${error.message}. Retrying.`;
      $("problem").hidden = false;
      document.body.dataset.state = "problem";
    }
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("ccproxyd-key", $("key").value);
  refresh();
});

refresh();
setInterval(refresh, REFRESH_MS);
