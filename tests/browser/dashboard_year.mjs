// A coordinator reads a school year: the dashboard of the year region, in Dutch, at 1280 and
// 390 px (axe-core, keyboard, screenshots); every number the page shows is collected by its
// test id, the CSV export is downloaded as the browser would, the printable page is opened from
// its link, and another period is chosen with the keyboard. Prints what it saw as JSON; the Rust
// test holds it against the traffic that was generated.
//
//   node dashboard_year.mjs URL_WITH_PERIOD_AND_TOKEN OUT_DIR
import { start } from "./lib.mjs";

const [link, outDir] = process.argv.slice(2);
const { browser, context, look, seen } = await start(outDir);

const ctx = await context("nl-NL", true);
const page = await ctx.newPage();
await page.goto(link);
await page.waitForSelector("#report:not([hidden])", { timeout: 20000 });
await look(page, "year");
const text = await page.innerText("main");
// Every number by its test id (the tables under the charts included, open or not).
const numbers = await page.evaluate(() => Object.fromEntries(
  [...document.querySelectorAll("[data-testid]")].map((e) => [e.getAttribute("data-testid"), e.textContent.trim()])));
// At phone width: is the text of the charts as large as at laptop width, and do the wide
// tables say how to see the rest?
await page.setViewportSize({ width: 390, height: 844 });
await page.waitForTimeout(400);
const phone = await page.evaluate(() => ({
  chartFont: [...document.querySelectorAll("#chart svg text")].map((t) => t.getBoundingClientRect().height),
  chartWidth: document.querySelector("#chart svg").getBoundingClientRect().width,
  scrollHints: [...document.querySelectorAll(".scroll-hint")].filter((h) => !h.hidden).length,
}));
await page.setViewportSize({ width: 1280, height: 900 });
await page.waitForTimeout(400);
const laptop = await page.evaluate(() => ({
  chartFont: [...document.querySelectorAll("#chart svg text")].map((t) => t.getBoundingClientRect().height),
  chartWidth: document.querySelector("#chart svg").getBoundingClientRect().width,
}));

// The CSV, fetched as the download link fetches it (same cookie).
const csvHref = await page.getAttribute("#csv", "href");
const csv = await page.evaluate(async (href) => {
  const r = await fetch(href, { credentials: "same-origin" });
  return { status: r.status, type: r.headers.get("content-type"), disposition: r.headers.get("content-disposition"), body: await r.text() };
}, csvHref);

// The printable page, from its link, with the keyboard.
await page.focus("#print");
await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")]);
await page.waitForSelector("table");
await look(page, "year-print");
const print = await page.innerText("main");
await page.goBack();
await page.waitForSelector("#report:not([hidden])", { timeout: 20000 });

// Another period, chosen with the keyboard: the second quarter of the school year's spring.
const choices = await page.$$eval("#period option", (os) => os.map((o) => o.value));
const quarter = choices.find((c) => c.endsWith("-Q2") && link.includes(`period=${Number(c.slice(0, 4)) - 1}-`));
await page.focus("#period");
await page.selectOption("#period", quarter);
await page.waitForFunction((q) => location.search.includes(q), quarter);
await page.waitForFunction(() => document.querySelector("[data-testid=period]").textContent.includes("april") || document.querySelector("[data-testid=period]").textContent.includes("1 april"));
const quarterText = await page.innerText("main");
const quarterNumbers = await page.evaluate(() => Object.fromEntries(
  [...document.querySelectorAll("[data-testid]")].map((e) => [e.getAttribute("data-testid"), e.textContent.trim()])));

await browser.close();
console.log(JSON.stringify({ ...seen, text, numbers, phone, laptop, csv, print, quarter, quarterText, quarterNumbers }));
