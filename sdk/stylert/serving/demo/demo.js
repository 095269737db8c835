// stylert demo page: the service's calls on one photo. Plain JavaScript, served by `stylert serve` at /.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: {}, photo: null, exemplar: null, painted: false, timer: null, request: 0 };

// The controls of each call, as the service names them (query parameters).
const CONTROLS = {
  retouch: [{ name: "strength", label: "Strength", min: 0, max: 2, step: 0.05, value: 1 }],
  restore: [{ name: "fidelity", label: "Fidelity (1 = the input)", min: 0, max: 1, step: 0.05, value: 0 },
            { name: "seed", label: "Seed (VSP models)", min: 0, max: 99, step: 1, value: 0 }],
  stylize: [{ name: "psi", label: "Truncation psi", min: 0, max: 1, step: 0.05, value: 0.7, optional: true },
            { name: "seed", label: "Seed (multimodal mixing)", min: 0, max: 99, step: 1, value: 0, optional: true },
            { name: "mix_layer", label: "Mix from layer", min: 1, max: 17, step: 1, value: 6, optional: true }],
  "inpaint:exe-gan": [{ name: "psi", label: "Truncation psi", min: 0, max: 1, step: 0.05, value: 1 },
                      { name: "seed", label: "Seed", min: 0, max: 99, step: 1, value: 0 }],
  "inpaint:grig": [{ name: "steps", label: "Reasoning steps", min: 1, max: 8, step: 1, value: 3 },
                   { name: "seed", label: "Seed", min: 0, max: 99, step: 1, value: 0 }],
};

function say(text, ok = false) {
  $("message").textContent = text;
  $("message").className = ok ? "ok" : "";
}

function controlsKey() {
  const call = $("call").value;
  return call === "inpaint" ? `inpaint:${state.models.inpaint.method}` : call;
}

function renderControls() {
  const call = $("call").value;
  const box = $("controls");
  box.replaceChildren();
  for (const c of CONTROLS[controlsKey()] || []) {
    const label = document.createElement("label");
    const input = Object.assign(document.createElement("input"),
      { type: "range", id: `control-${c.name}`, min: c.min, max: c.max, step: c.step, value: c.value });
    const shown = document.createElement("output");
    shown.textContent = c.value;
    input.addEventListener("input", () => { shown.textContent = input.value; schedule(); });
    if (c.optional) {
      const on = Object.assign(document.createElement("input"), { type: "checkbox", id: `use-${c.name}` });
      on.addEventListener("change", () => { input.disabled = !on.checked; schedule(); });
      input.disabled = true;
      label.append(on, " ");
    }
    label.append(`${c.label}: `, shown, input);
    box.append(label);
  }
  $("style-box").hidden = call !== "stylize";
  $("inpaint-tools").hidden = call !== "inpaint";
  $("mask").hidden = call !== "inpaint" || $("mask-mode").value !== "brush";
  if (call === "inpaint") {
    $("exemplar-box").hidden = state.models.inpaint.method !== "exe-gan";
    $("brush-box").hidden = $("mask-mode").value !== "brush";
  }
}

function query() {
  const params = new URLSearchParams();
  for (const c of CONTROLS[controlsKey()] || []) {
    const input = $(`control-${c.name}`);
    if (!input.disabled) params.set(c.name, input.value);
  }
  if ($("call").value === "inpaint" && $("mask-mode").value !== "brush") params.set("region", $("mask-mode").value);
  return params;
}

function schedule(delay = 300) {
  clearTimeout(state.timer);
  state.timer = setTimeout(run, delay);
}

async function maskBlob() {
  const canvas = $("mask");
  const out = Object.assign(document.createElement("canvas"), { width: canvas.width, height: canvas.height });
  const ctx = out.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.drawImage(canvas, 0, 0);
  return new Promise((resolve) => out.toBlob(resolve, "image/png"));
}

