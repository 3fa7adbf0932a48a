// The edit page: an image drawn on a canvas (mouse, pen or touch), uploaded, or handed over by "edit" on a
// gallery image; an optional mask painted over it; POST /api/edit (multipart: the image and mask as PNG files at
// the model's size) followed like a generation (jobs.js): live preview of the x0 estimate, cancel, gallery.
import { el, selectedModel, showModelFields } from "./common.js";
import { EDIT_KEY, Gallery, JobView, loadChoices } from "./jobs.js";

const $ = (id) => document.getElementById(id);
const BOX = 256; // CSS pixels of the canvas box
let models = [];
let size = 28; // the model's image size: what the exported image and mask have
let strengthTouched = false; // until the slider is moved, a mask sets strength 1 (inpainting) and no mask 0.6
const view = new JobView("edit");
const gallery = new Gallery("gallery", { onReuse: reuse, onEdit: (item) => loadImage(item.src) });
const image = () => $("canvas").getContext("2d");
const mask = () => $("mask").getContext("2d");

async function init() {
  models = await loadChoices(view);
  $("model").addEventListener("change", () => showModel(true));
  $("form").addEventListener("submit", (e) => { e.preventDefault(); submit(); });
  $("strength").addEventListener("input", () => {
    strengthTouched = true;
    $("strength-value").textContent = $("strength").value;
  });
  $("clear-gallery").addEventListener("click", () => gallery.clear());
  $("clear-image").addEventListener("click", clearImage);
  $("clear-mask").addEventListener("click", clearMask);
  $("upload").addEventListener("change", upload);
  drawing();
  showModel(true);
  gallery.render();
  const handed = sessionStorage.getItem(EDIT_KEY);
  if (handed) {
    sessionStorage.removeItem(EDIT_KEY);
    const { src, settings } = JSON.parse(handed);
    reuse(settings);
    await loadImage(src);
  }
}

function model() {
  return selectedModel(models);
}

function showModel(reset) {
  const m = model();
  if (!m) return;
  showModelFields(m, { noClass: "none: keep what the image shows", steps: false });
  $("colour").parentElement.hidden = m.channels === 1;
  $("model-info").textContent = `${m.kind} · ${m.image_size}×${m.image_size}×${m.channels} · step ${m.step}`;
  if (reset || m.image_size !== size) {
    size = m.image_size;
    const px = size * Math.max(1, Math.floor(BOX / size)); // drawn finer than the model's pixels, exported at them
    for (const c of [$("canvas"), $("mask")]) {
      c.width = px;
      c.height = px;
    }
    clearImage();
    clearMask();
  }
}

// ---- drawing: pointer events (mouse, pen, touch) on the mask canvas, which lies on top

function drawing() {
  const top = $("mask");
  let last = null;
  const at = (e) => {
    const r = top.getBoundingClientRect();
    return [(e.clientX - r.left) * top.width / r.width, (e.clientY - r.top) * top.height / r.height];
  };
  const stroke = (from, to) => {
    const tool = document.querySelector("input[name=tool]:checked").value;
    const ctx = tool === "draw" ? image() : mask();
    ctx.save();
    ctx.globalCompositeOperation = tool === "unmask" ? "destination-out" : "source-over";
    ctx.strokeStyle = tool === "draw" ? brushColour() : "#ff0000";
    ctx.lineWidth = Number($("brush").value) * top.width / size;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(...from);
    ctx.lineTo(...to);
    ctx.stroke();
    ctx.restore();
  };
  top.addEventListener("pointerdown", (e) => {
    top.setPointerCapture(e.pointerId);
    if (document.querySelector("input[name=tool]:checked").value === "mask") defaultStrength(1);
    last = at(e);
    stroke(last, last);
  });
  top.addEventListener("pointermove", (e) => {
    if (!last) return;
    const p = at(e);
    stroke(last, p);
    last = p;
  });
  for (const end of ["pointerup", "pointercancel"]) top.addEventListener(end, () => { last = null; });
}

function brushColour() {
  return model()?.channels === 1 ? "#ffffff" : $("colour").value;
}

function clearImage() {
  const ctx = image();
  ctx.fillStyle = model()?.channels === 3 ? "#ffffff" : "#000000"; // digits are white on black
  ctx.fillRect(0, 0, $("canvas").width, $("canvas").height);
}

function clearMask() {
  mask().clearRect(0, 0, $("mask").width, $("mask").height);
  defaultStrength(0.6);
}

function defaultStrength(value) {
  if (strengthTouched) return;
  $("strength").value = value;
  $("strength-value").textContent = value;
}

async function loadImage(src) {
  const img = new Image();
  img.src = src;
  await img.decode();
  const c = $("canvas");
  const scale = Math.max(c.width / img.width, c.height / img.height); // cover, centred: as the server converts
  const w = img.width * scale;
  const h = img.height * scale;
  clearImage();
  image().imageSmoothingEnabled = img.width > size;
  image().drawImage(img, (c.width - w) / 2, (c.height - h) / 2, w, h);
  clearMask();
  view.status("image loaded: paint a mask to inpaint, or edit the whole image");
}

async function upload() {
  const file = $("upload").files[0];
  if (!file) return;
  const url = URL.createObjectURL(file);
  try {
    await loadImage(url);
  } catch {
    view.status(`cannot read ${file.name} as an image`, true);
  } finally {
    URL.revokeObjectURL(url);
  }
}

// ---- the request: the image and mask at the model's size, as PNG files

function atModelSize(source, binary) {
  const c = el("canvas", { width: size, height: size });
  const ctx = c.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, 0, 0, size, size);
  if (binary) { // the painted share of each pixel -> white (regenerate) or black
    const data = ctx.getImageData(0, 0, size, size);
    let painted = 0;
    for (let i = 0; i < data.data.length; i += 4) {
      const on = data.data[i + 3] > 127;
      painted += on;
      data.data.fill(on ? 255 : 0, i, i + 3);
      data.data[i + 3] = 255;
    }
    if (!painted) return null;
    ctx.putImageData(data, 0, 0);
  }
  return new Promise((resolve) => c.toBlob(resolve, "image/png"));
}

async function submit() {
  const m = model();
  const form = new FormData();
  const fields = {
    model: $("model").value, strength: $("strength").value, seed: $("seed").value, n: $("n").value,
    class_index: m?.kind === "class" ? $("class").value : "", prompt: m?.kind === "text" ? $("prompt").value : "",
    sampler: $("sampler").value, steps: $("steps").value, guidance: $("guidance").value,
  };
  for (const [k, v] of Object.entries(fields)) if (v !== "") form.append(k, v);
  form.append("image", await atModelSize($("canvas"), false), "image.png");
  const maskPng = await atModelSize($("mask"), true);
  if (maskPng) form.append("mask", maskPng, "mask.png");
  view.submit("/api/edit", form, (images) => gallery.add(images));
}

function reuse(s) {
  if (models.some((m) => m.name === s.model)) {
    $("model").value = s.model;
    showModel(false);
  }
  $("class").value = s.class === "none" ? "" : s.class ?? "";
  $("prompt").value = s.prompt ?? "";
  $("sampler").value = s.sampler;
  $("guidance").value = s.guidance;
  $("seed").value = s.image_seed;
  $("n").value = 1;
  if (s.denoising_strength !== undefined) {
    strengthTouched = true;
    $("strength").value = s.denoising_strength;
    $("strength-value").textContent = s.denoising_strength;
  }
  view.status("settings filled in from the gallery image");
}

init().catch((e) => view.status(`cannot load models: ${e.message}`, true));
