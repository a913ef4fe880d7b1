// The "try a review" view: send text and/or a photo to POST /v1/sentiment, show the answer.
// Plain JavaScript, no dependencies.
"use strict";

(function () {
  const LABELS = ["negative", "neutral", "positive"];
  const MAX_SIDE = 1280;            // photos larger than this are scaled down before sending
  const MAX_RAW_BYTES = 1500000;    // ... and so are files larger than this
  const ACCEPTED = ["image/jpeg", "image/png", "image/webp", "image/gif"];

  const $ = (id) => document.getElementById(id);
  const form = $("review-form");
  const text = $("text");
  const category = $("category");
  const photo = $("photo");
  const dropzone = $("dropzone");
  const submit = $("submit");
  const busy = $("busy");
  let photoFile = null;   // the chosen or dropped file
  let previewUrl = null;

  // --- the photo: file input (keyboard: Tab to it, Space/Enter opens the chooser) or drop ---

  function setPhoto(file) {
    clearError();
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    photoFile = null;
    $("preview").hidden = true;
    if (!file) return;
    if (file.type && !ACCEPTED.includes(file.type)) {
      photo.value = "";
      showError(`"${file.name}" is not a photo this service reads (JPEG, PNG, WebP or GIF).`);
      return;
    }
    photoFile = file;
    previewUrl = URL.createObjectURL(file);
    $("preview-img").hidden = false;
    $("preview-img").src = previewUrl;
    $("preview-img").alt = `Preview of ${file.name}`;
    $("preview-name").textContent = `${file.name} (${formatBytes(file.size)})`;
    $("preview").hidden = false;
  }

  $("preview-img").addEventListener("error", () => {
    // Not a picture the browser can show: say so; the service will say what is wrong with it.
    $("preview-img").hidden = true;
    $("preview-name").textContent += " (no preview: the browser cannot show it as a picture)";
  });
  photo.addEventListener("change", () => setPhoto(photo.files[0] || null));
  $("remove-photo").addEventListener("click", () => {
    photo.value = "";
    setPhoto(null);
    photo.focus();
  });
  for (const ev of ["dragenter", "dragover"]) {
    dropzone.addEventListener(ev, (e) => {
      e.preventDefault();
      dropzone.classList.add("dragging");
    });
  }
  for (const ev of ["dragleave", "drop"]) {
    dropzone.addEventListener(ev, () => dropzone.classList.remove("dragging"));
  }
  dropzone.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (!file) return;
    try {
      photo.files = e.dataTransfer.files;  // keeps the input and the drop in step
    } catch (_) { /* older browsers: the input just stays empty */ }
    setPhoto(file);
  });

  // --- Enter submits from the text area (Shift+Enter is a new line) ---

  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (submit.disabled) return;
    clearError();
    setBusy(true);
    try {
      const body = {};
      if (text.value.trim()) body.text = text.value;
      if (category.value.trim()) body.category = category.value.trim();
      if (photoFile) body.image = await encodePhoto(photoFile);
      const res = await fetch("/v1/sentiment", {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify(body),
      });
      let data = null;
      try { data = await res.json(); } catch (_) { data = null; }
      if (!res.ok) {
        showError(describeError(res, data));
        return;
      }
      showResult(data);
    } catch (err) {
      showError(err && err.userMessage ? err.userMessage
        : "Could not reach the service. Check that it is running, then try again.");
    } finally {
      setBusy(false);
    }
  });

  function describeError(res, data) {
    const status = `HTTP ${res.status}`;
    if (data && typeof data.message === "string" && data.message) {
      const kind = data.error ? `${data.error}, ${status}` : status;
      return `${sentence(data.message)} (${kind})`;
    }
    if (res.status === 413) return `The request is too large (${status}). Try a smaller photo.`;
    if (res.status === 503) return `The model is not ready yet (${status}). Try again shortly.`;
    return `The service answered ${status} ${res.statusText || ""}`.trim() + ".";
  }

  // --- encoding the photo: as it is when small, scaled down to a JPEG when large ---

  function readAsDataURL(file) {
    return new Promise((resolve, reject) => {
      const r = new FileReader();
      r.onload = () => resolve(r.result);
      r.onerror = () => reject(Object.assign(new Error("read"),
        { userMessage: `Could not read "${file.name}".` }));
      r.readAsDataURL(file);
    });
  }

  async function encodePhoto(file) {
    if (file.size <= MAX_RAW_BYTES) {
      const url = await readAsDataURL(file);
      if (await fitsAsIs(url)) return url;
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch (_) {
      // Not decodable here: send it anyway and let the service say what is wrong with it.
      return readAsDataURL(file);
    }
    const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return canvas.toDataURL("image/jpeg", 0.9);
  }

  function fitsAsIs(url) {
    return new Promise((resolve) => {
      const img = new Image();
      img.onload = () => resolve(Math.max(img.naturalWidth, img.naturalHeight) <= MAX_SIDE * 2);
      img.onerror = () => resolve(true);  // the service reports undecodable files in words
      img.src = url;
    });
  }

  // --- showing the answer ---

  function showResult(p) {
    $("placeholder").hidden = true;
    const label = $("result-label");
    label.textContent = p.label;
    label.className = `label label-${p.label}`;
    $("result-modalities").textContent = modalityWords(p.modalities);

    const rows = $("scores");
    rows.replaceChildren();
    for (const name of LABELS) {
      const score = Number((p.scores || {})[name] || 0);
      const tr = document.createElement("tr");
      tr.dataset.label = name;
      if (name === p.label) tr.className = "top";
      const th = el("th", name, { scope: "row" });
      const td = el("td", `${(score * 100).toFixed(1)} %`, { class: "num" });
      const barCell = el("td", "", { class: "bar-cell", "aria-hidden": "true" });
      const bar = el("span", "", { class: `bar bar-${name}` });
      bar.style.setProperty("width", `${Math.max(0.5, score * 100).toFixed(1)}%`);
      barCell.append(bar);
      tr.append(th, td, barCell);
      rows.append(tr);
    }
    const m = p.model || {};
    $("result-model").textContent =
      `Model ${m.name || "?"} version ${m.version || "?"} · answered in ${Math.round(p.latency_ms)} ms`;

    const list = $("similar");
    list.replaceChildren();
    const similar = p.similar || [];
    $("similar-empty").hidden = similar.length > 0;
    $("similar-empty").textContent = similar.length ? "" :
      "No similar reviews: nothing is indexed yet, or retrieval is switched off.";
    for (const s of similar) {
      const li = el("li", "", { class: "similar-item" });
      const head = el("p", "", { class: "similar-head" });
      const lab = s.label || "unlabelled";
      head.append(el("span", lab, { class: `label label-${lab}` }),
        el("span", `similarity ${Number(s.score).toFixed(3)}`, { class: "meta" }));
      li.append(head, el("p", s.text, { class: "similar-text" }));
      list.append(li);
    }
    $("result").hidden = false;
  }

  function modalityWords(mods) {
    const has = new Set(mods || []);
    if (has.has("text") && has.has("image")) return "Read from the text and the photo together.";
    if (has.has("image")) return "Read from the photo alone.";
    if (has.has("text")) return "Read from the text alone.";
    return "";
  }

  // --- small helpers ---

  function showError(message) {
    $("error-message").textContent = message;
    $("error").hidden = false;
    // An earlier answer would read as the answer to this input: take it away.
    $("result").hidden = true;
    $("placeholder").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error-message").textContent = "";
  }

  function setBusy(on) {
    submit.disabled = on;
    form.setAttribute("aria-busy", on ? "true" : "false");
    busy.textContent = on ? "Reading the review…" : "";
  }

  function el(tag, textContent, attrs) {
    const e = document.createElement(tag);
    if (textContent) e.textContent = textContent;
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  function sentence(s) {
    s = String(s).trim();
    s = s.charAt(0).toUpperCase() + s.slice(1);
    return /[.!?]$/.test(s) ? s.slice(0, -1) : s;
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} bytes`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }
})();
