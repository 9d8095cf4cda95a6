// The last hour (web/chart.js), an inline SVG built with DOM calls: a bar per minute for
// the deliveries (status.last_hour.delivered_per_minute, oldest first; left scale), and two
// horizontal lines on the right scale: the hour's p95 of customs' call to delivered and the
// deadline. The API gives one p95 for the whole hour, not one per minute, so the p95 is a
// level line over the hour, not a curve.

import { $, svg } from "./dom.js";
import { t, duration } from "./i18n.js";

const W = 640;
const H = 180;
const PAD = { left: 36, right: 96, top: 12, bottom: 22 };

let shown = null;

export function render(hour) {
  if (!hour) return;
  const key = JSON.stringify([hour, document.documentElement.lang]);
  if (key === shown) return;
  shown = key;
  const counts = hour.delivered_per_minute || [];
  const peak = Math.max(1, ...counts);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const barW = plotW / Math.max(counts.length, 1);
  const bottom = PAD.top + plotH;
  const nodes = [
    svg("title", {}, t("chart")),
    svg("line", { class: "axis", x1: PAD.left, y1: bottom, x2: W - PAD.right, y2: bottom }),
    svg("text", { class: "scale", x: PAD.left - 4, y: PAD.top + 8, "text-anchor": "end" }, String(peak)),
    svg("text", { class: "scale", x: PAD.left - 4, y: bottom, "text-anchor": "end" }, "0"),
    svg("text", { class: "scale", x: PAD.left, y: H - 6 }, t("minutesAgo", 60)),
    svg("text", { class: "scale", x: W - PAD.right, y: H - 6, "text-anchor": "end" }, t("now")),
  ];
  counts.forEach((n, i) => {
    const h = (n / peak) * plotH;
    nodes.push(svg("rect", {
      class: "bar", x: (PAD.left + i * barW + 0.5).toFixed(1), y: (bottom - h).toFixed(1),
      width: Math.max(barW - 1, 1).toFixed(1), height: h.toFixed(1), "data-minute": i,
    }, svg("title", {}, `${t("minutesAgo", 59 - i)}: ${n}`)));
  });
  // The right scale: 0 to a little over the larger of the deadline and the p95.
  const top = Math.max(hour.deadline_ms || 0, hour.p95_ms || 0) * 1.15 || 1;
  const level = (value) => (bottom - (value / top) * plotH).toFixed(1);
  const line = (cls, value, label) => [
    svg("line", { class: cls, x1: PAD.left, x2: W - PAD.right, y1: level(value), y2: level(value) }),
    svg("text", { class: `${cls}-label`, x: W - PAD.right + 4, y: level(value), "dominant-baseline": "middle" },
      `${label} ${duration(value)}`),
  ];
  if (hour.deadline_ms) nodes.push(line("deadline-line", hour.deadline_ms, t("deadline")));
  if (hour.p95_ms !== null && hour.p95_ms !== undefined) nodes.push(line("p95-line", hour.p95_ms, t("p95")));
  const chart = svg("svg", {
    id: "chart-svg", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": t("chart"),
  }, nodes.flat());
  const p = (v) => (v === null || v === undefined ? "—" : duration(v));
  $("chart").replaceChildren(chart);
  $("chart-legend").textContent =
    t("chartLegend", hour.delivered, p(hour.p50_ms), p(hour.p95_ms), p(hour.p99_ms), p(hour.deadline_ms));
}
