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
// A count as people read it here: "1.500" in Dutch, "1,500" in English; "<5" and "x" as they are.
const num = (v) => (typeof v === "number" ? v.toLocaleString(LANG === "nl" ? "nl-NL" : "en-GB") : String(v));
// For drawing only: a hidden count is drawn as a stub, never as a guess of its value.
const amount = (v) => (hidden(v) ? 0 : v);

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return say("dash_under_minute");
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

const DAY = 86400;
const MONTHS = say("dash_months_short").split(" ");

// The months from `since` up to `until`, as "2025-09", so a school year has all twelve on its axis.
function monthsOf(since, until) {
  const out = [];
  const d = new Date(since * 1000);
  let y = d.getUTCFullYear(), m = d.getUTCMonth();
  while (Date.UTC(y, m, 1) / 1000 < until && out.length < 40) {
    out.push(`${y}-${String(m + 1).padStart(2, "0")}`);
    m += 1;
    if (m === 12) { m = 0; y += 1; }
  }
  return out;
}

const periodName = (p) => {
  const [a, b] = p.split("-");
  if (b && b.startsWith("Q")) return say("dash_quarter", { q: b.slice(1), year: a });
  if (b) return say("dash_school_year", { from: a, to: b });
  return say("dash_last_year");
};
const axisLabel = (p) => /^\d{4}-\d{2}$/.test(p) ? MONTHS[Number(p.slice(5)) - 1] : p.replace(/^\d{4}-/, "");

// A bar chart drawn at the width it is shown at (1:1, so its 12 px text stays 12 px): one group
// per period, one bar per series; a hidden count is a light stub without height. Under it, the
// same numbers as a table.
function barChart(box, { periods, series, format, testid, caption, left = 44 }) {
  box.replaceChildren();
  const values = series.flatMap((s) => periods.map((p) => s.values.get(p)).filter((v) => v !== undefined && !hidden(v)));
  const max = Math.max(1, ...values);
  const W = Math.max(280, Math.min(960, box.clientWidth - 14)), H = 240, bottom = 34, top = 20;
  const group = (W - left - 8) / periods.length;
  const bar = Math.max(2, Math.min(34, (group - 4) / series.length));
  // A value is written over its bar only where it fits.
  const fits = (text, small) => text.length * 7 <= bar + (small ? 0 : 4);
  const chart = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": caption });
  const y = (n) => H - bottom - (n / max) * (H - bottom - top);
  for (const t of [0, max / 2, max]) {
    chart.append(svg("line", { x1: left, x2: W - 8, y1: y(t), y2: y(t), stroke: "#dfe3ea" }));
    chart.append(svg("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end", "font-size": 12, fill: "#5b6478" }, format(t, true)));
  }
  const every = Math.ceil(periods.length / Math.max(1, Math.floor((W - left) / 34)));
  periods.forEach((p, i) => {
    const x0 = left + i * group + (group - bar * series.length) / 2;
    series.forEach((s, j) => {
      const v = s.values.get(p);
      if (v === undefined) return;
      const h = hidden(v) ? 3 : H - bottom - y(v);
      const x = x0 + j * bar;
      chart.append(svg("rect", {
        x, y: H - bottom - h, width: Math.max(1, bar - 2), height: h, rx: 2,
        fill: s.color, "fill-opacity": hidden(v) ? 0.35 : 1,
      }));
      const label = hidden(v) ? String(v) : format(v, false);
      if (fits(label, hidden(v))) {
        chart.append(svg("text", { x: x + (bar - 2) / 2, y: H - bottom - h - 4, "text-anchor": "middle", "font-size": 12, fill: "#1d2433" }, label));
      }
    });
    if (i % every === 0) {
      chart.append(svg("text", { x: left + i * group + group / 2, y: H - bottom + 18, "text-anchor": "middle", "font-size": 12, fill: "#5b6478" }, axisLabel(p)));
    }
  });
  box.append(chart);
  const legend = el("div", { class: "legend" });
  for (const s of series) {
    const swatch = el("i");
    swatch.setAttribute("data-color", s.color);
    legend.append(el("span", {}, swatch, s.name));
  }
  box.append(legend);
  // Colours go through the DOM, not an inline style attribute, so the strict CSP holds.
  for (const sw of legend.querySelectorAll("i")) sw.style.background = sw.getAttribute("data-color");
  // The numbers themselves, for a screen reader and for whoever wants them exact.
  const table = el("table", { "data-testid": `${testid}-table` });
  table.append(el("tr", {}, el("th", { scope: "col" }, say("dash_print_month")), ...series.map((s) => el("th", { scope: "col" }, s.name))));
  for (const p of periods) {
    table.append(el("tr", {}, el("th", { scope: "row" }, p),
      ...series.map((s) => {
        const v = s.values.get(p);
        return el("td", { "data-testid": `${testid}-${p}-${s.key}` }, v === undefined ? "0" : hidden(v) ? String(v) : format(v, false));
      })));
  }
  const details = el("details", {}, el("summary", {}, say("dash_show_numbers")), el("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": caption }, table));
  box.append(details);
}

