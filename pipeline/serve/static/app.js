// s2p serve front end: plain DOM, no framework, nothing loaded from outside.
"use strict";

const $ = (id) => document.getElementById(id);
const picked = new Set();  // gallery names selected
let info = null;

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function element(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function clearMessages() {
  $("error").hidden = true;
  $("note").hidden = true;
}

function setStatus(text, busy) {
  $("status").textContent = text;
  $("paint").disabled = busy;
}

// ------------------------------------------------------------ model info

async function loadInfo() {
  let response;
  try {
    response = await fetch("/api/info");
  } catch (err) {
    showError(`cannot reach the server (${err.message}); is s2p serve running?`);
    return;
  }
  info = await response.json();
  $("checkpoint").textContent = info.checkpoint;
  const train = info.train ? `, ${info.train.steps} steps` : "";
  $("resolution").textContent = info.resolution ? `${info.resolution} px${train}` : "unknown";
  const ex = info.extractor;
  $("extractor").textContent = ex.trained_with
    ? `${ex.in_use} (trained with ${ex.trained_with})` : `${ex.in_use} (the checkpoint does not record its training extractor)`;
  const enc = info.style_encoder;
  const size = enc.settings && enc.settings.input_size ? `, ${enc.settings.input_size}² input` : "";
  $("encoder").textContent = `VGG19 fc1, ${enc.in_use} weights${size}`;
  $("fallback").hidden = !enc.random_fallback;
  for (const option of info.sizes) {
    $("size").append(element("option", {value: option.value, textContent: option.label}));
  }
  if (info.gallery.length) {
    $("gallery-box").hidden = false;
    for (const name of info.gallery) {
      const button = element("button", {type: "button", title: name, className: "pick"},
        [element("img", {src: `/api/gallery/${encodeURIComponent(name)}`, alt: name})]);
      button.dataset.name = name;
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", () => togglePick(button));
      $("gallery").append(button);
    }
  }
}

// ------------------------------------------------------------ choosing references

function togglePick(button) {
  const name = button.dataset.name;
  const on = !picked.has(name);
  if (mode() === "paint") {
    clearPicks();
    $("references").value = "";
  }
  if (on) picked.add(name); else picked.delete(name);
  button.setAttribute("aria-pressed", String(on));
}

function clearPicks() {
  picked.clear();
  for (const b of $("gallery").children) b.setAttribute("aria-pressed", "false");
}

function applyMode() {
  const swap = mode() === "swap";
  $("references").multiple = swap;
  $("gallery-hint").textContent = swap ? "and/or pick several from the gallery:" : "or pick one from the gallery:";
  if (!swap) {  // one reference: keep at most one choice
    if ($("references").files.length > 1) $("references").value = "";
    if ($("references").files.length || picked.size > 1) clearPicks();
  }
}

// ------------------------------------------------------------ painting

function tooLarge(files) {
  const total = files.reduce((sum, f) => sum + f.size, 0);
  return total > info.limits.max_upload_bytes;
}

async function paint(event) {
  event.preventDefault();
  clearMessages();
  if (!info) return showError("the model information has not loaded; reload the page");
  const sketch = $("sketch").files[0];
  const uploads = [...$("references").files];
  const names = [...picked];
  if (!sketch) return showError("choose a sketch file first");
  if (!uploads.length && !names.length) {
    return showError("choose a reference: upload one or pick one from the gallery");
  }
  if (tooLarge([sketch, ...uploads])) {
    const mib = info.limits.max_upload_bytes / 2 ** 20;
    return showError(`upload too large: the limit is ${mib.toFixed(0)} MiB per request`);
  }
  const body = new FormData();
  body.append("sketch", sketch);
  for (const file of uploads) body.append("references", file);
  for (const name of names) body.append("gallery", name);
  body.append("extract", $("extract").checked ? "true" : "false");
  body.append("size", $("size").value);
  setStatus("painting…", true);
  try {
    const response = await fetch("/api/paint", {method: "POST", body});
    let payload;
    try {
      payload = await response.json();
    } catch {
      payload = {error: `the server answered ${response.status} ${response.statusText}`};
    }
    if (!response.ok) {
      setStatus("", false);
      return showError(payload.error || `the server answered ${response.status}`);
    }
    const references = uploads.map((f) => ({name: f.name, src: URL.createObjectURL(f)}))
      .concat(names.map((n) => ({name: n, src: `/api/gallery/${encodeURIComponent(n)}`})));
    render(payload, sketch, references);
    const n = payload.results.length;
    setStatus(`painted ${n} image${n > 1 ? "s" : ""} (${payload.size} px) in ${payload.seconds} s`, false);
  } catch (err) {
    setStatus("", false);
    showError(`cannot reach the server (${err.message}); is s2p serve still running?`);
  }
}

function figure(src, caption, className = "") {
  return element("figure", {}, [
    element("img", {src, alt: caption, className}),
    element("figcaption", {textContent: caption}),
  ]);
}

function download(result, sketchName) {
  const stem = (name) => name.replace(/\.[^.]*$/, "");
  return element("a", {
    href: result.png, download: `${stem(sketchName)}_${stem(result.reference)}.png`,
    textContent: "download PNG", className: "download",
  });
}

function resultFigure(result, sketchName, referenceSrc) {
  const img = element("img", {src: result.png, alt: `painted with ${result.reference}`, className: "result"});
  img.dataset.width = result.width;
  img.dataset.height = result.height;
  const children = referenceSrc ? [element("img", {src: referenceSrc, alt: result.reference, className: "thumb"})] : [];
  children.push(img, element("figcaption", {}, [
    `${result.width}×${result.height} · ${result.reference} · `, download(result, sketchName),
  ]));
  return element("figure", {}, children);
}

function render(payload, sketchFile, references) {
  const results = $("results");
  results.replaceChildren();
  if (payload.note) {
    $("note").textContent = payload.note;
    $("note").hidden = false;
  }
  const s = payload.sketch;
  const sketchCaption = `sketch${s.extracted ? " (extracted line art)" : ""} · ${sketchFile.name}`;
  const row = element("div", {className: "row"});
  row.append(figure(s.png, sketchCaption, "sketch"));
  if (payload.results.length === 1) {
    row.append(figure(references[0].src, `reference · ${references[0].name}`, "reference"));
    row.append(resultFigure(payload.results[0], sketchFile.name, null));
    results.className = "single";
  } else {
    payload.results.forEach((result, i) => {
      row.append(resultFigure(result, sketchFile.name, references[i].src));
    });
    results.className = "swap";
  }
  results.append(row);
}

// ------------------------------------------------------------ wiring

document.addEventListener("DOMContentLoaded", () => {
  $("paint-form").addEventListener("submit", paint);
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", applyMode);
  }
  $("references").addEventListener("change", () => {
    if (mode() === "paint" && $("references").files.length) clearPicks();
  });
  loadInfo();
});
