// At a glance and health (web/health.js): the at-risk banner, the environment badge, the
// tab's title, the counts per state, the pause banners and a tile per card and for customs,
// with an operator's pause and resume buttons.

import { $, el, button, link } from "./dom.js";
import { t, time, duration, stateName, stageName } from "./i18n.js";
import { api } from "./api.js";
import { ask } from "./dialog.js";

const STATES = [["waiting", "warn"], ["ready", ""], ["signed", ""], ["delivered", "ok"], ["failed", "bad"]];
let shown = { pauses: null, tiles: null, risk: null };
let riskLists = { at: 0, atRisk: [], past: [] };

/** Pauses or resumes `stage`, asking the operator why. */
/** Pauses or resumes a stage on every card, or with `card` on that card only. */
async function control(stage, action, after, card) {
  const what = card ? t("onCard", stageName(stage), card) : stageName(stage);
  const question = action === "pause" ? t("askPause", what) : t("askResume", what);
  const reason = await ask({ message: question, reasonRequired: action === "pause", confirm: t("ok") });
  if (reason === null) return;
  const path = card ? `/api/control/cards/${encodeURIComponent(card)}/${stage}/${action}` : `/api/control/${stage}/${action}`;
  await api(path, { method: "POST", body: reason ? { reason } : {} });
  await after();
}

function card(label, count, tone) {
  return el("div", { class: count ? `card ${tone}` : "card" }, label, el("b", {}, count ?? 0));
}

/** Everything of the status that is not the list, the chart or the failures. */
export function render(status, { operator, refresh, openDetail }) {
  const cards = STATES.map(([state, tone]) => card(stateName(state), status.states[state], tone));
  cards.push(card(t("late"), status.late, "warn"));
  $("cards").replaceChildren(...cards);

  const env = status.customs && status.customs.environment;
  const badge = $("env");
  badge.textContent = env === "production" ? t("production") : env === "test" ? t("test") : t("unknownEnv");
  badge.classList.toggle("production", env === "production");
  badge.classList.toggle("test", env === "test");

  document.title = status.at_risk > 0 ? t("titleRisk", status.at_risk) : t("title");
  renderRisk(status, openDetail);

  // Rebuilt only when they change, so a button does not vanish under the pointer.
  const pauses = JSON.stringify([status.signing, status.uploading, operator, document.documentElement.lang]);
  if (pauses !== shown.pauses) {
    shown.pauses = pauses;
    const banners = [];
    for (const stage of ["signing", "uploading"]) {
      const pause = status[stage];
      if (pause) {
        banners.push(el("div", { class: "banner", "data-stage": stage },
          el("b", {}, t("pausedBanner", stageName(stage))), t("since", time(pause.since)), pause.reason,
          operator ? [" ", button(t("resume", stageName(stage)), () => control(stage, "resume", refresh))] : null));
      }
    }
    $("banners").replaceChildren(...banners);
  }
  const instances = status.instances || [];
  // A live instance's heartbeat moves every second: only whether it beats is drawn.
  const seen = instances.map((i) => [i.name, i.alive, i.started_at, i.alive ? null : [i.heartbeat_at, i.stop_reason]]);
  // What a card's driver last published moves every second too.
  const cardTiles = status.cards.map(({ seen_at, ...card }) => card);
  const tiles = JSON.stringify([cardTiles, status.customs, seen, operator, document.documentElement.lang]);
  if (tiles !== shown.tiles) {
    shown.tiles = tiles;
    $("tiles").replaceChildren(...status.cards.map((c) => cardTile(c, operator, refresh)),
      customsTile(status.customs, operator, refresh), instancesTile(instances));
  }
}

function controls(stage, paused, operator, refresh, card) {
  if (!operator) return null;
  return el("div", { class: "actions" }, paused
    ? button(t("resume", stageName(stage)), () => control(stage, "resume", refresh, card), { "data-action": "resume" })
    : button(t("pause", stageName(stage)), () => control(stage, "pause", refresh, card), { "data-action": "pause" }));
}

function cardTile(c, operator, refresh) {
  const days = c.days_left;
  const bad = !c.connected || c.paused || c.uploads_stopped;
  return el("section", { class: `tile ${bad ? "bad" : "ok"}`, "data-tile": "card", "data-card": c.name },
    el("h3", {}, t("card", c.name)),
    el("p", { class: c.connected ? "good" : "problem" }, c.connected ? t("connected") : t("disconnected")),
    c.driven_by
      ? el("p", { class: c.driver_alive ? null : "problem", "data-driver": c.driven_by },
        c.driver_alive ? t("drivenBy", c.driven_by) : t("driverDead", c.driven_by))
      : null,
    c.cert_no ? el("p", { class: "id" }, c.cert_no, c.algorithm ? ` (${c.algorithm})` : null) : null,
    el("p", { class: days !== null && days !== undefined && days < 30 ? "problem" : null },
      days !== null && days !== undefined ? t("certDays", days) : t("certUnknown")),
    c.last_signature_at ? el("p", {}, t("lastSignature", time(c.last_signature_at))) : null,
    c.last_error ? el("p", { class: "problem" }, t("lastError", time(c.last_error_at)), " ", c.last_error) : null,
    c.paused ? el("p", { class: "problem" }, t("pausedBy", c.paused.reason, c.paused.by, time(c.paused.since))) : null,
    c.uploads_stopped
      ? el("p", { class: "problem", "data-stopped": "uploading" },
        t("uploadsStoppedBy", c.uploads_stopped.reason, c.uploads_stopped.by, time(c.uploads_stopped.since)))
      : null,
    controls("signing", Boolean(c.paused), operator, refresh, c.name),
    // A card's uploads are paused by customs' 20004 only; resumed once its certNo is registered.
    c.uploads_stopped && operator
      ? el("div", { class: "actions" }, button(t("resume", stageName("uploading")),
        () => control("uploading", "resume", refresh, c.name), { "data-action": "resume-uploading" }))
      : null);
}

