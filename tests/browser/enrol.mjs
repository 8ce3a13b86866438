// A mentor enrols a student in the web app, as two people do it in two browsers: the mentor
// signs in and invites; the student opens the link in a browser of their own, which makes the
// key; both read the short code; the mentor confirms. The student then signs in with that key
// and fills in the passport. Every page is looked at at 1280 and 390
// px (screenshots) and checked with axe-core for WCAG 2.1 A and AA. The forms are filled with
// the keyboard alone. Then the receiving side: an intaker at the college signs in through the
// college's identity provider, reads the passport and plans the intake, which the school's
// handovers page and the student's trail show. Prints what it saw as JSON; the Rust test
// decides what is right.
//
//   COLLEGE_URL=… IDP_LOGIN=… COLLEGE_ADMIN=… node enrol.mjs BASE_URL USER PASSWORD OUT_DIR
import { existsSync } from "node:fs";
import { start } from "./lib.mjs";

const [base, user, password, outDir] = process.argv.slice(2);
const { browser, context, look, until, camera, seen } = await start(outDir);

// The mentor, in Dutch.
const mentorCtx = await context("nl-NL");
const mentor = await mentorCtx.newPage();
const first = await mentor.goto(base + "/");
seen.csp = first.headers()["content-security-policy"] || null;
await look(mentor, "home");
await mentor.getByRole("link", { name: "Inloggen" }).focus();
await mentor.keyboard.press("Enter");
await mentor.waitForURL("**/login");
await look(mentor, "sign-in");
await mentor.focus("#username");
await mentor.keyboard.type(user);
await mentor.keyboard.press("Tab");
await mentor.keyboard.type(password);
await mentor.keyboard.press("Enter");
await mentor.waitForURL("**/mentor");
await look(mentor, "mentor");
await mentor.focus("#name");
await mentor.keyboard.type("Sam de Vries");
await mentor.keyboard.press("Tab");
await mentor.keyboard.type("4B");
await mentor.fill("#birth_month", process.env.BIRTH_MONTH || "2008-03");
await mentor.focus("#birth_month");
await mentor.keyboard.press("Enter");
await mentor.waitForURL("**/mentor/invitations/*");
await look(mentor, "invitation");
const link = await mentor.getAttribute(".link a", "href");

// The student, in another browser profile, on a phone.
const studentCtx = await context("nl-NL");
studentCtx.on("request", (r) => {
  if (r.method() !== "GET") seen.posts.push({ url: r.url(), body: r.postData() });
});
const student = await studentCtx.newPage();
await student.setViewportSize({ width: 390, height: 844 });
await student.goto(link);
await look(student, "enrol");
await student.focus("#make-key");
await student.keyboard.press("Enter");
await student.waitForSelector("#step-code:not([hidden])", { timeout: 20000 });
const studentCode = (await student.textContent("#code")).trim();
await look(student, "enrol-code");

// What the student's browser holds: the private key must not come out, in any format.
const key = await student.evaluate(async () => {
  const db = await new Promise((ok, no) => {
    const r = indexedDB.open("overstap", 1);
    r.onsuccess = () => ok(r.result);
    r.onerror = () => no(r.error);
  });
  const k = await new Promise((ok, no) => {
    const r = db.transaction("keys").objectStore("keys").get("student");
    r.onsuccess = () => ok(r.result);
    r.onerror = () => no(r.error);
  });
  const refused = [];
  for (const format of ["pkcs8", "jwk", "raw"]) {
    try { await crypto.subtle.exportKey(format, k.privateKey); } catch (_) { refused.push(format); }
  }
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", k.publicKey));
  const signature = new Uint8Array(await crypto.subtle.sign("Ed25519", k.privateKey, new TextEncoder().encode("overstap")));
  return {
    algorithm: k.privateKey.algorithm.name,
    extractable: k.privateKey.extractable,
    refused,
    public: btoa(String.fromCharCode(...raw)),
    signature: btoa(String.fromCharCode(...signature)),
  };
});

