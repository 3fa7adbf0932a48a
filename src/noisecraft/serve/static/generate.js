// The generate page: a form over /api/models and /api/options, a job followed through its event stream (live
// preview of the x0 estimate, progress, ETA, cancel), and a gallery kept in localStorage across reloads.
import { api, el, fmtSeconds } from "./common.js";

const $ = (id) => document.getElementById(id);
const GALLERY_KEY = "noisecraft.gallery.v1";
const MAX_GALLERY = 200;
let models = [];
let job = null; // {id, events: EventSource}

async function init() {
  const [options, list] = await Promise.all([api("/api/options"), api("/api/models")]);
  models = list.models;
  $("n").max = options.limits.n;
  $("steps").max = options.limits.steps;
  $("sampler").replaceChildren(el("option", { value: "", text: "model default" }),
    ...options.samplers.map((s) => el("option", { value: s.name, text: s.name, title: s.help })));
  $("model").replaceChildren(...models.map((m) => el("option", { value: m.name, text: `${m.name} (${m.kind})` })));
  if (!models.length) status("no trained models under --runs yet: train one on the Runs page", true);
  $("model").addEventListener("change", showModel);
  $("form").addEventListener("submit", (e) => { e.preventDefault(); generate(); });
  $("cancel").addEventListener("click", cancel);
  $("clear-gallery").addEventListener("click", () => { saveGallery([]); renderGallery(); });
  $("random-seed").addEventListener("change", () => { $("seed").disabled = $("random-seed").checked; });
  $("preview").addEventListener("load", scalePreview);
  showModel();
  renderGallery();
}

function model() {
  return models.find((m) => m.name === $("model").value);
}

function showModel() {
  const m = model();
  if (!m) return;
  $("class-row").hidden = m.kind !== "class";
  $("prompt-row").hidden = m.kind !== "text";
  $("class").replaceChildren(el("option", { value: "", text: "all classes in turn" }),
    ...m.classes.map((name, i) => el("option", { value: i, text: name === String(i) ? name : `${i}: ${name}` })));
  $("sampler").options[0].textContent = `model default (${m.defaults.sampler})`;
  $("steps").placeholder = m.defaults.steps;
  $("guidance").placeholder = m.defaults.guidance;
  const size = `${m.image_size}×${m.image_size}×${m.channels}`;
  $("model-info").textContent = `${m.kind} · ${size} · step ${m.step} · ${m.state}`;
}

function numberOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function request() {
  const kind = model()?.kind;
  return {
    model: $("model").value,
    class_index: kind === "class" ? numberOrNull("class") : null,
    prompt: kind === "text" ? $("prompt").value : null,
    negative_prompt: kind === "text" ? $("negative").value : null,
    sampler: $("sampler").value || null,
    steps: numberOrNull("steps"),
    guidance: numberOrNull("guidance"),
    seed: $("random-seed").checked ? null : numberOrNull("seed") ?? 0,
    n: numberOrNull("n") ?? 1,
  };
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function busy(on) {
  $("generate").disabled = on;
  $("cancel").disabled = !on;
}

async function generate() {
  busy(true);
  $("progress").value = 0;
  $("eta").textContent = "";
  status("submitting…");
  try {
    const started = await api("/api/generate", { method: "POST", body: request() });
    follow(started);
  } catch (e) {
    status(e.message, true);
    busy(false);
  }
}

function follow(started) {
  const events = new EventSource(started.events);
  job = { id: started.id, events };
  const end = (text, isError = false) => {
    events.close();
    $("eta").textContent = "";
    if (job && job.id === started.id) job = null;
    status(text, isError);
    busy(false);
  };
  events.addEventListener("queued", (e) => status(`queued (place ${JSON.parse(e.data).position})`));
  events.addEventListener("progress", (e) => {
    const d = JSON.parse(e.data);
    $("progress").value = d.step / d.total;
    const shared = d.batched_with > 1 ? ` · batched with ${d.batched_with - 1} other job(s)` : "";
    status(`step ${d.step} / ${d.total}${shared}`);
    $("eta").textContent = `ETA ${fmtSeconds(d.eta_s)}`;
    if (d.preview) {
      $("preview").src = d.preview;
      $("preview").hidden = false;
    }
  });
  events.addEventListener("done", async (e) => {
    const d = JSON.parse(e.data);
    $("progress").value = 1;
    end(`done: ${d.images.length} image(s) in ${fmtSeconds(d.elapsed_s)}`);
    await addToGallery(d.images);
  });
  events.addEventListener("cancelled", (e) => {
    const why = JSON.parse(e.data).message;
    end(why === "cancelled" ? "cancelled" : `cancelled: ${why}`);
  });
  events.addEventListener("error", (e) => {
    // A job's `error` event carries data; a dropped connection does not.
    end(e.data ? `error: ${JSON.parse(e.data).message}` : "connection to the server lost", true);
  });
}

async function cancel() {
  if (!job) return;
  $("cancel").disabled = true;
  try {
    await api(`/api/jobs/${job.id}`, { method: "DELETE" });
  } catch (e) {
    status(e.message, true);
  }
}

function scalePreview() {
  const img = $("preview");
  const scale = Math.max(1, Math.min(8, Math.floor(img.parentElement.clientWidth / img.naturalWidth)));
  img.style.width = `${img.naturalWidth * scale}px`;
}

// ---- gallery: the images themselves (data URLs, with their `parameters` chunk) and their settings

function loadGallery() {
  try {
    return JSON.parse(localStorage.getItem(GALLERY_KEY)) || [];
  } catch {
    return [];
  }
}

function saveGallery(items) {
  items = items.slice(0, MAX_GALLERY);
  while (items.length) {
    try {
      localStorage.setItem(GALLERY_KEY, JSON.stringify(items));
      return;
    } catch {
      items = items.slice(0, Math.floor(items.length * 0.8)); // storage full: drop the oldest
    }
  }
  localStorage.removeItem(GALLERY_KEY);
}

async function asDataUrl(url) {
  const blob = await (await fetch(url)).blob();
  return new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.readAsDataURL(blob);
  });
}

async function addToGallery(images) {
  const items = await Promise.all(images.map(async (img) => ({
    src: await asDataUrl(img.url), settings: img.settings, parameters: img.parameters, created: Date.now(),
  })));
  saveGallery([...items, ...loadGallery()]); // newest job first, its images in order
  renderGallery();
}

function caption(s) {
  const what = s.prompt ? `“${s.prompt}”` : s.class_name !== undefined ? `class ${s.class_name}` : "";
  return `${what} · ${s.sampler} ${s.steps} · w ${s.guidance} · seed ${s.image_seed}`;
}

function renderGallery() {
  $("gallery").replaceChildren(...loadGallery().map((item) => el("div", { class: "card" },
    el("img", { src: item.src, class: "pixelated", alt: caption(item.settings), title: item.parameters }),
    el("div", { class: "meta", text: `${item.settings.model} · ${caption(item.settings)}` }),
    el("div", { class: "buttons" },
      el("a", { class: "button", href: item.src, download: `noisecraft-${item.settings.image_seed}.png`,
        text: "download" }),
      el("button", { type: "button", text: "reuse", onclick: () => reuse(item.settings) })))));
}

function reuse(s) {
  if (models.some((m) => m.name === s.model)) {
    $("model").value = s.model;
    showModel();
  }
  $("class").value = s.class ?? "";
  $("prompt").value = s.prompt ?? "";
  $("negative").value = s.negative_prompt ?? "";
  $("sampler").value = s.sampler;
  $("steps").value = s.steps;
  $("guidance").value = s.guidance;
  $("random-seed").checked = false;
  $("seed").disabled = false;
  $("seed").value = s.image_seed; // with n = 1 this draws the very image again
  $("n").value = 1;
  status("settings filled in from the gallery image");
}

init().catch((e) => status(`cannot load models: ${e.message}`, true));
