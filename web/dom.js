// Building the page with DOM calls only (web/dom.js).
//
// Everything that came from customs or the platform (sessionIDs, orderNos, payment records,
// customs' answers, error texts) enters the page as text: el() appends strings as Text nodes
// and sets only attributes the calling module names; actions are closures, never attributes.
// Nothing here hands a string to the HTML parser, and the admin listener's
// Content-Security-Policy (require-trusted-types-for 'script') makes the browser refuse it
// should anyone try. No element gets a style attribute either: looks are classes of app.css.

const SVG = "http://www.w3.org/2000/svg";

function fill(node, attributes, children) {
  for (const [name, value] of Object.entries(attributes)) {
    if (/^on/i.test(name) || name === "style") throw new Error(`el(): no ${name} attribute`);
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

/**
 * An element `tag` with `attributes` (names are the caller's own; values may be data) and
 * `children`: nodes, strings (added as text) or arrays of them; null, undefined and false are
 * left out.
 */
export function el(tag, attributes = {}, ...children) {
  return fill(document.createElement(tag), attributes, children);
}

/** An SVG element, its attributes set by name. */
export function svg(tag, attributes = {}, ...children) {
  return fill(document.createElementNS(SVG, tag), attributes, children);
}

export const $ = (id) => document.getElementById(id);

/** Where a failed action is told: a line under the header, as text. */
export function report(err) {
  const line = $("message");
  if (line) {
    line.textContent = err && err.message ? err.message : String(err);
    line.classList.add("shown");
  }
}

/** A button running `action`; a failure is shown to the operator. */
export function button(label, action, attributes = {}) {
  const node = el("button", { type: "button", ...attributes }, label);
  node.addEventListener("click", async (event) => {
    event.preventDefault();
    node.disabled = true;
    try { await action(); } catch (err) { report(err); } finally { node.disabled = false; }
  });
  return node;
}

/** A link-looking button for in-page navigation (no href from data). */
export function link(label, action, attributes = {}) {
  const node = el("a", { href: "#", ...attributes }, label);
  node.addEventListener("click", (event) => {
    event.preventDefault();
    Promise.resolve().then(action).catch(report);
  });
  return node;
}

export function headings(...names) {
  return el("thead", {}, el("tr", {}, names.map((name) => el("th", {}, name))));
}
