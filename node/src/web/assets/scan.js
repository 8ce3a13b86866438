// The intaker's camera reads the QR code on the student's phone. The button shows only where
// the browser can ask for a camera; the reader (jsQR, served by this node) is loaded on the
// first press. A frame is read a few times a second; the first pickup code found fills the
// code field and sends the form, the camera goes off. Typing the code stays the other way.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const box = $("scanner");
  const start = $("scan");
  if (!box || !start) return;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return;
  const video = $("scan-video");
  const stop = $("scan-stop");
  const input = $("code");
  // The shape of a pickup code (school, then two groups of four); anything else is not one.
  const shape = /^[A-Z0-9][A-Z0-9-]{0,47}-[2-9A-Z]{4}-[2-9A-Z]{4}$/;
  let stream = null;
  let timer = null;
  start.hidden = false;

  const reader = () => new Promise((ok, no) => {
    if (window.jsQR) return ok(window.jsQR);
    const s = document.createElement("script");
    s.src = box.dataset.reader;
    s.onload = () => (window.jsQR ? ok(window.jsQR) : no(new Error("reader")));
    s.onerror = () => no(new Error("reader"));
    document.head.append(s);
  });

  const off = () => {
    if (timer) clearInterval(timer);
    timer = null;
    if (stream) for (const track of stream.getTracks()) track.stop();
    stream = null;
    video.hidden = true;
    stop.hidden = true;
    $("scan-help").hidden = true;
    start.hidden = false;
  };

  start.addEventListener("click", async () => {
    $("scan-failed").hidden = true;
    $("scan-wrong").hidden = true;
    try {
      const read = await reader();
      stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: "environment" }, audio: false,
      });
      video.srcObject = stream;
      video.hidden = false;
      stop.hidden = false;
      start.hidden = true;
      $("scan-help").hidden = false;
      await video.play();
      const canvas = document.createElement("canvas");
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      timer = setInterval(() => {
        const w = video.videoWidth;
        const h = video.videoHeight;
        if (!w || !h) return;
        canvas.width = w;
        canvas.height = h;
        ctx.drawImage(video, 0, 0, w, h);
        const found = read(ctx.getImageData(0, 0, w, h).data, w, h, { inversionAttempts: "attemptBoth" });
        if (!found) return;
        const value = found.data.trim().toUpperCase();
        if (!shape.test(value)) {
          $("scan-wrong").hidden = false;
          return;
        }
        off();
        input.value = value;
        const status = $("scan-status");
        status.textContent = box.dataset.found.replace("{code}", value);
        status.hidden = false;
        input.form.requestSubmit();
      }, 200);
    } catch (_) {
      off();
      $("scan-failed").hidden = false;
    }
  });
  stop.addEventListener("click", off);
})();