// The mentor's page notices the key by itself and shows the code to compare.
await mentor.waitForSelector("p.code", { timeout: 20000 });
const mentorCode = (await mentor.textContent("p.code")).trim();
await look(mentor, "compare");
await mentor.getByRole("button", { name: "Ja, de codes zijn gelijk" }).focus();
await mentor.keyboard.press("Enter");
await mentor.waitForSelector("p.done", { timeout: 20000 });
await look(mentor, "enrolled");
await student.waitForSelector("#done:not([hidden])", { timeout: 20000 });
await look(student, "enrol-done");

// The student signs in with the key on this device and fills in the passport: an answer, a
// smiley, Save; the answer is there again after a reload.
await student.getByRole("link", { name: "Naar mijn paspoort" }).focus();
await student.keyboard.press("Enter");
await student.waitForURL("**/student");
await look(student, "student-sign-in");
await student.focus("#sign-in-with-key");
await student.keyboard.press("Enter");
await student.waitForURL("**/student/passport", { timeout: 20000 });
await look(student, "passport");
const answer = "Ik ben Sam. Ik sleutel graag aan brommers.";
await student.focus("textarea[name='a.wie-ben-ik.over-mij']");
await student.keyboard.type(answer);
await student.focus("input[name='s.wie-ben-ik.vrije-tijd'][value='blij']");
await student.keyboard.press("Space");
await student.getByRole("button", { name: "Opslaan" }).focus();
await student.keyboard.press("Enter");
await student.waitForSelector("#saved");
await student.waitForFunction(() => document.querySelector("#saved").textContent.includes("Opgeslagen"));
await look(student, "passport-saved");
await student.reload();
const kept = await student.inputValue("textarea[name='a.wie-ben-ik.over-mij']");
const smiley = await student.isChecked("input[name='s.wie-ben-ik.vrije-tijd'][value='blij']");

// Signing. First a page whose words were changed on the way: its own check refuses to sign.
await student.route("**/student/sign", async (route) => {
  const response = await route.fetch();
  const body = (await response.text()).replace("brommers", "scooters");
  await route.fulfill({ response, body });
});
await student.goto(base + "/student/sign");
await student.waitForSelector("#check-failed:not([hidden])", { timeout: 20000 });
const tamperedDisabled = await student.isDisabled("#sign-with-key");
await look(student, "sign-tampered");
await student.unroute("**/student/sign");
// Then the real page, reached from the passport by keyboard: checked, signed with the key.
await student.goto(base + "/student/passport");
await student.getByRole("link", { name: "Bekijk en onderteken" }).focus();
await student.keyboard.press("Enter");
await student.waitForURL("**/student/sign");
await student.waitForSelector("#sign-with-key:not([disabled])", { timeout: 20000 });
await look(student, "sign");
await student.focus("#sign-with-key");
await student.keyboard.press("Enter");
await student.waitForFunction(() => document.querySelector("#checking").textContent.includes("ondertekend"), null, { timeout: 20000 });
const signedMessage = (await student.textContent("#checking")).trim();
await look(student, "signed");

// Consent: the mbo college may read one part for the intake, until a date; checked and signed.
await student.getByRole("link", { name: "Toestemming geven" }).focus();
await student.keyboard.press("Enter");
await student.waitForURL("**/student/consent");
await look(student, "consent");
await student.focus("#to-30RT");
await student.keyboard.press("Space");
await student.focus("#part-personalia");
await student.keyboard.press("Space");
await student.focus("#part-wie-ben-ik");
await student.keyboard.press("Space");
await student.focus("#for-intake");
await student.keyboard.press("Space");
await student.fill("#until", process.env.UNTIL || "2027-08-01");
await student.getByRole("button", { name: "Verder" }).focus();
await student.keyboard.press("Enter");
await student.waitForSelector("#sign-with-key:not([disabled])", { timeout: 20000 });
await look(student, "consent-review");
await student.focus("#sign-with-key");
await student.keyboard.press("Enter");
await student.waitForFunction(() => document.querySelector("#checking").textContent.includes("toestemming gegeven"), null, { timeout: 20000 });
const consentMessage = (await student.textContent("#checking")).trim();
await look(student, "consent-given");

