// A student of 15, a parent and a mentor, each in a browser of their own, and a second device
// of the student's: the mentor invites; the student's phone and the parent's phone each make a
// key; the mentor compares both codes and the card is issued. The student signs the passport
// and a consent, which wait until the parent, signed in with the parent's own key, has seen
// exactly what is asked and co-signed. The student adds a laptop from the phone, and the
// laptop signs a new version. A parent link opened in the student's browser cannot sign as the
// parent. Every page is photographed at 1280 and 390 px and checked with axe-core; forms are
// used with the keyboard. Prints what it saw as JSON; the Rust test decides what is right.
//
//   BIRTH_MONTH=YYYY-MM node family.mjs BASE_URL USER PASSWORD OUT_DIR
import { start } from "./lib.mjs";

const [base, user, password, outDir] = process.argv.slice(2);
const { browser, context, look, until, publicKey, seen } = await start(outDir);
const press = async (page, locator, key = "Enter") => {
  await locator.focus();
  await page.keyboard.press(key);
};
// Saves the passport form and waits until the page is back from the save (the page already
// says "Opgeslagen" from an earlier save, so the words alone do not tell).
const save = async (page) => {
  // The form's answer is a redirect to the passport page again: its load is the one to wait for.
  await Promise.all([
    page.waitForEvent("load"),
    press(page, page.getByRole("button", { name: "Opslaan" })),
  ]);
};
// Waits for the sign box's answer (or its error) and returns what it says.
const signed = async (page) => {
  await page.waitForSelector("#sign-with-key:not([disabled])", { timeout: 20000 });
  await press(page, page.locator("#sign-with-key"));
  await page.waitForFunction(() => document.querySelector("#checking").className === "done"
    || !document.querySelector("#sign-failed").hidden, null, { timeout: 20000 });
  return (await page.textContent("#checking")).trim();
};

// The mentor invites Noor, who is 15.
const mentorCtx = await context("nl-NL");
const mentor = await mentorCtx.newPage();
await mentor.goto(base + "/login");
await mentor.focus("#username");
await mentor.keyboard.type(user);
await mentor.keyboard.press("Tab");
await mentor.keyboard.type(password);
await mentor.keyboard.press("Enter");
await mentor.waitForURL("**/mentor");
await mentor.focus("#name");
await mentor.keyboard.type("Noor Bakker");
await mentor.keyboard.press("Tab");
await mentor.keyboard.type("3A");
await mentor.fill("#birth_month", process.env.BIRTH_MONTH);
await mentor.focus("#birth_month");
await mentor.keyboard.press("Enter");
await mentor.waitForURL("**/mentor/invitations/*");
await look(mentor, "family-invitation");
const studentLink = await mentor.getAttribute("#watch > p.link a", "href");
const parentLinkMentor = await mentor.getAttribute(".parent-link a", "href");

// Noor's phone makes her key; her page shows the link for a parent too.
const phoneCtx = await context("nl-NL");
phoneCtx.on("request", (r) => {
  if (r.method() !== "GET") seen.posts.push({ who: "student", url: r.url(), body: r.postData() });
});
const phone = await phoneCtx.newPage();
await phone.setViewportSize({ width: 390, height: 844 });
await phone.goto(studentLink);
await press(phone, phone.locator("#make-key"));
await phone.waitForSelector("#step-code:not([hidden])", { timeout: 20000 });
const studentCode = (await phone.textContent("#code")).trim();
const parentLinkStudent = await phone.getAttribute(".parent-link a", "href");
await look(phone, "family-enrol-code");

// The mentor sees Noor's code, but no button yet: the card waits for a parent.
await mentor.waitForSelector("p.student-code", { timeout: 20000 });
const mentorStudentCode = (await mentor.textContent("p.student-code")).trim();
const confirmBeforeParent = await mentor.locator("form[action$='/confirm']").count();
await look(mentor, "family-waits-for-parent");

// The parent, on their own phone, in English.
const parentCtx = await context("en-GB");
parentCtx.on("request", (r) => {
  if (r.method() !== "GET") seen.posts.push({ who: "parent", url: r.url(), body: r.postData() });
});
const parent = await parentCtx.newPage();
await parent.setViewportSize({ width: 390, height: 844 });
await parent.goto(parentLinkStudent);
await look(parent, "family-parent-link");
await press(parent, parent.locator("#make-key"));
await parent.waitForSelector("#step-code:not([hidden])", { timeout: 20000 });
const parentCode = (await parent.textContent("#code")).trim();
await look(parent, "family-parent-code");

