// The generate page: a form over /api/models and /api/options, a job followed through its event stream (live
// preview of the x0 estimate, progress, ETA, cancel), and the gallery (jobs.js).
import { el, selectedModel, showModelFields } from "./common.js";
import { Gallery, JobView, REUSE_KEY, editElsewhere, loadChoices } from "./jobs.js";

const $ = (id) => document.getElementById(id);
let models = [];
const view = new JobView("generate");
const gallery = new Gallery("gallery", { onReuse: reuse, onEdit: editElsewhere });

async function init() {
  models = await loadChoices(view);
  $("model").addEventListener("change", showModel);
  $("form").addEventListener("submit", (e) => {
    e.preventDefault();
    view.submit("/api/generate", request(), (images) => gallery.add(images));
  });
  $("clear-gallery").addEventListener("click", () => gallery.clear());
  $("random-seed").addEventListener("change", () => { $("seed").disabled = $("random-seed").checked; });
  for (const id of ["class", "prompt", "seed", "steps", "guidance", "n"]) $(id).addEventListener("change", instant);
  showModel();
  gallery.render();
  reuseHanded();
}

// A grid cell clicked on the grid page: its settings, to draw the cell's images (seed + i, n of them) again.
function reuseHanded() {
  const handed = sessionStorage.getItem(REUSE_KEY);
  if (!handed) return;
  sessionStorage.removeItem(REUSE_KEY);
  const s = JSON.parse(handed);
  reuse({ ...s, image_seed: s.image_seed ?? s.seed });
  $("n").value = s.batch_size ?? 1;
  view.status("settings filled in from the grid cell");
}

function model() {
  return selectedModel(models);
}

function showModel() {
  const m = model();
  if (!m) return;
  showModelFields(m);
  const size = `${m.image_size}×${m.image_size}×${m.channels}`;
  const fewStep = m.few_step ? " · few-step student: 1-4 calls an image" : "";
  $("model-info").textContent = `${m.kind} · ${size} · step ${m.step} · ${m.state}${fewStep}`;
  $("instant-row").hidden = !m.few_step;
  showLoras(m.loras ?? []);
}

// One slider per adapter trained on this model (a finetune run under --runs, or serve --lora), scale -2..2.
function showLoras(loras) {
  $("lora-row").hidden = loras.length === 0;
  $("loras").replaceChildren(...loras.map((a) => {
    const value = el("span", { text: "0" });
    const slider = el("input", { type: "range", min: "-2", max: "2", step: "0.1", value: "0" });
    slider.dataset.lora = a.name;
    slider.setAttribute("aria-label", `scale of ${a.name}`);
    slider.addEventListener("input", () => { value.textContent = slider.value; });
    const trigger = a.trigger ? ` (trigger: ${a.trigger})` : "";
    return el("div", { class: "lora" }, el("span", { text: `${a.name}${trigger}` }), slider, value);
  }));
}

function loraScales() {
  const out = {};
  for (const s of document.querySelectorAll("#loras input[data-lora]")) {
    if (Number(s.value) !== 0) out[s.dataset.lora] = Number(s.value);
  }
  return out;
}

// A few-step student draws in a blink: with "instant" on, every change of the settings draws again.
function instant() {
  if (!model()?.few_step || !$("instant").checked || view.job) return;
  clearTimeout(instant.timer);
  instant.timer = setTimeout(() => view.submit("/api/generate", request(), (images) => gallery.add(images)), 250);
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
    loras: loraScales(),
  };
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
  view.status("settings filled in from the gallery image");
}

init().catch((e) => view.status(`cannot load models: ${e.message}`, true));