function customsTile(customs, operator, refresh) {
  const answers = Object.entries(customs.answers_last_hour || {});
  const stopped = customs.stopped;
  return el("section", { class: `tile ${stopped ? "bad" : "ok"}`, "data-tile": "customs" },
    el("h3", {}, t("customs")),
    el("p", {}, customs.environment === "production" ? t("production") : t("test")),
    el("p", {}, t("lastSuccess", customs.last_success_at ? time(customs.last_success_at) : "—")),
    answers.length ? el("p", {}, t("answersLastHour"), " ", answers.map(([code, n]) => `${code}: ${n}`).join(", ")) : null,
    stopped ? el("p", { class: "problem" }, t("stoppedBy", stopped.reason, stopped.by, time(stopped.since))) : null,
    controls("uploading", Boolean(stopped), operator, refresh));
}

/** The instances on the database: those running, and those stopped in the last hour. */
function instancesTile(instances) {
  const bad = instances.some((i) => !i.alive && !i.stopped_at);
  return el("section", { class: `tile ${bad ? "bad" : "ok"}`, "data-tile": "instances" },
    el("h3", {}, t("instances")),
    ...instances.map((i) => el("p", { class: i.alive ? null : "problem", "data-instance": i.name },
      i.alive ? t("instanceAlive", i.name, time(i.started_at))
        : i.stopped_at ? t("instanceStopped", i.name, time(i.stopped_at), i.stop_reason || "")
          : t("instanceSilent", i.name, time(i.heartbeat_at)))));
}

/** The at-risk banner: counts from the status, the requests themselves from the list API. */
function renderRisk(status, openDetail) {
  const risky = status.at_risk > 0;
  if (!risky) riskLists.atRisk = [];
  const overdue = status.past_deadline > 0;
  if (!overdue) riskLists.past = [];
  const now = Date.now();
  if ((risky || overdue) && now - riskLists.at > 3000) {
    riskLists.at = now;
    const list = (query) => api(`/api/requests?sort=deadline&limit=20&${query}`).then((p) => p.requests);
    // Pending past the deadline: "late" in each pending state (delivered late ones are not in them).
    const pastDeadline = () => Promise.all(["waiting", "ready", "signed"].map((s) => list(`state=${s}&late=true`)))
      .then((lists) => lists.flat().sort((a, b) => a.deadline_at - b.deadline_at).slice(0, 20));
    Promise.all([risky ? list("at_risk=true") : [], overdue ? pastDeadline().catch(() => []) : []])
      .then(([atRisk, past]) => {
        riskLists = { at: riskLists.at, atRisk, past };
        shown.risk = null;
        renderRisk(status, openDetail);
      })
      .catch(() => {});
  }
  const past = overdue ? status.past_deadline : 0;
  const key = JSON.stringify([status.at_risk, status.at_risk_secs, status.past_deadline, status.oldest_pending_ms === null,
    riskLists.atRisk.map((r) => r.session_id), riskLists.past.map((r) => r.session_id), document.documentElement.lang]);
  const box = $("risk");
  box.classList.toggle("alarm", risky || past > 0);
  const oldest = status.oldest_pending_ms === null || status.oldest_pending_ms === undefined
    ? t("noPending") : t("oldestPending", duration(status.oldest_pending_ms));
  if (key === shown.risk) {
    const age = box.querySelector(".oldest");
    if (age) age.textContent = oldest;
    return;
  }
  shown.risk = key;
  const ids = (requests) => requests.map((r, i) => [i ? ", " : "", link(r.session_id, () => openDetail(r.session_id))]);
  box.replaceChildren(...[
    el("span", { class: "count", "data-count": "at-risk" },
      risky ? t("atRisk", status.at_risk, status.at_risk_secs) : t("allWell")),
    risky && riskLists.atRisk.length ? el("span", { class: "ids" }, ": ", ids(riskLists.atRisk)) : null,
    past ? el("span", { class: "count", "data-count": "past" }, " · ", t("pastDeadline", past), ": ", ids(riskLists.past)) : null,
    el("span", { class: "oldest" }, oldest),
  ].filter(Boolean));
}
