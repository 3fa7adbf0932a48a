// Helpers shared by the generate and runs pages.

/** fetch JSON from the API; a non-2xx answer throws an Error with the server's message. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(detail(data) || `${res.status} ${res.statusText}`);
  return data;
}

function detail(data) {
  if (typeof data.detail === "string") return data.detail;
  if (Array.isArray(data.detail)) {
    return data.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  return "";
}

/** el("div", {class: "x", onclick: f}, child, "text") */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export function fmtSeconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

export function fmtNumber(v, digits = 4) {
  return typeof v === "number" ? Number(v.toPrecision(digits)).toString() : String(v ?? "–");
}

// The model chosen in the page's #model select, among `models` (from /api/models).
export function selectedModel(models) {
  return models.find((m) => m.name === document.getElementById("model").value);
}

// The fields a model decides on the generate, grid and edit pages: a class or a prompt, its classes (`noClass`: the
// empty choice's words), its sampling defaults (an edit's steps depend on its strength: `steps` false leaves them).
export function showModelFields(m, { noClass = "all classes in turn", steps = true } = {}) {
  const $ = (id) => document.getElementById(id);
  $("class-row").hidden = m.kind !== "class";
  $("prompt-row").hidden = m.kind !== "text";
  $("class").replaceChildren(el("option", { value: "", text: noClass }),
    ...m.classes.map((name, i) => el("option", { value: i, text: name === String(i) ? name : `${i}: ${name}` })));
  $("sampler").options[0].textContent = `model default (${m.defaults.sampler})`;
  if (steps) $("steps").placeholder = m.defaults.steps;
  $("guidance").placeholder = m.defaults.guidance;
}
