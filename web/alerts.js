// Alerts (web/alerts.js): GET /api/alerts, the conditions active now and the recent alerts,
// each with how every channel took it (sent, pending with its last failure, given up).
// Details may hold text from customs or the card: they enter the page as text only.

import { $, el, headings } from "./dom.js";
import { t, time } from "./i18n.js";
import { api } from "./api.js";

export async function reload() {
  const answer = await api("/api/alerts?limit=20");
  const active = answer.active.map((a) => el("li", { class: `sev-${a.severity}`, "data-kind": a.kind },
    `${t("alertKind")[a.kind] ?? a.kind}${a.level ? ` (${a.level})` : ""} · ${t("alertSince", time(a.since))}`));
  $("alerts-active").replaceChildren(...active);
  $("alerts-none").hidden = active.length > 0;
  $("alerts-channels").textContent = answer.channels.length
    ? t("alertChannels", answer.channels.map((c) => `${c.name} (${c.kind})`).join(", "))
    : t("noAlertChannels");
  const rows = answer.alerts.map((a) => el("tr", { "data-alert": a.id, class: `sev-${a.severity}` },
    el("td", {}, time(a.at)),
    el("td", {}, t("severity")[a.severity] ?? a.severity),
    el("td", {}, `${t("alertKind")[a.kind] ?? a.kind}${a.level ? ` (${a.level})` : ""}`),
    el("td", {}, t("alertEvent")[a.event] ?? a.event),
    el("td", { class: "count" }, a.count || ""),
    el("td", { class: "err" }, a.detail),
    el("td", {}, a.deliveries.map((d) => el("div", { class: `delivery ${d.state}`, "data-channel": d.channel },
      `${d.channel}: ${t("deliveryState")[d.state] ?? d.state}`,
      d.state !== "sent" && d.last_code ? ` (${d.last_code}, ${t("deliveryAttempts", d.attempts)})` : "")))));
  $("alerts-table").replaceChildren(headings(...t("alertCols")), el("tbody", {}, rows));
  $("alerts-table").hidden = rows.length === 0;
}
