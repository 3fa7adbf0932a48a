// A small SVG line chart (no library): several series over one x axis, linear or log y, a legend.
const SVG = "http://www.w3.org/2000/svg";
export const COLORS = ["#3b5bdb", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#1098ad", "#f08c00", "#495057"];
const M = { left: 58, right: 12, top: 12, bottom: 34 };

function node(tag, attrs, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

/** About `count` round tick values covering [lo, hi]. */
function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** Round values (1, 2, 5 times a power of ten; every digit when the range is narrow) on a log axis over
 * [10^lo, 10^hi], as their logs. */
function logTicks(lo, hi) {
  const pick = (mults) => {
    const out = [];
    for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
      for (const m of mults) {
        const t = Math.log10(m) + e;
        if (t >= lo && t <= hi) out.push(t);
      }
    }
    return out;
  };
  const coarse = pick([1, 2, 5]);
  return coarse.length >= 3 ? coarse : pick([1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

function label(v) {
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e5 || a < 1e-3) ? v.toExponential(1) : String(Number(v.toPrecision(4)));
}

/**
 * Draw `series` ([{label, color, points: [[x, y], ...], dashed, dots}]) into `svg`, replacing what it held.
 * Non-finite values are skipped; with logY, so are values <= 0.
 */
export function lineChart(svg, series, { logY = false, xLabel = "step", yLabel = "" } = {}) {
  const width = svg.clientWidth || 480;
  const height = svg.clientHeight || 260;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const usable = series.map((s) => ({
    ...s, points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0)),
  })).filter((s) => s.points.length);
  if (!usable.length) {
    svg.append(node("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no data yet"));
    return;
  }
  const ty = logY ? Math.log10 : (v) => v;
  const xs = usable.flatMap((s) => s.points.map((p) => p[0]));
  const ys = usable.flatMap((s) => s.points.map((p) => ty(p[1])));
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad; y1 += pad;
  const sx = (x) => M.left + ((x - x0) / (x1 - x0)) * (width - M.left - M.right);
  const sy = (y) => height - M.bottom - ((y - y0) / (y1 - y0)) * (height - M.top - M.bottom);
  for (const t of ticks(x0, x1)) {
    svg.append(node("line", { class: "grid", x1: sx(t), x2: sx(t), y1: M.top, y2: height - M.bottom }));
    svg.append(node("text", { x: sx(t), y: height - M.bottom + 14, "text-anchor": "middle" }, label(t)));
  }
  for (const t of logY ? logTicks(y0, y1) : ticks(y0, y1)) {
    svg.append(node("line", { class: "grid", x1: M.left, x2: width - M.right, y1: sy(t), y2: sy(t) }));
    svg.append(node("text", { x: M.left - 5, y: sy(t) + 4, "text-anchor": "end" }, label(logY ? 10 ** t : t)));
  }
  svg.append(node("line", { class: "axis", x1: M.left, x2: M.left, y1: M.top, y2: height - M.bottom }));
  const bottom = height - M.bottom;
  svg.append(node("line", { class: "axis", x1: M.left, x2: width - M.right, y1: bottom, y2: bottom }));
  svg.append(node("text", { x: (M.left + width) / 2, y: height - 4, "text-anchor": "middle" }, xLabel));
  svg.append(node("text", { x: 12, y: M.top + 2, transform: `rotate(-90 12 ${M.top + 2})`, "text-anchor": "end" },
    yLabel + (logY ? " (log)" : "")));
  usable.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    const d = s.points.map(([x, y], k) => `${k ? "L" : "M"}${sx(x).toFixed(1)},${sy(ty(y)).toFixed(1)}`).join("");
    svg.append(node("path", { d, fill: "none", stroke: color, "stroke-width": 1.6,
      "stroke-dasharray": s.dashed ? "5 3" : "", class: "series", "data-label": s.label }));
    if (s.dots || s.points.length < 3) {
      for (const [x, y] of s.points) svg.append(node("circle", { cx: sx(x), cy: sy(ty(y)), r: 2.5, fill: color }));
    }
    const ly = M.top + 12 + i * 14;
    svg.append(node("line", { x1: width - M.right - 150, x2: width - M.right - 132, y1: ly - 4, y2: ly - 4,
      stroke: color, "stroke-width": 2, "stroke-dasharray": s.dashed ? "5 3" : "" }));
    svg.append(node("text", { x: width - M.right - 128, y: ly }, s.label));
  });
}