function drawChart(data) {
  const long = data.until - data.since > 120 * DAY;
  const g = long ? "month" : "week";
  $("volume-title").textContent = say(long ? "dash_per_month" : "dash_per_week");
  const rows = data.volume.filter((v) => v.granularity === g);
  const flows = [...new Set(rows.filter((v) => v.packages !== 0).map((v) => `${v.from_kind}>${v.to_kind}`))].sort();
  const box = $("chart");
  if (flows.length === 0) {
    box.replaceChildren(el("p", { class: "hint" }, say("dash_nothing_weeks")));
    return;
  }
  const periods = long ? monthsOf(data.since, data.until) : [...new Set(rows.map((v) => v.period))].sort();
  const series = flows.map((f, j) => {
    const [from, to] = f.split(">");
    const values = new Map(rows.filter((v) => v.from_kind === from && v.to_kind === to).map((v) => [v.period, v.packages]));
    return { key: `${from}-${to}`, name: `${kind(from)} → ${kind(to)}`, color: COLORS[j % COLORS.length], values };
  });
  barChart(box, { periods, series, testid: "volume", caption: $("volume-title").textContent,
    format: (v, axis) => num(axis ? Math.round(v) : v) });
}

function drawPickup(data) {
  const box = $("pickup");
  if (data.pickup.length === 0) {
    box.replaceChildren(el("p", { class: "hint" }, say("dash_nothing_weeks")));
    return;
  }
  const periods = data.until - data.since > 120 * DAY ? monthsOf(data.since, data.until) : data.pickup.map((p) => p.period);
  const secs = (key) => new Map(data.pickup.map((p) => [p.period, p[key] === null ? say("dash_pickup_too_few") : p[key]]));
  barChart(box, {
    periods, testid: "pickup", caption: say("dash_pickup"),
    series: [
      { key: "median", name: say("dash_pickup_median"), color: COLORS[0], values: secs("median_secs") },
      { key: "p90", name: say("dash_pickup_p90"), color: COLORS[2], values: secs("p90_secs") },
    ],
    format: (v) => duration(Math.round(v)),
    left: 70,
  });
}

function drawDropouts(data) {
  const table = $("dropouts");
  table.replaceChildren(el("tr", {}, el("th", {}, say("dash_organisation")), el("th", {}, say("dash_packages")),
    el("th", {}, say("dash_late")), el("th", {}, say("dash_not_picked_up")), el("th", {}, say("dash_no_intake"))));
  if (data.dropouts.length === 0) {
    table.append(el("tr", {}, el("td", {}, say("dash_no_dropouts"))));
  }
  const weight = (v) => (hidden(v) ? 0.5 : v);
  const rows = [...data.dropouts].sort((a, b) => weight(b.not_picked_up) - weight(a.not_picked_up)
    || weight(b.no_intake) - weight(a.no_intake) || weight(b.late) - weight(a.late));
  for (const d of rows) {
    const cell = (key, v) => el("td", { class: hidden(v) ? "small" : "", "data-testid": `dropout-${d.org_id}-${key}` }, num(v));
    const name = el("td", {}, `${d.org_id} ${d.name} `);
    if (d.not_picked_up !== 0) name.append(el("span", { class: "badge" }, say("dash_at_risk_badge")));
    table.append(el("tr", {}, name, cell("packages", d.packages), cell("late", d.late), cell("never", d.not_picked_up),
      cell("nointake", d.no_intake)));
  }
}

// Under a table wider than its box, a line says how to see the rest.
function scrollHints() {
  for (const box of document.querySelectorAll("#report > .scroll")) {
    const hint = box.nextElementSibling;
    if (hint && hint.classList.contains("scroll-hint")) hint.hidden = box.scrollWidth <= box.clientWidth + 1;
  }
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
      return el("td", { class: hidden(v) ? "small" : "", "data-testid": `flow-${from}-${to}` }, num(v));
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
    const cell = (key, v) => el("td", { class: hidden(v) ? "small" : "", "data-testid": `waiting-${w.org_id}-${key}` }, num(v));
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
  $("legend").textContent = say("dash_legend", { threshold: data.threshold });
  const choice = $("period");
  choice.replaceChildren(el("option", { value: "" }, say("dash_last_year")),
    ...data.periods.map((p) => el("option", { value: p }, periodName(p))));
  if (data.period && !data.periods.includes(data.period)) choice.append(el("option", { value: data.period }, periodName(data.period)));
  choice.value = data.period || "";
  const query = data.period ? `?period=${encodeURIComponent(data.period)}` : "";
  $("csv").href = `/api/export.csv${query}`;
  $("print").href = `/print${query}${query ? "&" : "?"}lang=${LANG}`;
  const set = (id, v) => { document.querySelector(`[data-testid=${id}]`).textContent = num(v); };
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
  drawPickup(data);
  drawDropouts(data);
  drawFlows(data);
  drawWaiting(data);
  scrollHints();
  shownData = data;
}

let shownData = null;
let resizing = false;
// Drawn again at the new width before the next frame is painted.
window.addEventListener("resize", () => {
  if (resizing || !shownData) return;
  resizing = true;
  requestAnimationFrame(() => {
    resizing = false;
    drawChart(shownData);
    drawPickup(shownData);
    scrollHints();
  });
});

// The period asked for in the address (?period=2025-2026), or the last twelve months.
let period = new URLSearchParams(location.search).get("period") || "";

async function load() {
  const query = period ? `?period=${encodeURIComponent(period)}` : "";
  const r = await fetch(`/api/stats${query}`, { credentials: "same-origin" });
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
    history.replaceState(null, "", location.pathname + location.search);
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
$("period").addEventListener("change", async (e) => {
  period = e.target.value;
  const url = new URL(location.href);
  if (period) url.searchParams.set("period", period); else url.searchParams.delete("period");
  history.replaceState(null, "", url);
  await load();
});
$("period-form").addEventListener("submit", (e) => e.preventDefault());
$("signout").addEventListener("click", async () => {
  await fetch("/api/session", { method: "DELETE", credentials: "same-origin" });
  await load();
});
start();