// The mentor's page notices the parent's key; both codes match; the card is issued.
await mentor.waitForSelector("p.parent-code", { timeout: 20000 });
const mentorParentCode = (await mentor.textContent("p.parent-code")).trim();
await look(mentor, "family-compare-both");
await press(mentor, mentor.getByRole("button", { name: "Ja, beide codes zijn gelijk" }));
await mentor.waitForSelector("p.done", { timeout: 20000 });
await phone.waitForSelector("#done:not([hidden])", { timeout: 20000 });
await parent.waitForSelector("#done:not([hidden])", { timeout: 20000 });
await look(parent, "family-parent-done");

// Noor signs in, fills in and signs: version 1 waits for the parent.
await phone.goto(base + "/student");
await press(phone, phone.locator("#sign-in-with-key"));
await phone.waitForURL("**/student/passport", { timeout: 20000 });
// The school filled in her name; she chooses the work track and back, keeping what she wrote.
const prefilled = await phone.inputValue("textarea[name='a.personalia.naam']");
await look(phone, "family-passport");
await press(phone, phone.getByRole("button", { name: "Aan het werk" }));
await phone.waitForSelector("textarea[name='a.werkervaring.stages']", { timeout: 20000 });
const werkTrack = await phone.innerText("main");
await press(phone, phone.getByRole("button", { name: "Naar het mbo" }));
await phone.waitForFunction(() => !document.querySelector("main").innerText.includes("Mijn werkervaring"));
const keptName = await phone.inputValue("textarea[name='a.personalia.naam']");
await phone.focus("textarea[name='a.wie-ben-ik.over-mij']");
await phone.keyboard.type("Ik ben Noor. Ik teken graag.");
await save(phone);
await phone.goto(base + "/student/sign");
const versionWaits = await signed(phone);
await look(phone, "family-signed-waits");
await phone.goto(base + "/student/passport");
await look(phone, "family-passport-waits");

// A parent link opened in Noor's own browser: her session is no parent's, and her browser
// holds no parent key, so it cannot sign as the parent.
await phone.goto(base + "/guardian/waiting");
const studentAsParentUrl = phone.url();
await press(phone, phone.locator("#sign-in-with-key"));
await phone.waitForSelector("#no-key:not([hidden])");
await look(phone, "family-student-no-parent-key");

// The parent signs in with their key and co-signs exactly the version Noor signed.
await press(parent, parent.getByRole("link", { name: "Continue" }));
await parent.waitForURL("**/guardian");
await look(parent, "family-parent-sign-in");
await press(parent, parent.locator("#sign-in-with-key"));
await parent.waitForURL("**/guardian/waiting", { timeout: 20000 });
await look(parent, "family-parent-waiting");
await press(parent, parent.locator("ul.cards a").first());
await parent.waitForURL("**/guardian/waiting/*");
await parent.waitForSelector("#sign-with-key:not([disabled])", { timeout: 20000 });
await look(parent, "family-parent-passport");
const parentSawPassport = await parent.innerText("main");
const versionCosigned = await signed(parent);

// Noor consents; the consent waits for the parent too, and says so.
await phone.goto(base + "/student/consent");
await press(phone, phone.locator("#to-30RT"), "Space");
await press(phone, phone.locator("#part-wie-ben-ik"), "Space");
await press(phone, phone.locator("#for-intake"), "Space");
await phone.fill("#until", process.env.UNTIL || "2027-08-01");
const consentHint = await phone.innerText("form");
await press(phone, phone.getByRole("button", { name: "Verder" }));
await phone.waitForSelector("details.preview-recipient");
await press(phone, phone.locator("details.preview-recipient summary"));
const recipientPreview = await phone.innerText("details.preview-recipient");
await look(phone, "family-consent-review");
const consentWaits = await signed(phone);
await phone.goto(base + "/student/consents");
const consentsWaiting = await phone.innerText("main");
await look(phone, "family-consent-waits");

// The parent reads exactly what is asked (to whom, which part, what for, until when) and
// co-signs it.
await parent.goto(base + "/guardian/waiting");
await press(parent, parent.locator("ul.cards a").first());
await parent.waitForURL("**/guardian/waiting/*");
await parent.waitForSelector("#sign-with-key:not([disabled])", { timeout: 20000 });
const parentSawConsent = await parent.innerText("main");
await look(parent, "family-parent-consent");
const consentCosigned = await signed(parent);
await until(phone, base + "/student/consents", "Intrekken", "the consent in force");
await look(phone, "family-consent-in-force");

