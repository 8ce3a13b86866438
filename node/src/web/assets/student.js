// The student's pages: signing in with the key this browser keeps (a challenge from the node,
// signed under the sign-in domain tag, so the signature can never count for a document),
// signing a passport version after checking it is what the screen shows, and reading
// questions and answers aloud with the browser's own speech (no outside service).
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

  const base64 = (bytes) => btoa(String.fromCharCode(...bytes));
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  // The key kept in `slot`: "student", or "guardian" on a parent's device.
  const loadKey = (slot) => new Promise((resolve, reject) => {
    const open = indexedDB.open("overstap", 1);
    open.onupgradeneeded = () => open.result.createObjectStore("keys");
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const get = open.result.transaction("keys").objectStore("keys").get(slot || "student");
      get.onsuccess = () => resolve(get.result);
      get.onerror = () => reject(get.error);
    };
  });
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  };
  const utf8 = (s) => new TextEncoder().encode(s);

  const fields = (buf) => {
    let i = 0;
    const out = [];
    const varint = () => {
      let r = 0n, shift = 0n;
      for (;;) {
        if (i >= buf.length) throw new Error("truncated");
        const b = buf[i++];
        r |= BigInt(b & 0x7f) << shift;
        if (!(b & 0x80)) return r;
        shift += 7n;
      }
    };
    while (i < buf.length) {
      const key = Number(varint());
      const field = key >> 3, wire = key & 7;
      if (wire === 0) out.push([field, varint()]);
      else if (wire === 2) {
        const n = Number(varint());
        if (i + n > buf.length) throw new Error("truncated");
        out.push([field, buf.subarray(i, i + n)]);
        i += n;
      } else throw new Error("unexpected wire type");
    }
    return out;
  };
  const text = (b) => new TextDecoder("utf-8", { fatal: true }).decode(b);

  // Signs `body` under `tag` with this device's key in the box's slot and posts the key and
  // signature to the box's url; shows the node's answer in #checking, or why it did not work.
  const signAndPost = async (tag, body, box, button) => {
    $("sign-failed").hidden = true;
    button.disabled = true;
    const url = box.dataset.url;
    try {
      const key = await loadKey(box.dataset.slot);
      if (!key) {
        $("no-key").hidden = false;
        return;
      }
      const message = concat(utf8(tag), new Uint8Array([0]), body);
      const signature = new Uint8Array(await crypto.subtle.sign("Ed25519", key.privateKey, message));
      const raw = new Uint8Array(await crypto.subtle.exportKey("raw", key.publicKey));
      const r = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ key: base64(raw), signature: base64(signature) }),
      });
      const answer = await r.json();
      if (!r.ok) throw new Error(answer.error);
      $("checking").textContent = answer.message;
      $("checking").hidden = false;
      $("checking").className = "done";
      button.hidden = true;
    } catch (_) {
      $("sign-failed").hidden = false;
      button.disabled = false;
    }
  };
  // Runs `check`; the button works only when it says yes.
  const guard = (check, button) => check().then((ok) => {
    $("checking").hidden = true;
    if (ok) button.disabled = false;
    else $("check-failed").hidden = false;
  }).catch(() => {
    $("checking").hidden = true;
    $("check-failed").hidden = false;
  });

  // The code as a QR code, drawn here (the node never knows the code): dark squares as one
  // SVG path, with the four-module quiet zone a camera needs around it.
  const showQr = (value, figure) => {
    if (!figure || !window.qrcodegen) return;
    const qr = qrcodegen.QrCode.encodeText(value, qrcodegen.QrCode.Ecc.MEDIUM);
    const size = qr.size + 8;
    let d = "";
    for (let y = 0; y < qr.size; y++) {
      for (let x = 0; x < qr.size; x++) {
        if (qr.getModule(x, y)) d += `M${x + 4} ${y + 4}h1v1h-1z`;
      }
    }
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
    svg.setAttribute("shape-rendering", "crispEdges");
    svg.setAttribute("aria-hidden", "true");
    const back = document.createElementNS(ns, "rect");
    back.setAttribute("width", String(size));
    back.setAttribute("height", String(size));
    back.setAttribute("fill", "#fff");
    const dark = document.createElementNS(ns, "path");
    dark.setAttribute("d", d);
    dark.setAttribute("fill", "#000");
    svg.append(back, dark);
    figure.replaceChildren(svg);
    figure.hidden = false;
  };

  // A pickup code: made here and never sent; only its SHA-256 goes to the node, which prepares
  // the code object. The page checks that it names this consent and this digest and ends
  // within the minutes the page says, signs it, and only then shows the code.
  const pickup = $("pickup");
  if (pickup) {
    const button = $("make-code");
    if (!window.crypto || !crypto.subtle) {
      $("no-webcrypto").hidden = false;
      button.disabled = true;
      return;
    }
    button.addEventListener("click", async () => {
      $("check-failed").hidden = true;
      $("sign-failed").hidden = true;
      button.disabled = true;
      try {
        const alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
        const code = [...crypto.getRandomValues(new Uint8Array(8))]
          .map((b) => alphabet[b & 31]).join("");
        const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", utf8(code)));
        const r = await fetch(pickup.dataset.prepare, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ grant: pickup.dataset.grant, digest: base64(digest) }),
        });
        if (!r.ok) throw new Error("prepare");
        const body = bytes((await r.json()).body);
        const c = { grant: "", digest: new Uint8Array(), issued: 0n, expires: 0n };
        for (const [f, v] of fields(body)) {
          if (f === 1) c.grant = text(v);
          else if (f === 3) c.digest = v;
          else if (f === 4) c.issued = v;
          else if (f === 5) c.expires = v;
        }
        const same = c.digest.length === 32 && c.digest.every((b, i) => b === digest[i]);
        const life = c.expires - c.issued;
        if (c.grant !== pickup.dataset.grant || !same || life <= 0n
          || life > BigInt(pickup.dataset.minutes) * 60n) {
          $("check-failed").hidden = false;
          return;
        }
        await signAndPost("overstap.v1/pickup-code", body, pickup, button);
        if (button.hidden) {
          const shown = $("pickup-code");
          shown.textContent = `${pickup.dataset.school}-${code.slice(0, 4)}-${code.slice(4)}`;
          shown.hidden = false;
          showQr(shown.textContent, $("pickup-qr"));
        }
      } catch (_) {
        $("sign-failed").hidden = false;
        button.disabled = false;
      }
    });
    return;
  }

  // Consent. The page decodes the grant the node prepared and checks that it names exactly the
  // organisation, the parts, the purpose, the end date and whether they may fetch it, as this
  // page shows them, before it signs.
  const consentBox = $("consent-sign");
  if (consentBox) {
    const body = bytes(consentBox.dataset.body);
    const button = $("sign-with-key");
    const check = async () => {
      const g = { org: "", sections: [], purpose: "", until: 0n, live: false, fetch: false };
      for (const [f, v] of fields(body)) {
        if (f === 4) g.org = text(v);
        else if (f === 5) g.sections.push(text(v));
        else if (f === 6) g.purpose = text(v);
        else if (f === 8) g.until = v;
        else if (f === 9) g.live = v === 1n;
        else if (f === 11) g.fetch = v === 1n;
      }
      const shown = [...document.querySelectorAll("ul.parts li")].map((li) => li.dataset.section);
      return g.org === consentBox.dataset.org
        && g.purpose === consentBox.dataset.purpose
        && g.until === BigInt(consentBox.dataset.until)
        && g.live === (consentBox.dataset.live === "true")
        && g.fetch === (consentBox.dataset.fetch === "true")
        && g.sections.length === shown.length
        && g.sections.every((s, i) => s === shown[i]);
    };
    guard(check, button);
    button.addEventListener("click", () =>
      signAndPost("overstap.v1/consent-grant", body, consentBox, button));
    return;
  }

  // Withdrawing a consent: the page decodes the revocation and checks it names the consent this
  // page is about before it signs.
  const revokeBox = $("revoke-sign");
  if (revokeBox) {
    const body = bytes(revokeBox.dataset.body);
    const button = $("sign-with-key");
    const check = async () => {
      let grant = "";
      for (const [f, v] of fields(body)) if (f === 1) grant = text(v);
      return grant !== "" && grant === revokeBox.dataset.grant;
    };
    guard(check, button);
    button.addEventListener("click", () =>
      signAndPost("overstap.v1/revocation", body, revokeBox, button));
    return;
  }

  // Signing the passport. The page never signs bytes it has not decoded: it reads the protobuf
  // manifest the node prepared, decodes every section from its exact bytes, checks that each
  // section is what the screen shows, word for word, and that its salted digest is the one in
  // the manifest; only then does the button work.
  const signBox = $("sign");
  if (signBox) {
    const decodeManifest = (buf) => {
      const m = { pseudonym: "", version: 0, set: "", digests: [] };
      for (const [f, v] of fields(buf)) {
        if (f === 1) m.pseudonym = text(v);
        else if (f === 2) m.version = Number(v);
        else if (f === 3) m.set = text(v);
        else if (f === 5) {
          const d = { id: "", digest: new Uint8Array() };
          for (const [g, w] of fields(v)) {
            if (g === 1) d.id = text(w);
            else if (g === 2) d.digest = w;
          }
          m.digests.push(d);
        }
      }
      return m;
    };
    const decodeSection = (buf) => {
      const s = { id: "", title: "", answers: [] };
      for (const [f, v] of fields(buf)) {
        if (f === 1) s.id = text(v);
        else if (f === 2) s.title = text(v);
        else if (f === 3) {
          const a = { question: "", answer: "", smiley: "" };
          for (const [g, w] of fields(v)) {
            if (g === 2) a.question = text(w);
            else if (g === 3) a.answer = text(w);
            else if (g === 4) a.smiley = text(w);
          }
          s.answers.push(a);
        }
      }
      return s;
    };
    const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
    const body = bytes(signBox.dataset.body);
    const button = $("sign-with-key");
    const check = async () => {
      const manifest = decodeManifest(body);
      const shown = [...document.querySelectorAll("section.preview")];
      if (shown.length !== manifest.digests.length) return false;
      for (const el of shown) {
        const salt = bytes(el.dataset.salt);
        const raw = bytes(el.dataset.section);
        const section = decodeSection(raw);
        if (el.querySelector("h2").textContent !== section.title) return false;
        const answers = [...el.querySelectorAll("div.answer")];
        if (answers.length !== section.answers.length) return false;
        for (const [i, a] of section.answers.entries()) {
          const div = answers[i];
          if (div.querySelector(".q").textContent !== a.question) return false;
          if (div.querySelector(".a").textContent !== a.answer) return false;
          if (div.dataset.smiley !== a.smiley) return false;
        }
        const length = new Uint8Array(4);
        new DataView(length.buffer).setUint32(0, salt.length);
        const digest = new Uint8Array(await crypto.subtle.digest("SHA-256",
          concat(utf8("overstap.v1/section"), new Uint8Array([0]), length, salt, raw)));
        const listed = manifest.digests.find((d) => d.id === section.id);
        if (!listed || !same(listed.digest, digest)) return false;
      }
      return true;
    };
    guard(check, button);
    button.addEventListener("click", () =>
      signAndPost("overstap.v1/manifest", body, signBox, button));
    return;
  }

  const start = $("sign-in-with-key");
  if (!start) return;
  // A student signs in at /student/sign-in, a parent at /guardian/sign-in with the parent key.
  const signIn = $("student-sign-in");
  const slot = signIn.dataset.slot || "student";
  const signInUrl = signIn.dataset.url || "/student/sign-in";
  const show = (id) => { $(id).hidden = false; };
  if (!window.crypto || !crypto.subtle || !window.indexedDB) {
    start.hidden = true;
    show("no-webcrypto");
    return;
  }
  start.addEventListener("click", async () => {
    $("no-key").hidden = true;
    $("sign-in-failed").hidden = true;
    try {
      const key = await loadKey(slot);
      if (!key) {
        show("no-key");
        return;
      }
      const r = await fetch(signInUrl.replace(/sign-in$/, "challenge"), { method: "POST" });
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
      const answer = await fetch(signInUrl, {
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
