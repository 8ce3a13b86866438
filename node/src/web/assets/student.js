// The student's pages: signing in with the key this browser keeps (a challenge from the node,
// signed under the sign-in domain tag, so the signature can never count for a document), and
// reading questions and answers aloud with the browser's own speech (no outside service).
// Every text is in the page; none is here.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);

  // Read aloud: the question, then the answer given so far.
  const speak = window.speechSynthesis;
  for (const button of document.querySelectorAll("button.speak")) {
    if (!speak) continue;
    button.hidden = false;
    button.addEventListener("click", () => {
      const question = $(button.dataset.say).textContent;
      const answer = ($(button.dataset.answer) || {}).value || "";
      speak.cancel();
      const say = new SpeechSynthesisUtterance(answer ? `${question} ${answer}` : question);
      say.lang = "nl-NL";
      speak.speak(say);
    });
  }

  const start = $("sign-in-with-key");
  if (!start) return;
  const show = (id) => { $(id).hidden = false; };
  if (!window.crypto || !crypto.subtle || !window.indexedDB) {
    start.hidden = true;
    show("no-webcrypto");
    return;
  }
  const loadKey = () => new Promise((resolve, reject) => {
    const open = indexedDB.open("overstap", 1);
    open.onupgradeneeded = () => open.result.createObjectStore("keys");
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const get = open.result.transaction("keys").objectStore("keys").get("student");
      get.onsuccess = () => resolve(get.result);
      get.onerror = () => reject(get.error);
    };
  });
  const base64 = (bytes) => btoa(String.fromCharCode(...bytes));
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));

  start.addEventListener("click", async () => {
    $("no-key").hidden = true;
    $("sign-in-failed").hidden = true;
    try {
      const key = await loadKey();
      if (!key) {
        show("no-key");
        return;
      }
      const r = await fetch("/student/challenge", { method: "POST" });
      if (!r.ok) throw new Error("no challenge");
      const { id, challenge } = await r.json();
      // The bytes signed: the sign-in domain tag, a zero byte, the node's challenge.
      const tag = new TextEncoder().encode("overstap.v1/sign-in");
      const c = bytes(challenge);
      const message = new Uint8Array(tag.length + 1 + c.length);
      message.set(tag);
      message.set(c, tag.length + 1);
      const signature = new Uint8Array(await crypto.subtle.sign("Ed25519", key.privateKey, message));
      const raw = new Uint8Array(await crypto.subtle.exportKey("raw", key.publicKey));
      const answer = await fetch("/student/sign-in", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ id, key: base64(raw), signature: base64(signature) }),
      });
      if (!answer.ok) throw new Error("refused");
      location.assign((await answer.json()).to);
    } catch (_) {
      show("sign-in-failed");
    }
  });
})();
