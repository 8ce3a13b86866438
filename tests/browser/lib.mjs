// What the browser tests share: Debian's headless Chromium through playwright-core, a fresh
// profile per person, and `look`, which photographs a page at 1280 and 390 px and checks it
// with axe-core for WCAG 2.1 A and AA, keeping what it saw for the Rust test to judge.
import { readFileSync, mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

export async function start(outDir) {
  mkdirSync(outDir, { recursive: true });
  const require = createRequire(import.meta.url);
  const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
  const launch = (more = []) => chromium.launch({
    executablePath: process.env.OVERSTAP_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync", ...more],
  });
  const browser = await launch();
  const seen = { pages: [], posts: [], csp: null };

  // axe-core is injected by the test, past the page's own content policy (which allows only
  // the site's own scripts); the policy itself is read from the response headers.
  // `https`: the hub's dashboard, whose certificate comes from the region's own CA.
  const context = (lang, https = false) => browser.newContext({
    bypassCSP: true, locale: lang, viewport: { width: 1280, height: 900 }, ignoreHTTPSErrors: https,
  });

  async function look(page, name) {
    const shots = [];
    for (const [width, height] of [[1280, 900], [390, 844]]) {
      await page.setViewportSize({ width, height });
      const path = `${outDir}/${name}-${width}.png`;
      await page.screenshot({ path, fullPage: true });
      shots.push(path);
    }
    await page.setViewportSize({ width: 1280, height: 900 });
    const keyboard = await walk(page);
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
      keyboard,
      shots,
    });
  }

  // The keyboard alone: Tab from the top of the page until focus comes round again. Every
  // visible control must be reached (a group of radio buttons once, as Tab does), and each
  // must show where the focus is.
  async function walk(page) {
    await page.evaluate(() => {
      const mark = (el, i) => el.setAttribute("data-walk", String(i));
      const visible = (el) => el.offsetParent !== null || el.getClientRects().length > 0;
      const controls = [...document.querySelectorAll(
        "a[href], button, input:not([type=hidden]), textarea, select, summary")]
        .filter((el) => visible(el) && !el.disabled && !el.closest("[hidden]")
          // Inside a closed <details> only its summary is there, until it is opened.
          && !(el.closest("details:not([open])") && el.tagName !== "SUMMARY"));
      for (const el of document.querySelectorAll("[data-walk]")) el.removeAttribute("data-walk");
      controls.forEach(mark);
      // Tab starts from the top: from a mark placed first in the page, then taken away.
      const start = document.createElement("span");
      start.tabIndex = -1;
      start.id = "walk-start";
      document.body.prepend(start);
      start.focus();
    });
    const reached = new Set();
    const unmarked = [];
    let noOutline = [];
    // Until the focus leaves the page (past its last control), as a person tabbing through it.
    for (let i = 0; i < 120; i++) {
      await page.keyboard.press("Tab");
      const at = await page.evaluate(() => {
        const el = document.activeElement;
        if (!el || el === document.body) return null;
        const style = getComputedStyle(el);
        const shown = (style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0)
          || style.boxShadow !== "none";
        return {
          walk: el.getAttribute("data-walk"),
          radio: el.type === "radio" ? el.name : null,
          what: `${el.tagName.toLowerCase()} ${el.id || el.name || el.textContent.trim().slice(0, 30)}`,
          shown,
        };
      });
      if (!at) break;
      if (at.walk === null) { unmarked.push(at.what); continue; }
      // A month field takes several Tabs (month, then year); it counts once.
      if (reached.has(at.walk)) continue;
      reached.add(at.walk);
      if (at.radio) reached.add(`radio:${at.radio}`);
      if (!at.shown) noOutline.push(at.what);
    }
    await page.evaluate(() => document.getElementById("walk-start").remove());
    const unreached = await page.evaluate((reached) => {
      const done = new Set(reached);
      return [...document.querySelectorAll("[data-walk]")]
        .filter((el) => !done.has(el.getAttribute("data-walk"))
          && !(el.type === "radio" && done.has(`radio:${el.name}`)))
        .map((el) => `${el.tagName.toLowerCase()} ${el.id || el.name || el.textContent.trim().slice(0, 30)}`);
    }, [...reached]);
    return { reached: reached.size, unreached, noOutline };
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

  // A second Chromium whose camera films `shot` (a PNG of what a screen shows): Chromium's own
  // fake camera plays a Y4M file, made here from the picture's pixels, grey, centred on white
  // in a 640 × 480 frame. The pixels are read by decoding the PNG in `page`.
  async function camera(page, shot, name) {
    const [w, h] = [640, 480];
    const grey = await page.evaluate(async ({ png, w, h }) => {
      const img = new Image();
      img.src = `data:image/png;base64,${png}`;
      await img.decode();
      const canvas = document.createElement("canvas");
      canvas.width = w;
      canvas.height = h;
      const ctx = canvas.getContext("2d");
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, w, h);
      const scale = Math.min(1, (h - 40) / img.height, (w - 40) / img.width);
      const [iw, ih] = [img.width * scale, img.height * scale];
      ctx.drawImage(img, (w - iw) / 2, (h - ih) / 2, iw, ih);
      const rgba = ctx.getImageData(0, 0, w, h).data;
      const y = new Uint8Array(w * h);
      for (let i = 0; i < w * h; i++) {
        y[i] = Math.round(0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2]);
      }
      let out = "";
      for (let i = 0; i < y.length; i += 8192) out += String.fromCharCode(...y.subarray(i, i + 8192));
      return btoa(out);
    }, { png: shot.toString("base64"), w, h });
    const frame = Buffer.concat([
      Buffer.from("FRAME\n"), Buffer.from(grey, "base64"), Buffer.alloc(w * h / 2, 128),
    ]);
    const path = `${outDir}/${name}.y4m`;
    writeFileSync(path, Buffer.concat([Buffer.from(`YUV4MPEG2 W${w} H${h} F30:1 Ip A1:1 C420jpeg\n`), frame]));
    return launch(["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      `--use-file-for-fake-video-capture=${path}`]);
  }

  return { browser, context, look, until, publicKey, camera, seen };
}
