// What the generate and edit pages share: a job followed through its event stream (queued, live preview,
// progress, ETA, cancel, outcome) and a gallery of finished images kept in localStorage across reloads.
import { api, el, fmtSeconds } from "./common.js";

const $ = (id) => document.getElementById(id);
const GALLERY_KEY = "noisecraft.gallery.v1";
const MAX_GALLERY = 200;
export const EDIT_KEY = "noisecraft.edit.v1"; // sessionStorage: the image "edit" hands to the edit page
export const REUSE_KEY = "noisecraft.reuse.v1"; // sessionStorage: the settings a grid cell hands to the generate page

/** The settings form's choices from /api/options and /api/models (limits, samplers, models); returns the models. */
export async function loadChoices(view) {
  const [options, list] = await Promise.all([api("/api/options"), api("/api/models")]);
  $("n").max = options.limits.n;
  $("steps").max = options.limits.steps;
  $("sampler").replaceChildren(el("option", { value: "", text: "model default" }),
    ...options.samplers.map((s) => el("option", { value: s.name, text: s.name, title: s.help })));
  $("model").replaceChildren(...list.models.map((m) => el("option", { value: m.name, text: `${m.name} (${m.kind})` })));
  if (!list.models.length) view.status("no trained models under --runs yet: train one on the Runs page", true);
  return list.models;
}

/** The page's status line, progress bar, ETA, preview and buttons (ids: status, progress, eta, preview, cancel and
 * `submitId`), and the job being followed. */
export class JobView {
  constructor(submitId) {
    this.submitId = submitId;
    this.job = null; // {id, events}
    $("cancel").addEventListener("click", () => this.cancel());
    $("preview").addEventListener("load", scalePreview);
  }

  status(text, isError = false) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  busy(on) {
    $(this.submitId).disabled = on;
    $("cancel").disabled = !on;
  }

  /** POST `body` to `path` (a JSON object, or FormData) and follow the job; `onDone(images)` gets its images. */
  async submit(path, body, onDone) {
    this.busy(true);
    $("progress").value = 0;
    $("eta").textContent = "";
    this.status("submitting…");
    try {
      const started = body instanceof FormData ? await postForm(path, body) : await api(path, { method: "POST", body });
      this.follow(started, onDone);
    } catch (e) {
      this.status(e.message, true);
      this.busy(false);
    }
  }

  follow(started, onDone) {
    const events = new EventSource(started.events);
    this.job = { id: started.id, events };
    const end = (text, isError = false) => {
      events.close();
      $("eta").textContent = "";
      if (this.job && this.job.id === started.id) this.job = null;
      this.status(text, isError);
      this.busy(false);
    };
    events.addEventListener("queued", (e) => this.status(`queued (place ${JSON.parse(e.data).position})`));
    events.addEventListener("progress", (e) => {
      const d = JSON.parse(e.data);
      $("progress").value = d.step / d.total;
      const shared = d.batched_with > 1 ? ` · batched with ${d.batched_with - 1} other job(s)` : "";
      this.status(`step ${d.step} / ${d.total}${shared}`);
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
      await onDone(d.images);
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

  async cancel() {
    if (!this.job) return;
    $("cancel").disabled = true;
    try {
      await api(`/api/jobs/${this.job.id}`, { method: "DELETE" });
    } catch (e) {
      this.status(e.message, true);
    }
  }
}

async function postForm(path, form) {
  const res = await fetch(path, { method: "POST", body: form });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(typeof data.detail === "string" ? data.detail : `${res.status} ${res.statusText}`);
  return data;
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

export async function asDataUrl(url) {
  const blob = await (await fetch(url)).blob();
  return new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.readAsDataURL(blob);
  });
}

function caption(s) {
  const what = s.prompt ? `“${s.prompt}”` : s.class_name !== undefined ? `class ${s.class_name}` : "";
  const edit = s.denoising_strength !== undefined ? ` · ${s.mask ? "inpaint" : "img2img"} ${s.denoising_strength}` : "";
  return `${what}${edit} · ${s.sampler} ${s.steps} · w ${s.guidance} · seed ${s.image_seed}`;
}

/** The gallery in element `id`: newest first, each image with download, "reuse" (`onReuse(settings)`) and
 * "edit" (`onEdit(item)`) buttons. */
export class Gallery {
  constructor(id, { onReuse, onEdit }) {
    this.id = id;
    this.onReuse = onReuse;
    this.onEdit = onEdit;
  }

  async add(images) {
    const items = await Promise.all(images.map(async (img) => ({
      src: await asDataUrl(img.url), settings: img.settings, parameters: img.parameters, created: Date.now(),
    })));
    saveGallery([...items, ...loadGallery()]); // newest job first, its images in order
    this.render();
  }

  clear() {
    saveGallery([]);
    this.render();
  }

  render() {
    $(this.id).replaceChildren(...loadGallery().map((item) => el("div", { class: "card" },
      el("img", { src: item.src, class: "pixelated", alt: caption(item.settings), title: item.parameters }),
      el("div", { class: "meta", text: `${item.settings.model} · ${caption(item.settings)}` }),
      el("div", { class: "buttons" },
        el("a", { class: "button", href: item.src, download: `noisecraft-${item.settings.image_seed}.png`,
          text: "download" }),
        el("button", { type: "button", text: "reuse", onclick: () => this.onReuse(item.settings) }),
        el("button", { type: "button", text: "edit", onclick: () => this.onEdit(item) })))));
  }
}

/** "edit" on a gallery image, from any page: hand it to the edit page. */
export function editElsewhere(item) {
  sessionStorage.setItem(EDIT_KEY, JSON.stringify({ src: item.src, settings: item.settings }));
  location.href = "/edit";
}
