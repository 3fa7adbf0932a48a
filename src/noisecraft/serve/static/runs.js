// The runs page: every run's status (polled), the selected run's curves (with compared runs overlaid), sample
// grids over steps, figures, reports and config; start, stop and resume training.
import { api, el, fmtNumber } from "./common.js";
import { COLORS, lineChart } from "./chart.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
const NOT_METRICS = new Set(["kind", "step", "time"]);
const NOT_LOSSES = new Set(["kind", "step", "lr", "img_per_s", "time", "nonfinite_steps"]);
let runs = [];
let selected = new URLSearchParams(location.search).get("run");
const compared = new Set();
const details = new Map(); // run name -> its latest GET /api/runs/{name}
let followGrids = true; // show the newest grid until the user moves the slider

async function init() {
  const options = await api("/api/options");
  const choice = (x) => el("option", { value: x.name, text: x.name, title: x.help });
  $("train-preset").replaceChildren(...options.presets.map(choice));
  const presetDefault = el("option", { value: "", text: "the preset's" });
  $("train-dataset").replaceChildren(presetDefault, ...options.datasets.map(choice));
  $("train-data-dir").disabled = !options.data_root;
  $("train-data-dir").placeholder = options.data_root ? "(the data root)" : "no --data-root given";
  $("train-form").addEventListener("submit", (e) => { e.preventDefault(); startTraining(); });
  $("stop").addEventListener("click", () => action("stop"));
  $("resume").addEventListener("click", () => action("resume", { steps: Number($("resume-steps").value) || null }));
  $("grid-slider").addEventListener("input", () => { followGrids = false; showGrid(); });
  window.addEventListener("resize", drawCharts);
  await poll();
}

async function poll() {
  try {
    runs = (await api("/api/runs")).runs;
    if (!selected && runs.length) selected = runs[0].name;
    renderTable();
    const names = [selected, ...compared].filter((n) => n && runs.some((r) => r.name === n));
    await Promise.all(names.map(async (n) => details.set(n, await api(`/api/runs/${encodePath(n)}`))));
    renderDetail();
  } catch (e) {
    $("runs-hint").textContent = `cannot reach the server: ${e.message}`;
  }
  setTimeout(poll, POLL_MS);
}

function encodePath(name) {
  return name.split("/").map(encodeURIComponent).join("/");
}

function select(name) {
  selected = name;
  followGrids = true;
  history.replaceState(null, "", `?run=${encodeURIComponent(name)}`);
  renderTable();
  pollOnce();
}

function compareBox(name) {
  return el("input", {
    type: "checkbox", checked: compared.has(name), onclick: (e) => e.stopPropagation(),
    onchange: async (e) => {
      if (e.target.checked) {
        compared.add(name);
        details.set(name, await api(`/api/runs/${encodePath(name)}`));
      } else {
        compared.delete(name);
      }
      drawCharts();
    },
  });
}

function fill(pct) {
  const bar = el("div");
  bar.style.width = `${pct}%`; // CSSOM, not a style attribute: the page's CSP allows no inline styles
  return bar;
}

function renderTable() {
  $("runs-hint").textContent = runs.length
    ? "click a run to open it; tick runs to overlay their curves" : "no runs under --runs yet";
  $("runs-table").tBodies[0].replaceChildren(...runs.map((r) => {
    const pct = r.total_steps ? Math.min(100, (100 * (r.step || 0)) / r.total_steps) : 0;
    const state = r.process_gone ? "running (process gone)" : r.state;
    const cell = (text) => el("td", { text: text ?? "–" });
    const attrs = { class: r.name === selected ? "selected" : null, "data-run": r.name, onclick: () => select(r.name) };
    return el("tr", attrs,
      el("td", {}, compareBox(r.name)), cell(r.name), cell(r.kind), cell(r.dataset),
      el("td", {}, el("span", { class: `badge ${r.state}`, text: state })),
      cell(`${r.step ?? "–"} / ${r.total_steps ?? "–"}`), el("td", {}, el("div", { class: "bar" }, fill(pct))),
      cell(fmtNumber(r.images_per_s, 3)), cell((r.updated || "").replace("T", " ").slice(0, 19)));
  }));
}

async function pollOnce() {
  if (!selected) return;
  details.set(selected, await api(`/api/runs/${encodePath(selected)}`));
  renderDetail();
}

function renderDetail() {
  const d = details.get(selected);
  $("detail").hidden = !d;
  if (!d) return;
  $("detail-title").textContent = d.name;
  $("detail-status").textContent = `${d.state} · step ${d.step ?? "–"} / ${d.total_steps ?? "–"} · ` +
    `${fmtNumber(d.images_per_s, 3)} images/s · started ${(d.started || "–").replace("T", " ")}` +
    (d.training_here ? " · training in this server" : "");
  $("detail-error").textContent = d.error || "";
  $("stop").disabled = !d.training_here;
  $("resume").disabled = d.training_here || !d.has_checkpoint;
  $("config").textContent = JSON.stringify(d.config, null, 2);
  drawCharts();
  renderGrids(d.grids);
  renderReports(d.reports);
  $("figures").replaceChildren(...d.figures.map((f) => el("a", { href: f.url, target: "_blank", title: f.name },
    el("img", { src: `${f.url}?t=${encodeURIComponent(d.updated || "")}`, alt: f.name }))));
}

