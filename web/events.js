// Live updates from GET /api/events, one stream per browser (web/events.js).
//
// The stream is read with fetch() (an EventSource cannot send the Authorization header).
// One tab, the leader, holds it; it passes every event to the other tabs of this origin on a
// BroadcastChannel, so however many tabs are open the browser keeps one connection to the
// service for events. The leader is elected with the Web Locks API (navigator.locks: the
// tab holding the lock leads; when it closes the lock passes to a waiting tab). Where the
// page is no secure context (plain http to a LAN address) navigator.locks is missing, and a
// heartbeat on the channel elects instead: the leader says so every second; a tab that has
// heard no leader for 3 s claims the lead, and of two claimants the smaller id wins.

const CHANNEL = "customs179-events";
const LOCK = "customs179-events-leader";
const HEARTBEAT_MS = 1000;
const LEADER_SILENT_MS = 3000;
const BACKOFF_MS = [1000, 2000, 5000, 10000, 30000];

/**
 * Starts listening. `handlers.event(name, data)` gets each event (`snapshot`, `status`,
 * `requests`) whoever holds the stream; `handlers.token()` is this tab's token;
 * `handlers.refused()` is called when the service refuses it.
 */
export function start(handlers) {
  const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  const channel = new BroadcastChannel(CHANNEL);
  const state = { leader: false, connected: false, election: navigator.locks ? "locks" : "heartbeat" };
  let abort = null;
  let lastLeaderSeen = 0;
  let leaderId = null;

  const deliver = (name, data) => {
    try { handlers.event(name, data); } catch (err) { console.warn("event handler", err); }
  };

  channel.onmessage = ({ data: message }) => {
    if (!message || typeof message !== "object") return;
    if (message.kind === "event") deliver(message.name, message.data);
    if (message.kind === "leader") {
      // Heartbeat election: of two claimants or leaders the smaller id wins; the larger yields.
      const mine = state.leader || leaderId === id;
      if (!mine || message.id < id) {
        lastLeaderSeen = Date.now();
        leaderId = message.id;
        if (state.leader) stepDown();
      }
    }
    if (message.kind === "hello" && state.leader) channel.postMessage({ kind: "leader", id });
  };

  async function lead() {
    state.leader = true;
    window.__customs179Events = state;
    let failures = 0;
    while (state.leader) {
      abort = new AbortController();
      try {
        await read(abort.signal, () => { failures = 0; });
      } catch (err) {
        if (err && err.name === "AbortError" && !state.leader) break;
        if (err && err.refused) { handlers.refused(); }
      }
      state.connected = false;
      if (!state.leader) break;
      const wait = BACKOFF_MS[Math.min(failures, BACKOFF_MS.length - 1)];
      failures += 1;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  function stepDown() {
    state.leader = false;
    state.connected = false;
    if (abort) abort.abort();
  }

  /** One connection: reads events until the stream ends or fails. */
  async function read(signal, connected) {
    const token = handlers.token();
    if (!token) throw Object.assign(new Error("no token"), { refused: true });
    const response = await fetch("/api/events", {
      headers: { Authorization: "Bearer " + token }, cache: "no-store", signal,
    });
    if (response.status === 401) throw Object.assign(new Error("refused"), { refused: true });
    if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
    state.connected = true;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (!data) continue;
        let parsed;
        try { parsed = JSON.parse(data); } catch { continue; }
        connected();
        deliver(name, parsed);
        channel.postMessage({ kind: "event", name, data: parsed });
      }
    }
  }

  if (state.election === "locks") {
    // Held until this tab closes (or the page is reloaded); then the next waiting tab leads.
    navigator.locks.request(LOCK, () => new Promise(() => { lead(); }));
  } else {
    channel.postMessage({ kind: "hello", id });
    setInterval(() => {
      if (state.leader) {
        channel.postMessage({ kind: "leader", id });
      } else if (Date.now() - lastLeaderSeen > LEADER_SILENT_MS) {
        // Claim: say so, and lead unless a smaller id answers within a heartbeat.
        channel.postMessage({ kind: "leader", id });
        lastLeaderSeen = Date.now();
        leaderId = id;
        setTimeout(() => { if (leaderId === id && !state.leader) lead(); }, HEARTBEAT_MS / 2);
      }
    }, HEARTBEAT_MS);
  }
  window.__customs179Events = state;
  return state;
}
