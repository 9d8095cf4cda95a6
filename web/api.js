// The JSON API, with this tab's token (web/api.js). The token stays in this tab's
// sessionStorage only; the page itself holds no data.

const TOKEN_KEY = "customs179-token";
let unauthorized = () => {};

export function token() { return sessionStorage.getItem(TOKEN_KEY); }
export function setToken(value) { sessionStorage.setItem(TOKEN_KEY, value); }
export function forgetToken() { sessionStorage.removeItem(TOKEN_KEY); }
/** What to do when the API refuses the token (the login form again). */
export function onUnauthorized(handler) { unauthorized = handler; }
export function refused() { forgetToken(); unauthorized(); }

/** Calls the API; `body` (an object) is sent as JSON. Refusals throw with the API's reason. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, cache: "no-store", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    refused();
    throw new Error("401 unauthorized");
  }
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    const reason = answer && (Array.isArray(answer.conflicts) ? answer.conflicts.join("; ") : answer.error);
    throw new Error(reason || `${response.status} ${response.statusText}`);
  }
  return answer;
}