// The mentor sees the class, every step of Sam's, and sends the class's passports.
await mentor.goto(base + "/mentor");
await look(mentor, "class");
await mentor.getByRole("button", { name: "Stuur de paspoorten van mijn klas" }).focus();
await mentor.keyboard.press("Enter");
await mentor.waitForSelector("section p.done");
const classSent = (await mentor.textContent("section p.done")).trim();
await look(mentor, "class-sent");

// The student follows it in the trail, and once the Rust test has checked what the mbo college
// holds, withdraws the consent; the college erases and its signed receipt comes back.
await until(student, base + "/student/trail", "heeft je paspoort ontvangen", "the delivery in the trail");
await look(student, "trail");

// The college: the intaker signs in with the college's own account (a real OpenID provider,
// started by the Rust test, stands in for SURFconext), finds Sam by name, reads the passport
// and plans the intake.
const college = process.env.COLLEGE_URL;
const intakerCtx = await context("nl-NL");
const intaker = await intakerCtx.newPage();
await intaker.goto(college + "/login");
await look(intaker, "college-sign-in");
await intaker.getByRole("link", { name: "Inloggen met SURFconext" }).focus();
await intaker.keyboard.press("Enter");
await intaker.waitForSelector("#login");
await intaker.focus("#login");
await intaker.keyboard.type(process.env.IDP_LOGIN);
await intaker.keyboard.press("Enter");
await intaker.waitForURL("**/inbox", { timeout: 20000 });
await look(intaker, "inbox");
await intaker.focus("#q");
await intaker.keyboard.type("sam");
await intaker.keyboard.press("Enter");
await intaker.waitForURL("**/inbox?*");
await intaker.getByRole("link", { name: "Sam de Vries" }).focus();
await intaker.keyboard.press("Enter");
await intaker.waitForURL("**/inbox/*");
const passportUrl = intaker.url();
const passportText = await intaker.innerText("main");
await look(intaker, "inbox-passport");
await intaker.getByLabel("Intake gepland").focus();
await intaker.keyboard.press("Space");
await intaker.getByRole("button", { name: "Opslaan" }).focus();
await intaker.keyboard.press("Enter");
await intaker.waitForURL("**/inbox?set=*");
const intakeSaved = (await intaker.textContent("p.done")).trim();
await look(intaker, "inbox-saved");

// The school: the mentor's handovers page and the student's trail show the intake.
await until(mentor, base + "/handovers", "Intake gepland", "the intake on the handovers page");
const handoversText = await mentor.innerText("main");
await look(mentor, "handovers");
await until(student, base + "/student/trail", "intake gepland", "the intake in the trail");
await look(student, "trail-intake");

// At the intake Sam makes a pickup code on the phone and reads it out; the intaker types it,
// and the college fetches the passport with it.
await student.goto(base + "/student/consents");
await student.getByRole("link", { name: "Maak een ophaalcode" }).focus();
await student.keyboard.press("Enter");
await student.waitForURL("**/student/pickup/*");
const pickupUrl = student.url();
await look(student, "pickup");
await student.focus("#make-code");
await student.keyboard.press("Enter");
await student.waitForSelector("#pickup-code:not([hidden])", { timeout: 20000 });
const pickupCode = (await student.textContent("#pickup-code")).trim();
await look(student, "pickup-made");
await intaker.goto(college + "/inbox");
await intaker.focus("#code");
await intaker.keyboard.type(pickupCode.toLowerCase());
await intaker.keyboard.press("Enter");
await intaker.waitForURL("**/inbox?asked=code");
await look(intaker, "inbox-code-asked");
await until(student, base + "/student/trail", "met jouw ophaalcode", "the fetch with the code in the trail");

