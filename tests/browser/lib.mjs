// What the browser tests share: Debian's headless Chromium through playwright-core, a fresh
// profile per person, and `look`, which photographs a page at 1280 and 390 px and checks it
// with axe-core for WCAG 2.1 A and AA, keeping what it saw for the Rust test to judge.
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

export async function start(outDir) {
  mkdirSync(outDir, { recursive: true });
  const require = createRequire(import.meta.url);
  const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
  const browser = await chromium.launch({
    executablePath: process.env.OVERSTAP_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const seen = { pages: [], posts: [], csp: null };

  // axe-core is injected by the test, past the page's own content policy (which allows only
  // the site's own scripts); the policy itself is read from the response headers.
  const context = (lang) => browser.newContext({ bypassCSP: true, locale: lang, viewport: { width: 1280, height: 900 } });

  async function look(page, name) {
    const shots = [];
    for (const [width, height] of [[1280, 900], [390, 844]]) {
      await page.setViewportSize({ width, height });
      const path = `${outDir}/${name}-${width}.png`;
      await page.screenshot({ path, fullPage: true });
      shots.push(path);
    }
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.addScriptTag({ content: axeSource });
    const result = await page.evaluate(() => window.axe.run(document, {
      runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] },
    }));
    seen.pages.push({
      name,
      url: page.url(),
      title: await page.title(),
      text: (await page.innerText("main")).slice(0, 2000),
      violations: result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help })),
      shots,
    });
  }

  // Opens `url` again until its main text has `words` (what another person or process does
  // shows up there), for at most a minute.
  async function until(page, url, words, what) {
    for (let i = 0; i < 120; i++) {
      await page.goto(url);
      if ((await page.innerText("main")).includes(words)) return;
      await page.waitForTimeout(500);
    }
    throw new Error(`never saw ${what}`);
  }

  // The public half of the key this browser keeps in `slot`, base64.
  async function publicKey(page, slot) {
    return page.evaluate(async (slot) => {
      const db = await new Promise((ok, no) => {
        const r = indexedDB.open("overstap", 1);
        r.onsuccess = () => ok(r.result);
        r.onerror = () => no(r.error);
      });
      const k = await new Promise((ok, no) => {
        const r = db.transaction("keys").objectStore("keys").get(slot);
        r.onsuccess = () => ok(r.result);
        r.onerror = () => no(r.error);
      });
      if (!k) return null;
      const raw = new Uint8Array(await crypto.subtle.exportKey("raw", k.publicKey));
      return btoa(String.fromCharCode(...raw));
    }, slot);
  }

  return { browser, context, look, until, publicKey, seen };
}
