// What every view shares: calling the public REST API, building DOM nodes, toasts, numbers, and the
// session event stream (WebSocket with back-off and replay from the last seq).
//
// Signed in with a password, the browser carries an HttpOnly session cookie and repeats the readable
// CSRF cookie in X-CSRF-Token on every change; with a pasted API token it sends `Authorization: Bearer`
// instead (kept in sessionStorage for this tab only).

const connection = document.getElementById("connection");
let socket = null;
let socketTimer = null;

// A run in one of these states will not change again.
export const ENDED = ["completed", "completed_with_failures", "failed", "cancelled", "interrupted"];

export function cookie(name) {
  const found = document.cookie.split("; ").find((entry) => entry.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

function authHeaders(method) {
  const headers = {};
  const token = sessionStorage.getItem("boocode.token");
  if (token) headers["Authorization"] = `Bearer ${token}`;
  else if (method !== "GET") headers["X-CSRF-Token"] = cookie("boocode_csrf");
  return headers;
}

async function check(response) {
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((data.error && data.error.message) || `HTTP ${response.status}`);
    error.status = response.status;
    error.code = data.error && data.error.code;
    error.details = data.error && data.error.details;
    throw error;
  }
  return data;
}

export async function api(method, path, body) {
  const headers = authHeaders(method);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return check(await fetch(path, {method, headers, credentials: "same-origin",
                                  body: body === undefined ? undefined : JSON.stringify(body)}));
}

// Send raw bytes (an image upload); the server reads the type from the bytes themselves.
export async function upload(path, file) {
  const headers = {...authHeaders("POST"), "Content-Type": file.type || "application/octet-stream"};
  return check(await fetch(path, {method: "POST", headers, body: file, credentials: "same-origin"}));
}

// An authenticated image as an object URL (an <img src> cannot carry a bearer token).
const imageCache = new Map();
export function imageURL(path) {
  if (!imageCache.has(path)) {
    imageCache.set(path, fetch(path, {headers: authHeaders("GET"), credentials: "same-origin"})
      .then((response) => { if (!response.ok) throw new Error(`HTTP ${response.status}`); return response.blob(); })
      .then((blob) => URL.createObjectURL(blob)));
  }
  return imageCache.get(path);
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;  // CSSOM, which the Content-Security-Policy allows
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Short notices that come and go (a subagent finished, an approval is needed).
export function toast(text) {
  let shelf = document.getElementById("toasts");
  if (!shelf) {
    shelf = el("div", {id: "toasts", role: "status", "aria-live": "polite"});
    document.body.append(shelf);
  }
  const note = el("div", {class: "toast"}, text);
  shelf.append(note);
  setTimeout(() => note.remove(), 6000);
}

export const number = (value) => (value ?? 0).toLocaleString("en-US");
export const dollars = (value) => `$${(value ?? 0).toFixed(4)}`;
export const percent = (fraction) => fraction === null || fraction === undefined ? "–" : `${Math.round(fraction * 100)}%`;
export function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 1000 ? `${Math.round(ms)} ms` : ms < 90000 ? `${(ms / 1000).toFixed(1)} s` : `${(ms / 60000).toFixed(1)} min`;
}

// Turns: the API counts a run's turns from 0; every view shows them to people counting from 1.
export const turnNumber = (turn) => turn + 1;

// Runs are numbered in the order they were made in the session (1 = the oldest), the same in every
// view. `of(id)` is null for a run made after the last `load()`.
export function runNumbers(sessionId) {
  let numbers = new Map();
  const load = async () => {
    const {runs} = await api("GET", `/api/sessions/${sessionId}/runs?limit=500`);
    numbers = new Map([...runs].reverse().map((run, index) => [run.id, index + 1]));
    return runs;
  };
  return {load, of: (runId) => numbers.get(runId) ?? null};
}

// A hit rate's badge colour: ≥60% good, 30–59% fair, <30% poor.
export function hitClass(fraction) {
  if (fraction === null || fraction === undefined) return "hit-none";
  return fraction >= 0.6 ? "hit-good" : fraction >= 0.3 ? "hit-fair" : "hit-poor";
}

// Keyset pages: every page of `path` (which must take `cursor`), or up to `pages` of them.
export async function allSpans(path, limit = 200) {
  const found = [];
  let cursor = 0;
  for (;;) {
    const page = await api("GET", `${path}${path.includes("?") ? "&" : "?"}limit=${limit}&cursor=${cursor}`);
    found.push(...page.spans);
    if (page.next_cursor === null) return found;
    cursor = page.next_cursor;
  }
}

export function closeSocket() {
  clearTimeout(socketTimer);
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
  connection.textContent = "";
  connection.classList.remove("down");
}

// Follow a session's events from `since`, reconnecting with back-off and replaying what was missed.
// Every handler in `listeners` (a Set of functions) sees every event.
export function follow(sessionId, since, listeners) {
  closeSocket();
  let last = since;
  let delay = 500;
  const open = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const token = sessionStorage.getItem("boocode.token");
    const protocols = token ? ["boocode.v1", `bearer.${token}`] : ["boocode.v1"];
    socket = new WebSocket(`${scheme}://${location.host}/ws/sessions/${sessionId}?since=${last}`, protocols);
    socket.onopen = () => { delay = 500; connection.textContent = "live"; connection.classList.remove("down"); };
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.seq <= last) return;
      last = event.seq;
      for (const listener of listeners) listener(event);
    };
    socket.onclose = () => {
      connection.textContent = "reconnecting…";
      connection.classList.add("down");
      socketTimer = setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
    };
  };
  open();
}