function numericKeys(records, skip) {
  return [...new Set(records.flatMap((r) => Object.keys(r).filter((k) => !skip.has(k) && typeof r[k] === "number")))];
}

function curve(records, key) {
  return records.filter((r) => typeof r[key] === "number").map((r) => [r.step, r[key]]);
}

function lossSeries(name, d, color) {
  const prefix = compared.size ? `${name} ` : "";
  const train = d.curves.train;
  return [
    ...numericKeys(train, NOT_LOSSES).map((k) => ({ label: `${prefix}train ${k}`, color, points: curve(train, k) })),
    { label: `${prefix}validation`, color, dashed: true, dots: true, points: curve(d.curves.val, "val_loss") },
  ];
}

function metricSeries(name, d, color) {
  const prefix = compared.size ? `${name} ` : "";
  return numericKeys(d.curves.eval, NOT_METRICS).map((k, i) => ({
    label: `${prefix}${k}`, color: compared.size ? color : COLORS[i % COLORS.length], dots: true,
    points: curve(d.curves.eval, k),
  }));
}

function drawCharts() {
  const names = [selected, ...[...compared].filter((n) => n !== selected)].filter((n) => details.has(n));
  const color = (i) => COLORS[i % COLORS.length];
  lineChart($("loss-chart"), names.flatMap((n, i) => lossSeries(n, details.get(n), color(i))),
    { logY: true, yLabel: "loss" });
  lineChart($("metric-chart"), names.flatMap((n, i) => metricSeries(n, details.get(n), color(i))),
    { yLabel: "metric" });
}

function renderGrids(grids) {
  const slider = $("grid-slider");
  slider.max = Math.max(0, grids.length - 1);
  slider.disabled = grids.length < 2;
  if (followGrids || Number(slider.value) > grids.length - 1) slider.value = grids.length - 1;
  slider.grids = grids;
  showGrid();
}

function showGrid() {
  const slider = $("grid-slider");
  const grids = slider.grids || [];
  const i = Number(slider.value);
  const g = grids[i];
  $("grid-img").hidden = !g;
  if (!g) {
    $("grid-label").textContent = "no sample grids yet";
    return;
  }
  $("grid-label").textContent = `${g.step === null ? "final samples" : `step ${g.step}`} (${i + 1} of ${grids.length})`;
  if ($("grid-img").getAttribute("src") !== g.url) $("grid-img").src = g.url;
}

const NOT_REPORTED = new Set(["timing", "sampling", "classifier", "step", "n", "seed"]);

/** [["generated.fd", 5.8], ...]: the numbers of an evaluation report, by their path (arrays left out). */
function reportMetrics(obj, prefix = "") {
  return Object.entries(obj ?? {}).flatMap(([k, v]) => {
    if (NOT_REPORTED.has(k)) return [];
    const path = prefix ? `${prefix}.${k}` : k;
    if (typeof v === "number") return [[path, v]];
    return v && typeof v === "object" && !Array.isArray(v) ? reportMetrics(v, k === "offline" ? "" : path) : [];
  });
}

function renderReports(reports) {
  if (!reports.length) return;
  const row = ([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: fmtNumber(v) }));
  $("reports").replaceChildren(...reports.map((r) => {
    const s = r.report?.sampling;
    const what = s ? ` step ${r.report.step}: ${s.n} samples, ${s.sampler} ${s.steps} steps, w ${s.guidance} ` : " ";
    const link = r.markdown_url ? el("a", { href: r.markdown_url, target: "_blank", text: "report.md" }) : null;
    const table = el("table", {}, el("tbody", {}, ...reportMetrics(r.report).map(row)));
    return el("div", {}, el("strong", { text: r.name }), what, link, table);
  }));
}

function overrides() {
  const out = {};
  for (const line of $("train-overrides").value.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const [k, ...v] = line.replace(/^--/, "").split("=");
    out[k.trim()] = v.join("=").trim();
  }
  return out;
}

async function startTraining() {
  const text = (id) => $(id).value.trim() || null;
  const body = { name: $("train-name").value.trim(), preset: $("train-preset").value, dataset: text("train-dataset"),
    data_dir: text("train-data-dir"), steps: Number($("train-steps").value) || null, overrides: overrides() };
  try {
    const r = await api("/api/train", { method: "POST", body });
    $("train-msg").textContent = `started ${r.name} (pid ${r.pid})`;
    select(r.name);
  } catch (e) {
    $("train-msg").textContent = e.message;
  }
}

async function action(kind, body) {
  try {
    await api(`/api/runs/${encodePath(selected)}/${kind}`, { method: "POST", body });
    $("detail-error").textContent = kind === "stop" ? "stopping: the trainer saves its checkpoint first" : "resumed";
  } catch (e) {
    $("detail-error").textContent = e.message;
  }
}

init().catch((e) => { $("runs-hint").textContent = `cannot load: ${e.message}`; });