async function run() {
  if (!state.photo) return;
  const call = $("call").value;
  if (call === "inpaint" && $("mask-mode").value === "brush" && !state.painted) {
    say("Paint the part of the photo to fill (or choose a face region).", true);
    return;
  }
  const id = ++state.request;
  const path = call === "stylize" ? `/stylize/${encodeURIComponent($("style").value)}` : `/${call}`;
  let body = state.photo;
  const headers = { Accept: "application/json" };
  if (call === "inpaint" && ($("mask-mode").value === "brush" || state.exemplar)) {
    body = new FormData();
    body.append("image", state.photo);
    if ($("mask-mode").value === "brush") body.append("mask", await maskBlob(), "mask.png");
    if (state.exemplar && state.models.inpaint.method === "exe-gan") body.append("exemplar", state.exemplar);
  }
  say("Working...", true);
  $("run").disabled = true;
  try {
    const response = await fetch(`${path}?${query()}`, { method: "POST", body, headers });
    const reply = await response.json();
    if (id !== state.request) return;  // a newer request is on its way
    if (!response.ok) {
      say(reply.error || `error ${response.status}`);
      return;
    }
    $("after").src = `data:image/${reply.format === "jpg" ? "jpeg" : reply.format};base64,${reply.image}`;
    const n = reply.faces.length;
    $("faces").textContent = call === "inpaint" && state.models.inpaint.method === "grig"
      ? "GRIG needs no face." : `${n} face${n === 1 ? "" : "s"} found.`;
    $("timings").tBodies[0].replaceChildren(...Object.entries(reply.timings_ms).map(([stage, ms]) => {
      const row = document.createElement("tr");
      row.append(Object.assign(document.createElement("td"), { textContent: stage }),
                 Object.assign(document.createElement("td"), { textContent: ms.toFixed(1) }));
      return row;
    }));
    say(`Done (${reply.replica}, ${reply.batch} request(s) in its network run).`, true);
  } catch (err) {
    if (id === state.request) say(`The service did not answer: ${err}`);
  } finally {
    if (id === state.request) $("run").disabled = false;
  }
}

function choosePhoto(file) {
  if (!file) return;
  state.photo = file;
  state.painted = false;
  $("after").removeAttribute("src");
  $("before").src = URL.createObjectURL(file);
  $("run").disabled = false;
  schedule(0);
}

function setupMask() {
  const canvas = $("mask");
  const ctx = canvas.getContext("2d");
  let drawing = false;
  $("before").addEventListener("load", () => {
    canvas.width = $("before").naturalWidth;
    canvas.height = $("before").naturalHeight;
    canvas.style.width = "100%";
    canvas.style.height = "100%";
  });
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  };
  const paint = (event) => {
    if (!drawing) return;
    const [x, y] = point(event);
    const r = $("brush").value * canvas.width / canvas.getBoundingClientRect().width / 2;
    ctx.fillStyle = "#fff";
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fill();
    state.painted = true;
  };
  canvas.addEventListener("pointerdown", (e) => { drawing = true; canvas.setPointerCapture(e.pointerId); paint(e); });
  canvas.addEventListener("pointermove", paint);
  canvas.addEventListener("pointerup", () => { drawing = false; schedule(); });
  $("clear").addEventListener("click", () => { ctx.clearRect(0, 0, canvas.width, canvas.height); state.painted = false; });
}

async function start() {
  setupMask();
  try {
    state.models = await (await fetch("/models")).json();
  } catch (err) {
    say(`Cannot read /models: ${err}`);
    return;
  }
  const calls = Object.keys(state.models);
  $("call").replaceChildren(...calls.map((c) => new Option(c, c)));
  if (state.models.stylize) $("style").replaceChildren(...state.models.stylize.styles.map((s) => new Option(s, s)));
  if (state.models.inpaint) {
    for (const region of state.models.inpaint.regions || []) $("mask-mode").append(new Option(`face region: ${region}`, region));
  }
  $("models").textContent = calls.map((c) => {
    const m = state.models[c];
    return `${c}: ${m.resolution}x${m.resolution} on ${m.backend}${m.trained ? "" : " (random weights: results mean nothing)"}`;
  }).join(" · ");
  renderControls();
  for (const id of ["call", "mask-mode"]) $(id).addEventListener("change", () => { renderControls(); schedule(); });
  $("style").addEventListener("change", () => schedule());
  $("run").addEventListener("click", () => schedule(0));
  $("photo").addEventListener("change", (e) => choosePhoto(e.target.files[0]));
  $("exemplar").addEventListener("change", (e) => { state.exemplar = e.target.files[0] || null; schedule(); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); choosePhoto(e.dataTransfer.files[0]); });
}

start();
