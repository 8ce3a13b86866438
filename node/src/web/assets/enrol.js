// The student's key, made in this browser by WebCrypto: an Ed25519 key that cannot be exported,
// kept in this browser's IndexedDB. Only its public half ever leaves the device. The short code
// is computed here from that public key, so the same code on the mentor's screen shows that the
// school received this key and no other. On the mentor's page, this script only waits for the
// student and reloads when the invitation moves on. Every text is in the page; none is here.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);

  const watch = $("watch");
  if (watch) {
    const was = watch.dataset.state;
    setInterval(async () => {
      try {
        const r = await fetch(watch.dataset.stateUrl, { credentials: "same-origin" });
        if (r.ok && (await r.json()).state !== was) location.reload();
      } catch (_) { /* the next round tries again */ }
    }, 2000);
    return;
  }

  const root = $("enrol");
  if (!root) return;
  // An invitation (/i/…) or a key link (/k/…): the key is kept under its slot, "student" or
  // "guardian", so a parent's key and a student's key on one family laptop stay apart.
  const base = root.dataset.base || `/i/${root.dataset.token}`;
  const slot = root.dataset.slot || "student";
  const show = (id) => { $(id).hidden = false; };
  const hide = (id) => { $(id).hidden = true; };
  const fail = (id) => { hide("working"); hide("step-make"); hide("step-code"); show(id); };

  const openDb = () => new Promise((resolve, reject) => {
    const req = indexedDB.open("overstap", 1);
    req.onupgradeneeded = () => req.result.createObjectStore("keys");
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  const inStore = async (mode, act) => {
    const db = await openDb();
    return new Promise((resolve, reject) => {
      const tx = db.transaction("keys", mode);
      const req = act(tx.objectStore("keys"));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
    });
  };
  const saveKey = (pair) => inStore("readwrite", (s) =>
    s.put({ privateKey: pair.privateKey, publicKey: pair.publicKey, made: Date.now() }, slot));
  const loadKey = () => inStore("readonly", (s) => s.get(slot));

  const base64 = (bytes) => btoa(String.fromCharCode(...bytes));
  const shortCode = async (raw) => {
    const tag = new TextEncoder().encode("overstap short code v1");
    const both = new Uint8Array(tag.length + raw.length);
    both.set(tag);
    both.set(raw, tag.length);
    const d = new DataView(await crypto.subtle.digest("SHA-256", both));
    const n = d.getUint32(0) % 1000000;
    const s = String(n).padStart(6, "0");
    return s.slice(0, 3) + " " + s.slice(3);
  };

  const waitForMentor = async (raw) => {
    $("code").textContent = await shortCode(raw);
    hide("working");
    hide("step-make");
    show("step-code");
    const timer = setInterval(async () => {
      try {
        const r = await fetch(`${base}/state`);
        if (!r.ok) return;
        if ((await r.json()).state === "enrolled") {
          clearInterval(timer);
          hide("step-code");
          show("done");
        }
      } catch (_) { /* the next round tries again */ }
    }, 2000);
  };

  if (!window.crypto || !crypto.subtle || !window.indexedDB) {
    fail("no-webcrypto");
    return;
  }

  if (root.dataset.state === "check") {
    // Back on this page after handing in the key: the key is still here, or this is not the
    // device that made it.
    loadKey().then((k) => k
      ? crypto.subtle.exportKey("raw", k.publicKey).then((raw) => waitForMentor(new Uint8Array(raw)))
      : fail("failed")).catch(() => fail("failed"));
    return;
  }

  $("make-key").addEventListener("click", async () => {
    hide("step-make");
    show("working");
    // A parent's key is the parent's, for each of their children at this school: a browser
    // that already holds one hands in that key again rather than replace it.
    let pair = slot === "guardian" ? await loadKey().catch(() => null) : null;
    const fresh = !pair;
    try {
      if (fresh) pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    } catch (_) {
      fail("no-webcrypto");
      return;
    }
    try {
      if (fresh) await saveKey(pair);
      if (navigator.storage && navigator.storage.persist) navigator.storage.persist();
      const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
      const r = await fetch(`${base}/key`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ key: base64(raw) }),
      });
      if (!r.ok) {
        fail("failed");
        return;
      }
      await waitForMentor(raw);
    } catch (_) {
      fail("failed");
    }
  });
})();
