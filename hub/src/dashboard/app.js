// The coordinators' dashboard: signs in with a dashboard token, reads /api/stats, and draws the
// region's exchange. Counts below the threshold arrive as text ("<5"), and counts hidden so that
// a small one cannot be worked out as "x"; both are shown as they are.
"use strict";

const $ = (id) => document.getElementById(id);
// The words this page draws with, in the page's language, from the shared catalogue.
const W = JSON.parse($("words").textContent);
const say = (key, vars = {}) => (W[key] || key).replace(/\{(\w+)\}/g, (_, n) => String(vars[n] ?? ""));
const LANG = document.documentElement.lang || "nl";
const kind = (k) => W[`dash_kind_${k}`] || k;
const COLORS = ["#1f6feb", "#2da44e", "#bf8700", "#8250df", "#cf222e", "#57606a"];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

const hidden = (v) => typeof v === "string";
// For drawing only: a hidden count is drawn as a stub, never as a guess of its value.
const amount = (v) => (hidden(v) ? 0 : v);

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 120) return say("dash_secs", { n: s });
  if (s < 7200) return say("dash_mins", { n: Math.round(s / 60) });
  if (s < 172800) return say("dash_hours", { n: Math.round(s / 3600) });
  return say("dash_days", { n: Math.round(s / 86400) });
}

function show(section) {
  for (const id of ["signin", "report"]) $(id).hidden = id !== section;
}

async function signIn(token) {
  const r = await fetch("/api/session", { method: "POST", body: token.trim(), credentials: "same-origin" });
  if (r.status === 204) return null;
  const body = await r.json().catch(() => ({}));
  return body.error || say("dash_hub_answered", { n: r.status });
}

function drawChart(data) {
  const weeks = data.volume.filter((v) => v.granularity === "week" && v.packages !== 0);
  const periods = [...new Set(weeks.map((v) => v.period))].sort();
  const flows = [...new Set(weeks.map((v) => `${kind(v.from_kind)} → ${kind(v.to_kind)}`))].sort();
  const box = $("chart");
  box.replaceChildren();
  if (periods.length === 0) {
    box.append(el("p", { class: "hint" }, say("dash_nothing_weeks")));
    return;
  }
  const max = Math.max(data.threshold, ...weeks.map((v) => amount(v.packages)));
  // Drawn at the width it is shown at, so its text stays readable on a phone.
  const W = Math.max(320, Math.min(960, box.clientWidth - 14)), H = 260, left = 40, bottom = 36, top = 16;
  const group = (W - left - 10) / periods.length;
  const bar = Math.min(38, (group - 8) / flows.length);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": say("dash_per_week") });
  const y = (n) => H - bottom - (n / max) * (H - bottom - top);
  for (const t of [0, Math.round(max / 2), max]) {
    chart.append(svg("line", { x1: left, x2: W - 10, y1: y(t), y2: y(t), stroke: "#dfe3ea" }));
    chart.append(svg("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6478" }, String(t)));
  }
  periods.forEach((p, i) => {
    const x0 = left + i * group + (group - bar * flows.length) / 2;
    flows.forEach((f, j) => {
      const row = weeks.find((v) => v.period === p && `${kind(v.from_kind)} → ${kind(v.to_kind)}` === f);
      if (!row) return;
      const v = row.packages;
      const h = hidden(v) ? 4 : H - bottom - y(v);
      const x = x0 + j * bar;
      chart.append(svg("rect", {
        x, y: H - bottom - h, width: bar - 2, height: h, rx: 2,
        fill: COLORS[j % COLORS.length], "fill-opacity": hidden(v) ? 0.35 : 1,
      }));
      chart.append(svg("text", {
        x: x + (bar - 2) / 2, y: H - bottom - h - 4, "text-anchor": "middle", "font-size": 11,
        fill: "#1d2433", "data-testid": `week-${p}-${row.from_kind}-${row.to_kind}`,
      }, String(v)));
    });
    chart.append(svg("text", { x: left + i * group + group / 2, y: H - bottom + 16, "text-anchor": "middle", "font-size": 11, fill: "#5b6478" }, p));
  });
  box.append(chart);
  const legend = el("div", { class: "legend" });
  flows.forEach((f, j) => {
    const swatch = el("i");
    swatch.setAttribute("data-color", COLORS[j % COLORS.length]);
    legend.append(el("span", {}, swatch, f));
  });
  box.append(legend);
  // Colours go through the DOM, not an inline style attribute, so the strict CSP holds.
  for (const s of legend.querySelectorAll("i")) s.style.background = s.getAttribute("data-color");
}

