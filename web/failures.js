// Failures (web/failures.js): GET /api/failures, the failed requests grouped by cause, and
// bulk replays through the API's two steps: a dry run (its count shown), a confirmation
// with a reason, then the job's progress (GET /api/replays/{id}) until it is finished.

import { $, el, button, link, headings } from "./dom.js";
import { t, time } from "./i18n.js";
import { api } from "./api.js";
import { ask } from "./dialog.js";

let options = { operator: false, openDetail: () => {}, replayed: () => {} };

export function setup(given) { options = { ...options, ...given }; }

export async function reload() {
  const failures = await api("/api/failures");
  $("failures-total").textContent = failures.total ? t("failuresTotal", failures.total) : t("noFailures");
  const body = failures.groups.map((g) => el("tr", { "data-group": g.id },
    el("td", {}, g.stage),
    el("td", { class: "err" }, g.kind),
    el("td", { class: "count" }, g.count),
    el("td", {}, time(g.oldest), " – ", time(g.newest)),
    el("td", { class: "id" }, link(g.example.session_id, () => options.openDetail(g.example.session_id))),
    el("td", {}, options.operator ? button(t("replayGroup"), () => replay({ group: g.id })) : null)));
  $("failures-table").replaceChildren(headings(...t("failureCols")), el("tbody", {}, body));
  $("failures-table").hidden = failures.groups.length === 0;
}

/** The dry run of `selection`, then the confirmation, then the progress. */
export async function replay(selection) {
  const line = $("replay-progress");
  line.textContent = "";
  delete line.dataset.status;
  const dry = await api("/api/replays", { method: "POST", body: { ...selection, dry_run: true } });
  if (!dry.count) {
    line.textContent = t("dryRunNone");
    return;
  }
  const extra = dry.not_taken && dry.not_taken.length ? el("p", {}, t("notTaken", dry.not_taken.length)) : null;
  const reason = await ask({
    message: t("dryRunCount", dry.count), reasonRequired: true, confirm: t("confirmReplay"),
    extra: [el("p", { id: "replay-count", class: "count" }, String(dry.count)), extra],
  });
  if (reason === null) return;
  let job = await api("/api/replays", { method: "POST", body: { confirm: dry.token, reason } });
  line.textContent = t("progress", job);
  line.dataset.status = job.status;
  options.replayed();
  while (job.status === "running" || job.status === "awaiting_confirmation") {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    job = await api(`/api/replays/${job.id}`);
    line.textContent = t("progress", job);
    line.dataset.status = job.status;
  }
  await reload();
}