// Noor adds her school laptop from her phone: a link, the laptop's key, the same code on both.
await phone.goto(base + "/student/devices");
await look(phone, "family-devices");
await press(phone, phone.getByRole("button", { name: "Voeg een apparaat toe" }));
await phone.waitForURL("**/student/devices/*");
await look(phone, "family-device-link");
const deviceLink = await phone.getAttribute("p.link a", "href");
const laptopCtx = await context("nl-NL");
const laptop = await laptopCtx.newPage();
await laptop.goto(deviceLink);
await press(laptop, laptop.locator("#make-key"));
await laptop.waitForSelector("#step-code:not([hidden])", { timeout: 20000 });
const laptopCode = (await laptop.textContent("#code")).trim();
await phone.waitForSelector("p.code", { timeout: 20000 });
const phoneSeesLaptopCode = (await phone.textContent("p.code")).trim();
await look(phone, "family-device-compare");
await press(phone, phone.getByRole("button", { name: "Ja, de codes zijn gelijk" }));
await phone.waitForSelector("p.done", { timeout: 20000 });
await laptop.waitForSelector("#done:not([hidden])", { timeout: 20000 });
await look(laptop, "family-device-done");
// The phone's devices page shows, from the region's log, that Noor's keys changed: now, and before.
await until(phone, base + "/student/devices", "Eerder", "the key change in the log");
const keyLog = await phone.innerText("section[aria-labelledby=key-log]");
await look(phone, "family-devices-log");

// The laptop signs in with its own key and signs version 2, which the parent co-signs.
await press(laptop, laptop.getByRole("link", { name: "Verder" }));
await laptop.waitForURL("**/student");
await press(laptop, laptop.locator("#sign-in-with-key"));
await laptop.waitForURL("**/student/passport", { timeout: 20000 });
await laptop.focus("textarea[name='a.wie-ben-ik.vrije-tijd']");
await laptop.keyboard.type("Tekenen en voetbal.");
await save(laptop);
await laptop.goto(base + "/student/sign");
const laptopSigned = await signed(laptop);
await parent.goto(base + "/guardian/waiting");
await press(parent, parent.locator("ul.cards a").first());
await parent.waitForURL("**/guardian/waiting/*");
const version2Cosigned = await signed(parent);
await parent.goto(base + "/guardian/waiting");
await look(parent, "family-parent-nothing-waits");
// The parent can withdraw the consent alone too (the test looks, and leaves it in force).
await press(parent, parent.getByRole("link", { name: "See or withdraw consents" }));
await parent.waitForURL("**/guardian/consents");
await look(parent, "family-parent-consents");
await press(parent, parent.getByRole("link", { name: "Withdraw" }));
await parent.waitForSelector("#sign-with-key:not([disabled])", { timeout: 20000 });
await look(parent, "family-parent-withdraw");
const parentWithdrawPage = await parent.innerText("main");

// Noor's brother Sem, 14, is invited too: the parent's phone hands in the same parent key
// again, so it keeps working for Noor.
await mentor.goto(base + "/mentor");
await mentor.focus("#name");
await mentor.keyboard.type("Sem Bakker");
await mentor.keyboard.press("Tab");
await mentor.keyboard.type("2A");
await mentor.fill("#birth_month", process.env.SIBLING_BIRTH_MONTH);
await mentor.focus("#birth_month");
await mentor.keyboard.press("Enter");
await mentor.waitForURL("**/mentor/invitations/*");
const siblingParentLink = await mentor.getAttribute(".parent-link a", "href");
await parent.goto(siblingParentLink);
await press(parent, parent.locator("#make-key"));
await parent.waitForSelector("#step-code:not([hidden])", { timeout: 20000 });
const siblingParentCode = (await parent.textContent("#code")).trim();

// The mentor sends the class.
await mentor.goto(base + "/mentor");
await look(mentor, "family-class");
await press(mentor, mentor.getByRole("button", { name: "Stuur de paspoorten van mijn klas" }));
await mentor.waitForSelector("section p.done");

const keys = {
  phone: await publicKey(phone, "student"),
  laptop: await publicKey(laptop, "student"),
  parent: await publicKey(parent, "guardian"),
  parentHasNoStudentKey: (await publicKey(parent, "student")) === null,
};
await browser.close();
console.log(JSON.stringify({
  ...seen,
  parentLinkMentor,
  parentLinkStudent,
  studentCode,
  mentorStudentCode,
  parentCode,
  mentorParentCode,
  confirmBeforeParent,
  versionWaits,
  studentAsParentUrl,
  parentSawPassport,
  versionCosigned,
  consentWaits,
  consentsWaiting,
  parentSawConsent,
  consentCosigned,
  laptopCode,
  phoneSeesLaptopCode,
  laptopSigned,
  version2Cosigned,
  keys,
  prefilled,
  werkTrack,
  keptName,
  consentHint,
  recipientPreview,
  parentWithdrawPage,
  siblingParentCode,
  keyLog,
}));