function drawFlows(data) {
  const senders = [...new Map(data.pairs.filter((p) => p.from_kind === "school")
    .map((p) => [p.from_org, p.from_name])).entries()];
  const receivers = [...new Map(data.pairs.filter((p) => p.from_kind === "school")
    .map((p) => [p.to_org, `${p.to_name} (${kind(p.to_kind)})`])).entries()];
  const table = $("flows");
  table.replaceChildren();
  if (senders.length === 0) {
    table.append(el("tr", {}, el("td", {}, say("dash_no_school"))));
    return;
  }
  table.append(el("tr", {}, el("th", {}, say("dash_from_to")), ...receivers.map(([id, name]) => el("th", { title: name }, `${id} ${name}`))));
  for (const [from, name] of senders) {
    const cells = receivers.map(([to]) => {
      const p = data.pairs.find((x) => x.from_org === from && x.to_org === to);
      const v = p ? p.packages : 0;
      return el("td", { class: hidden(v) ? "small" : "", "data-testid": `flow-${from}-${to}` }, String(v));
    });
    table.append(el("tr", {}, el("td", {}, `${from} ${name}`), ...cells));
  }
}

function drawWaiting(data) {
  const table = $("waiting");
  table.replaceChildren(el("tr", {}, el("th", {}, say("dash_organisation")), el("th", {}, say("dash_under_day")),
    el("th", {}, say("dash_days_1_7")), el("th", {}, say("dash_over_7")), el("th", {}, say("dash_risk_column"))));
  if (data.waiting.length === 0) {
    table.append(el("tr", {}, el("td", {}, say("dash_nothing_waits"))));
  }
  for (const w of data.waiting) {
    const cell = (key, v) => el("td", { class: hidden(v) ? "small" : "", "data-testid": `waiting-${w.org_id}-${key}` }, String(v));
    table.append(el("tr", {},
      el("td", {}, `${w.org_id} ${w.name}`),
      cell("day", w.under_1_day), cell("week", w.from_1_to_7_days), cell("older", w.over_7_days),
      el("td", {}, w.at_risk ? el("span", { class: "badge", "data-testid": `risk-${w.org_id}` }, say("dash_at_risk_badge")) : "")));
  }
}

function render(data) {
  $("who").hidden = false;
  document.querySelector("[data-testid=signed-in-as]").textContent = say("dash_signed_in_as", { org: data.signed_in_as });
  const day = (t) => new Date(t * 1000).toLocaleDateString(LANG === "nl" ? "nl-NL" : "en-GB",
    { day: "numeric", month: "long", year: "numeric", timeZone: "Europe/Amsterdam" });
  document.querySelector("[data-testid=period]").textContent = say("dash_period", { from: day(data.since), to: day(data.until) });
  $("flows-hint").textContent = say("dash_flows_hint", { threshold: data.threshold });
  const set = (id, v) => { document.querySelector(`[data-testid=${id}]`).textContent = String(v); };
  const packages = data.kinds.find((k) => k.kind === "package");
  set("total-packages", packages ? packages.envelopes : 0);
  // Pulls beside pushes: how often a recipient asked for a passport itself.
  const pulls = data.kinds.find((k) => k.kind === "pull_request");
  set("pulls", pulls ? pulls.envelopes : 0);
  const lat = data.ack_latency;
  // A time in the card, or a dash: a count of pick-ups is no time.
  set("median", lat.median_secs === null ? "–" : duration(lat.median_secs));
  set("p90", lat.p90_secs === null
    ? `${say("dash_too_few")} (${say("dash_picked_up", { n: lat.acked })})`
    : say("dash_p90", { time: duration(lat.p90_secs) }));
  const risk = data.waiting.filter((w) => w.at_risk).length;
  set("at-risk", risk);
  document.querySelector("[data-testid=at-risk]").classList.toggle("alert", risk > 0);
  set("erasures", data.erasures);
  set("expiries", data.expiries);
  set("revocations", data.revocations);
  // Shown first, so the chart is drawn at the width it is shown at; drawn again when that changes.
  show("report");
  drawChart(data);
  drawFlows(data);
  drawWaiting(data);
  shownData = data;
}

let shownData = null;
let resizing = null;
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => { if (shownData) drawChart(shownData); }, 150);
});

async function load() {
  const r = await fetch("/api/stats", { credentials: "same-origin" });
  if (r.status === 401) {
    $("who").hidden = true;
    show("signin");
    return;
  }
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    $("problem").textContent = body.error || say("dash_hub_answered", { n: r.status });
    $("problem").hidden = false;
    return;
  }
  render(await r.json());
}

async function start() {
  // A link with #token=… signs in once; the token then leaves the address bar.
  const m = location.hash.match(/token=([A-Za-z0-9_-]+)/);
  if (m) {
    history.replaceState(null, "", location.pathname);
    const problem = await signIn(m[1]);
    if (problem) $("signin-error").textContent = problem;
  }
  await load();
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const problem = await signIn($("token").value);
  $("signin-error").textContent = problem || "";
  if (!problem) await load();
});
$("signout").addEventListener("click", async () => {
  await fetch("/api/session", { method: "DELETE", credentials: "same-origin" });
  await load();
});
start();
