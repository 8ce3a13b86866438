// The coordinators' dashboard as a coordinator sees it: signed in through the link with a
// token, in Dutch (the browser's language), then switched to English; and signed out. Each page
// is photographed at 1280 and 390 px, checked with axe-core and walked with Tab. Prints what it
// saw as JSON; the Rust test decides what is right.
//
//   node dashboard.mjs URL_WITH_TOKEN OUT_DIR
import { start } from "./lib.mjs";

const [link, outDir] = process.argv.slice(2);
const { browser, context, look, seen } = await start(outDir);
const base = link.split("#")[0];

const ctx = await context("nl-NL", true);
const page = await ctx.newPage();
await page.goto(link);
await page.waitForSelector("#report:not([hidden])", { timeout: 20000 });
await look(page, "dashboard");
const dutch = await page.innerText("body");
await page.getByRole("link", { name: "Read this page in English" }).focus();
await page.keyboard.press("Enter");
await page.waitForSelector("html[lang=en] #report:not([hidden])", { timeout: 20000 });
await look(page, "dashboard-en");
const english = await page.innerText("body");

const anonymous = await (await context("nl-NL", true)).newPage();
await anonymous.goto(base);
await anonymous.waitForSelector("#signin:not([hidden])", { timeout: 20000 });
await look(anonymous, "dashboard-sign-in");
const signIn = await anonymous.innerText("body");

await browser.close();
console.log(JSON.stringify({ ...seen, dutch, english, signIn }));
