// The one modal question of the console (web/dialog.js): a message, a reason and two
// buttons, built with DOM calls in a <dialog>. Resolves to the reason given ("" when none
// is needed and none was given), or null when the operator cancels.

import { el } from "./dom.js";
import { t } from "./i18n.js";

export function ask({ message, reasonRequired = false, confirm, extra = null }) {
  return new Promise((resolve) => {
    const input = el("input", { type: "text", id: "ask-reason", autocomplete: "off", size: "40" });
    input.placeholder = t("reason");
    const problem = el("p", { class: "problem", id: "ask-problem" });
    const ok = el("button", { type: "button", id: "ask-ok", class: "primary" }, confirm || t("ok"));
    const cancel = el("button", { type: "button", id: "ask-cancel" }, t("cancel"));
    const dialog = el("dialog", { id: "ask" },
      el("p", { id: "ask-message" }, message), extra, el("p", {}, input), problem,
      el("div", { class: "actions" }, ok, cancel));
    const done = (value) => { dialog.close(); dialog.remove(); resolve(value); };
    const submit = () => {
      const reason = input.value.trim();
      if (reasonRequired && !reason) { problem.textContent = t("reasonNeeded"); input.focus(); return; }
      done(reason);
    };
    ok.addEventListener("click", submit);
    cancel.addEventListener("click", () => done(null));
    input.addEventListener("keydown", (event) => { if (event.key === "Enter") { event.preventDefault(); submit(); } });
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); done(null); });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}
