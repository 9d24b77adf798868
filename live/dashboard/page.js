// QuantShift status page: polls /api/status and renders it. Store text is only ever set with
// textContent (never innerHTML), so a symbol or reason in the store cannot inject markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const money = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const quantity = new Intl.NumberFormat("en-US", { maximumFractionDigits: 4 });
const whole = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
let refreshMs = 3000;
let timer = null;

function fmtMoney(x) { return x === null || x === undefined ? "-" : money.format(x); }
function fmtPct(x) { return x === null || x === undefined ? "-" : money.format(x) + " %"; }
function fmtQty(x) { return x === null || x === undefined ? "-" : quantity.format(x); }
function fmtInt(x) { return x === null || x === undefined ? "-" : whole.format(x); }
function fmtTime(ns) {
  if (ns === null || ns === undefined) return "-";
  return new Date(ns / 1e6).toISOString().replace("T", " ").replace(/:\d\d\.\d+Z$/, " UTC");
}
function fmtDate(ns) { return ns === null || ns === undefined ? "-" : new Date(ns / 1e6).toISOString().slice(0, 10); }
function fmtAge(ns) {
  if (ns === null || ns === undefined) return "-";
  const s = Math.max(0, Date.now() / 1000 - ns / 1e9);
  if (s < 120) return Math.round(s) + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  return fmtTime(ns);
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function setText(id, text, cls) {
  const node = document.getElementById(id);
  node.textContent = text;
  if (cls !== undefined) node.className = cls;
}

function signClass(x) { return x > 0 ? "value pos" : x < 0 ? "value neg" : "value"; }

// columns: [header, function(row) -> text, numeric?]
function fillTable(id, columns, rows, emptyText) {
  const table = document.getElementById(id);
  table.replaceChildren();
  const head = el("tr");
  for (const [name] of columns) head.appendChild(el("th", name));
  table.appendChild(head);
  if (rows.length === 0) {
    const tr = el("tr");
    const td = el("td", emptyText, "empty");
    td.colSpan = columns.length;
    tr.appendChild(td);
    table.appendChild(tr);
    return;
  }
  for (const row of rows) {
    const tr = el("tr");
    for (const [, get, numeric] of columns) tr.appendChild(el("td", get(row), numeric ? "num" : ""));
    table.appendChild(tr);
  }
}

function svgNode(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(chart) {
  const box = document.getElementById("chart");
  box.replaceChildren();
  const W = 1000, H = 300, left = 90, right = 16, top = 12, eqBottom = 200, ddTop = 218, ddBottom = 284;
  const svg = svgNode("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "equity and drawdown" });
  const n = chart.equity.length;
  if (n === 0) {
    svg.appendChild(svgNode("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#5b6475" }, "no equity yet"));
    box.appendChild(svg);
    return;
  }
  const lo = Math.min(...chart.equity), hi = Math.max(...chart.equity);
  const span = hi > lo ? hi - lo : Math.max(1, Math.abs(hi) * 0.01);
  const ddMax = Math.max(1e-9, ...chart.drawdown_pct);
  const x = (i) => left + (n === 1 ? 0 : (i * (W - left - right)) / (n - 1));
  const yEq = (v) => eqBottom - ((v - (hi > lo ? lo : lo - span / 2)) / span) * (eqBottom - top);
  const yDd = (v) => ddTop + (v / ddMax) * (ddBottom - ddTop);
  const grid = { stroke: "#e5e7eb", "stroke-width": 1 };
  svg.appendChild(svgNode("line", { x1: left, x2: W - right, y1: top, y2: top, ...grid }));
  svg.appendChild(svgNode("line", { x1: left, x2: W - right, y1: eqBottom, y2: eqBottom, ...grid }));
  svg.appendChild(svgNode("line", { x1: left, x2: W - right, y1: ddTop, y2: ddTop, ...grid }));
  const label = { "font-size": 12, fill: "#5b6475", "text-anchor": "end" };
  svg.appendChild(svgNode("text", { x: left - 6, y: top + 4, ...label }, fmtMoney(hi)));
  svg.appendChild(svgNode("text", { x: left - 6, y: eqBottom + 4, ...label }, fmtMoney(lo)));
  svg.appendChild(svgNode("text", { x: left - 6, y: ddTop + 4, ...label }, "0 %"));
  svg.appendChild(svgNode("text", { x: left - 6, y: ddBottom + 4, ...label }, "-" + fmtPct(ddMax)));
  svg.appendChild(svgNode("text", { x: left, y: H - 2, "font-size": 12, fill: "#5b6475" }, fmtDate(chart.ts_ns[0])));
  svg.appendChild(svgNode("text", { x: W - right, y: H - 2, ...label }, fmtDate(chart.ts_ns[n - 1])));
  const eqPoints = chart.equity.map((v, i) => `${x(i).toFixed(1)},${yEq(v).toFixed(1)}`).join(" ");
  svg.appendChild(svgNode("polyline", { points: eqPoints, fill: "none", stroke: "#1d4ed8", "stroke-width": 1.8 }));
  const ddPoints = chart.drawdown_pct.map((v, i) => `${x(i).toFixed(1)},${yDd(v).toFixed(1)}`);
  const area = `${x(0).toFixed(1)},${ddTop} ${ddPoints.join(" ")} ${x(n - 1).toFixed(1)},${ddTop}`;
  svg.appendChild(svgNode("polygon", { points: area, fill: "#fca5a5", stroke: "#b91c1c", "stroke-width": 1 }));
  const legend = { "font-size": 12, "font-weight": 600, "text-anchor": "end" };
  svg.appendChild(svgNode("text", { x: W - right - 4, y: eqBottom - 6, fill: "#1d4ed8", ...legend }, "equity"));
  svg.appendChild(svgNode("text", { x: W - right - 4, y: ddBottom - 4, fill: "#b91c1c", ...legend }, "drawdown"));
  box.appendChild(svg);
}

function render(s) {
  document.getElementById("error").hidden = true;
  setText("runner", s.runner);
  document.title = `QuantShift ${s.runner}: ${s.halt ? "HALT" : "trading"}`;
  if (s.halt) {
    setText("halt-state", "HALT", "badge bad");
    const detail = document.getElementById("halt-detail");
    detail.textContent = `HALT since ${fmtTime(s.halt.ts_created_ns)}: ${s.halt.reason} (by ${s.halt.created_by}); clear with live resume`;
    detail.hidden = false;
  } else {
    setText("halt-state", "TRADING", "badge ok");
    document.getElementById("halt-detail").hidden = true;
  }
  const leader = s.leader;
  if (!leader) setText("leader", "no leader", "badge warn");
  else if (leader.epoch < s.fence_epoch) setText("leader", `deposed leader ${leader.host} epoch ${leader.epoch}`, "badge warn");
  else setText("leader", `LEADER ${leader.host} epoch ${leader.epoch}`, "badge ok");
  const lease = document.getElementById("lease");
  lease.hidden = !s.lease;
  if (s.lease && s.lease.error) setText("lease", `lease unknown: ${s.lease.error}`, "badge bad");
  else if (s.lease && s.lease.held) setText("lease", `lease held, epoch ${s.lease.epoch}`, "badge ok");
  else if (s.lease) setText("lease", `lease free (last epoch ${s.lease.last_epoch})`, "badge warn");
  setText("epoch", String(s.fence_epoch));
  setText("heartbeat", fmtAge(s.last_heartbeat_ns));
  setText("updated", new Date().toISOString().slice(11, 19) + " UTC");
  const owner = document.getElementById("owner-warning");
  owner.hidden = !(s.owner && s.owner.runner !== s.runner);
  if (!owner.hidden) owner.textContent = `this store belongs to runner ${s.owner.runner}, not to ${s.runner}`;

  const equity = s.equity ? s.equity.equity : null;
  setText("equity", fmtMoney(equity));
  setText("realized-pnl", fmtMoney(s.realized_pnl), signClass(s.realized_pnl));
  setText("day-pnl", fmtMoney(s.day_pnl), signClass(s.day_pnl));
  setText("drawdown-current", fmtPct(s.drawdown.current_pct));
  setText("drawdown-max", fmtPct(s.drawdown.max_pct));
  setText("open-orders", fmtInt(s.open_orders));
  setText("trades-total", fmtInt(s.trades_total));
  drawChart(s.equity_chart);

  fillTable("positions", [
    ["sleeve", (p) => p.sleeve], ["symbol", (p) => p.symbol],
    ["qty", (p) => fmtQty(p.qty), true], ["avg price", (p) => fmtMoney(p.avg_price), true],
  ], s.positions, "no open positions");
  fillTable("hosts", [
    ["host", (h) => h.host], ["role", (h) => h.role], ["epoch", (h) => h.epoch, true],
    ["last seen", (h) => fmtAge(h.ts_ns)],
  ], s.heartbeats, "no heartbeat yet");
  const perf = Object.fromEntries(s.performance.map((p) => [p.sleeve, p]));
  const sleeves = Object.keys(s.promotions || {});
  fillTable("sleeves", [
    ["sleeve", (n) => n], ["trades", (n) => fmtInt(perf[n] ? perf[n].trades : null), true],
    ["win rate", (n) => fmtPct(perf[n] ? perf[n].win_rate_pct : null), true],
    ["P&L", (n) => fmtMoney(perf[n] ? perf[n].pnl : null), true],
    ["Sharpe", (n) => fmtMoney(perf[n] ? perf[n].sharpe : null), true],
    ["max DD", (n) => fmtPct(perf[n] ? perf[n].max_drawdown_pct : null), true],
    ["promotion record", (n) => {
      const r = s.promotions[n];
      return r ? `${r.record_id} (${r.name}, ${r.stage}, ${JSON.stringify(r.params)}) since ${fmtDate(r.bar_ts_ns)}` : "config parameters";
    }],
  ], sleeves, "no sleeves");
  fillTable("orders", [
    ["client order id", (o) => o.client_order_id], ["sleeve", (o) => o.sleeve], ["symbol", (o) => o.symbol],
    ["side", (o) => o.side], ["qty", (o) => fmtQty(o.qty), true], ["type", (o) => o.order_type],
    ["state", (o) => o.state], ["bar", (o) => fmtDate(o.bar_ts_ns)],
  ], s.open_order_list, "no open orders");
  fillTable("trades", [
    ["exit", (t) => fmtDate(t.exit_ts_ns)], ["sleeve", (t) => t.sleeve], ["symbol", (t) => t.symbol],
    ["direction", (t) => t.direction], ["qty", (t) => fmtQty(t.qty), true],
    ["entry", (t) => fmtMoney(t.entry_price), true], ["exit price", (t) => fmtMoney(t.exit_price), true],
    ["P&L", (t) => fmtMoney(t.pnl), true], ["reason", (t) => t.exit_reason],
  ], s.recent_trades, "no closed trades yet");

  document.getElementById("kill-switch").hidden = !s.page.halt_enabled;
  document.getElementById("read-only").hidden = s.page.halt_enabled;
  refreshMs = Math.max(500, s.page.refresh_s * 1000);
}

async function refresh() {
  try {
    const response = await fetch("/api/status", { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    render(body);
  } catch (err) {
    const box = document.getElementById("error");
    box.textContent = `cannot read the status: ${err.message}`;
    box.hidden = false;
  }
  timer = setTimeout(refresh, refreshMs);
}

async function halt(event) {
  event.preventDefault();
  const result = document.getElementById("halt-result");
  result.textContent = "sending...";
  try {
    const response = await fetch("/api/halt", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-QuantShift-Token": document.getElementById("halt-token").value },
      body: JSON.stringify({
        reason: document.getElementById("halt-reason").value,
        flatten: document.getElementById("halt-flatten").checked,
      }),
    });
    const body = await response.json();
    result.textContent = response.ok
      ? `HALT active: ${body.halt.reason}`
      : `refused (${response.status}): ${body.error}`;
    result.className = response.ok ? "neg" : "muted";
  } catch (err) {
    result.textContent = `failed: ${err.message}`;
  }
  clearTimeout(timer);
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("halt-form").addEventListener("submit", halt);
  refresh();
});
