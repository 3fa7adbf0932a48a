// The grid page: axes and their values over /api/options' grid axes, a grid job followed through its event
// stream (each cell shown as it finishes), and a click on a cell hands its settings to the generate page.
import { api, el, fmtSeconds, selectedModel, showModelFields } from "./common.js";
import { REUSE_KEY, loadChoices } from "./jobs.js";

const $ = (id) => document.getElementById(id);
const AXES = ["x", "y", "z"];
let models = [];
let job = null; // {id, events}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function busy(on) {
  $("draw").disabled = on;
  $("cancel").disabled = !on;
}

async function init() {
  models = await loadChoices({ status });
  const options = await api("/api/options");
  const choices = () => [el("option", { value: "", text: "—" }),
    ...options.grid_axes.map((a) => el("option", { value: a.name, text: a.name, title: a.help }))];
  for (const k of AXES) $(`${k}-axis`).replaceChildren(...choices());
  $("x-axis").value = "steps";
  $("y-axis").value = "guidance";
  $("model").addEventListener("change", showModel);
  $("form").addEventListener("submit", (e) => { e.preventDefault(); start(); });
  $("cancel").addEventListener("click", cancel);
  showModel();
}

function model() {
  return selectedModel(models);
}

function showModel() {
  const m = model();
  if (!m) return;
  showModelFields(m);
  $("model-info").textContent = `${m.kind} · ${m.image_size}×${m.image_size}×${m.channels} · step ${m.step}`;
}

function numberOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function axis(k) {
  const name = $(`${k}-axis`).value;
  return name ? `${name}=${$(`${k}-values`).value.trim()}` : null;
}

function request() {
  const kind = model()?.kind;
  return {
    model: $("model").value, x: axis("x"), y: axis("y"), z: axis("z"),
    class_index: kind === "class" ? numberOrNull("class") : null,
    prompt: kind === "text" ? $("prompt").value : null,
    sampler: $("sampler").value || null, steps: numberOrNull("steps"), guidance: numberOrNull("guidance"),
    seed: numberOrNull("seed") ?? 0, n: numberOrNull("n") ?? 1,
  };
}

async function start() {
  busy(true);
  $("progress").value = 0;
  $("sheet").hidden = true;
  status("submitting…");
  try {
    const started = await api("/api/grid", { method: "POST", body: request() });
    layout(started.grid);
    follow(started);
  } catch (e) {
    status(e.message, true);
    busy(false);
  }
}

/** One table per z value: x values as column heads, y values as row heads, an empty cell per grid cell. */
function layout(grid) {
  const label = (k, i) => (grid.axes[k] ? grid.axes[k].labels[i] : "");
  const title = (k) => (grid.axes[k] ? grid.axes[k].name : "");
  const tables = [];
  for (let z = 0; z < grid.shape.z; z++) {
    const head = el("tr", {}, el("th", { text: `${title("y")} \\ ${title("x")}` }),
      ...Array.from({ length: grid.shape.x }, (_, x) => el("th", { text: label("x", x) })));
    const rows = Array.from({ length: grid.shape.y }, (_, y) => el("tr", {}, el("th", { text: label("y", y) }),
      ...Array.from({ length: grid.shape.x }, (_, x) => el("td", {
        "data-index": (z * grid.shape.y + y) * grid.shape.x + x, class: "pending" }))));
    const caption = grid.axes.z ? el("caption", { text: `${title("z")} = ${label("z", z)}` }) : null;
    tables.push(el("table", { class: "xyz-table" }, caption, el("thead", {}, head), el("tbody", {}, ...rows)));
  }
  $("grid").replaceChildren(...tables);
}

function follow(started) {
  const events = new EventSource(started.events);
  job = { id: started.id, events };
  const end = (text, isError = false) => {
    events.close();
    job = null;
    $("eta").textContent = "";
    status(text, isError);
    busy(false);
  };
  events.addEventListener("queued", (e) => status(`queued (place ${JSON.parse(e.data).position})`));
  events.addEventListener("progress", (e) => {
    const d = JSON.parse(e.data);
    $("progress").value = d.step / d.total;
    status(`step ${d.step} / ${d.total} · ${d.cells_done} cell(s) done`);
    $("eta").textContent = `ETA ${fmtSeconds(d.eta_s)}`;
  });
  events.addEventListener("cell", (e) => showCell(JSON.parse(e.data)));
  events.addEventListener("done", (e) => {
    const d = JSON.parse(e.data);
    $("progress").value = 1;
    if (d.sheet) {
      $("sheet").href = d.sheet;
      $("sheet").hidden = false;
    }
    end(`done: ${document.querySelectorAll("#grid td.done").length} cells in ${fmtSeconds(d.elapsed_s)}`);
  });
  events.addEventListener("cancelled", (e) => end(`cancelled: ${JSON.parse(e.data).message}`));
  events.addEventListener("error", (e) => end(e.data ? `error: ${JSON.parse(e.data).message}`
    : "connection to the server lost", true));
}

function showCell(d) {
  const td = document.querySelector(`#grid td[data-index="${d.index}"]`);
  if (!td) return;
  td.className = "done";
  td.replaceChildren(el("img", { src: d.url, class: "pixelated", alt: Object.values(d.values).join(" · "),
    title: `${d.parameters}\n(click: reuse these settings on the Generate page)`, onclick: () => reuse(d.settings) }));
}

/** Hand a cell's settings to the generate page, which fills its form to draw the cell's images again. */
function reuse(settings) {
  sessionStorage.setItem(REUSE_KEY, JSON.stringify(settings));
  location.href = "/";
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

init().catch((e) => status(`cannot load models: ${e.message}`, true));