// At a second meeting Sam shows the QR code of a new code; the intaker's laptop camera reads
// it off the phone's screen and the college fetches with it, no typing.
await student.goto(pickupUrl);
await student.focus("#make-code");
await student.keyboard.press("Enter");
await student.waitForSelector("#pickup-qr:not([hidden])", { timeout: 20000 });
await look(student, "pickup-qr");
await student.setViewportSize({ width: 390, height: 844 });
const shownCode = (await student.textContent("#pickup-code")).trim();
const cameraBrowser = await camera(student, await student.locator("#pickup-qr").screenshot(), "pickup-qr");
const scannerCtx = await cameraBrowser.newContext({
  locale: "nl-NL", viewport: { width: 1280, height: 900 }, storageState: await intakerCtx.storageState(),
});
await scannerCtx.grantPermissions(["camera"], { origin: new URL(college).origin });
const scanner = await scannerCtx.newPage();
await scanner.goto(college + "/inbox");
await scanner.getByRole("button", { name: "Scan de QR-code met de camera" }).focus();
await scanner.keyboard.press("Enter");
await scanner.waitForURL("**/inbox?asked=code", { timeout: 20000 });
await cameraBrowser.close();
let trailCodeText = "";
for (let i = 0; i < 120; i++) {
  await student.goto(base + "/student/trail");
  trailCodeText = await student.innerText("main");
  if (trailCodeText.split("met jouw ophaalcode").length > 2) break;
  await student.waitForTimeout(500);
}
for (let i = 0; i < 240 && !existsSync(`${outDir}/checked`); i++) await student.waitForTimeout(250);
await student.goto(base + "/student/consents");
await student.getByRole("link", { name: "Intrekken" }).focus();
await student.keyboard.press("Enter");
await student.waitForSelector("#sign-with-key:not([disabled])", { timeout: 20000 });
await look(student, "withdraw");
await student.focus("#sign-with-key");
await student.keyboard.press("Enter");
await student.waitForFunction(() => document.querySelector("#checking").textContent.includes("ingetrokken"), null, { timeout: 20000 });
await look(student, "withdrawn");
await until(student, base + "/student/consents", "Gewist, met bewijs", "the deletion receipt");
await look(student, "consents-erased");
await student.goto(base + "/student/trail");
const trailText = await student.innerText("main");
await look(student, "trail-erased");

// The intaker's passport page now says it was erased, and when; the college's admin (a local
// account) reads in the audit who read it and planned the intake.
await intaker.goto(passportUrl);
const erasedText = await intaker.innerText("main");
await look(intaker, "inbox-erased");
const adminCtx = await context("nl-NL");
const admin = await adminCtx.newPage();
await admin.goto(college + "/login");
await admin.focus("#username");
await admin.keyboard.type(process.env.COLLEGE_ADMIN);
await admin.keyboard.press("Tab");
await admin.keyboard.type(password);
await admin.keyboard.press("Enter");
await admin.waitForURL("**/audit");
const auditText = await admin.innerText("main");
await look(admin, "audit");

// Another device, without the key: signing in says kindly what happened.
const strangerCtx = await context("nl-NL");
const stranger = await strangerCtx.newPage();
await stranger.goto(base + "/student");
await stranger.click("#sign-in-with-key");
await stranger.waitForSelector("#no-key:not([hidden])");
await look(stranger, "student-no-key");

// The same link, opened again, is used up.
const again = await (await context("en-GB")).newPage();
const reused = await again.goto(link);
await look(again, "link-used");

// A cheap phone on a slow connection: each page's weight (everything it loads) and its load
// time with the browser's own throttling (400 kbit/s each way, 400 ms round trips), fresh cache.
const weights = [];
for (const path of ["/", "/login", "/student"]) {
  const ctx = await context("nl-NL");
  const page = await ctx.newPage();
  const cdp = await ctx.newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false, latency: 400, downloadThroughput: 50 * 1024, uploadThroughput: 50 * 1024,
  });
  await page.goto(base + path, { waitUntil: "load" });
  const m = await page.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    const res = performance.getEntriesByType("resource");
    return {
      bytes: nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0),
      ms: Math.round(nav.loadEventEnd - nav.startTime),
      requests: 1 + res.length,
    };
  });
  weights.push({ path, ...m });
  await ctx.close();
}
seen.weights = weights;

await browser.close();
console.log(JSON.stringify({
  ...seen,
  studentCode,
  mentorCode,
  kept,
  smiley,
  tamperedDisabled,
  signedMessage,
  consentMessage,
  trailText,
  classSent,
  passportText,
  intakeSaved,
  pickupCode,
  shownCode,
  trailCodeText,
  handoversText,
  erasedText,
  auditText,
  key,
  reusedStatus: reused.status(),
}));
