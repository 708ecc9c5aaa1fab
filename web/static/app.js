// BooCode web UI: a thin client over the public REST + WebSocket API (the same one the CLI uses).
// Signed in with a password, the browser carries an HttpOnly session cookie and repeats the
// readable CSRF cookie in X-CSRF-Token on every change; with a pasted API token it sends
// `Authorization: Bearer` instead (kept in sessionStorage for this tab only).

const view = document.getElementById("view");
const crumbs = document.getElementById("crumbs");
const who = document.getElementById("who");
const signout = document.getElementById("signout");
const connection = document.getElementById("connection");
let socket = null;
let socketTimer = null;

function cookie(name) {
  const found = document.cookie.split("; ").find((entry) => entry.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

async function api(method, path, body) {
  const headers = {};
  const token = sessionStorage.getItem("boocode.token");
  if (token) headers["Authorization"] = `Bearer ${token}`;
  else if (method !== "GET") headers["X-CSRF-Token"] = cookie("boocode_csrf");
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                      credentials: "same-origin"});
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((data.error && data.error.message) || `HTTP ${response.status}`);
    error.status = response.status;
    error.code = data.error && data.error.code;
    throw error;
  }
  return data;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function setCrumbs(...items) {
  crumbs.replaceChildren(...items.flatMap((item, index) => [index ? " / " : "", item]));
}

function closeSocket() {
  clearTimeout(socketTimer);
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
  connection.textContent = "";
  connection.classList.remove("down");
}

// ------------------------------------------------------------------ sign in

function showSignIn(problem) {
  closeSocket();
  who.textContent = "";
  signout.hidden = true;
  setCrumbs();
  const error = el("p", {class: "error", role: "alert"}, problem || "");
  const form = el("form", {class: "card", "aria-label": "Sign in"},
    el("h1", {}, "Sign in"),
    el("label", {}, "User name", el("input", {name: "username", autocomplete: "username", required: ""})),
    el("label", {}, "Password", el("input", {name: "password", type: "password", autocomplete: "current-password"})),
    el("button", {type: "submit"}, "Sign in"),
    el("label", {}, "…or paste an API token", el("input", {name: "token", autocomplete: "off"})),
    error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      if (data.get("token")) {
        sessionStorage.setItem("boocode.token", data.get("token").trim());
        await api("GET", "/api/me");
      } else {
        await api("POST", "/api/auth/login", {username: data.get("username"), password: data.get("password")});
      }
      route();
    } catch (problem) {
      sessionStorage.removeItem("boocode.token");
      error.textContent = problem.message;
    }
  });
  view.replaceChildren(form);
  form.querySelector("input").focus();
}

signout.addEventListener("click", async () => {
  if (sessionStorage.getItem("boocode.token")) sessionStorage.removeItem("boocode.token");
  else await api("POST", "/api/auth/logout").catch(() => null);
  location.hash = "#/";
  showSignIn();
});

// ------------------------------------------------------------------ projects and sessions

async function showProjects() {
  setCrumbs("Projects");
  const {projects} = await api("GET", "/api/projects");
  view.replaceChildren(el("h1", {}, "Projects"),
    projects.length ? el("ul", {class: "list"}, projects.map((project) =>
      el("li", {}, el("a", {href: `#/projects/${project.id}`}, project.name), " ",
         el("span", {class: "status"}, `${project.role} · ${project.root_path}`))))
    : el("p", {}, "You are not a member of any project yet."));
}

const BADGES = {running: "running", waiting: "waiting for approval", failed: "failed", cancelled: "cancelled"};

// Short notices that come and go (a subagent finished, an approval is needed).
function toast(text) {
  let shelf = document.getElementById("toasts");
  if (!shelf) {
    shelf = el("div", {id: "toasts", role: "status", "aria-live": "polite"});
    document.body.append(shelf);
  }
  const note = el("div", {class: "toast"}, text);
  shelf.append(note);
  setTimeout(() => note.remove(), 6000);
}

async function showProject(projectId) {
  const {project} = await api("GET", `/api/projects/${projectId}`);
  setCrumbs(el("a", {href: "#/"}, "Projects"), project.name);
  const {sessions} = await api("GET", `/api/projects/${projectId}/sessions`);
  const canWrite = project.role !== "viewer";
  const create = el("button", {type: "button"}, "New session");
  create.addEventListener("click", async () => {
    const {session} = await api("POST", `/api/projects/${projectId}/sessions`, {title: "New session"});
    location.hash = `#/sessions/${session.id}`;
  });
  view.replaceChildren(el("h1", {}, project.name), canWrite ? create : "",
    el("ul", {class: "list"}, sessions.map((chat) =>
      el("li", {}, el("a", {href: `#/sessions/${chat.id}`}, chat.title), " ",
         chat.activity !== "idle" ? el("span", {class: `badge ${chat.activity}`}, BADGES[chat.activity]) : "", " ",
         el("span", {class: "status"}, new Date(chat.updated_at).toLocaleString())))));
}

// ------------------------------------------------------------------ a session's chat, live

const DIFF_LINES_SHOWN = 40;

// A unified diff with added and removed lines coloured; long ones collapsed behind "show more".
function diffNode(part) {
  const lines = part.diff.replace(/\n$/, "").split("\n");
  const line = (text) => el("div", {class: text.startsWith("+") && !text.startsWith("+++") ? "added"
    : text.startsWith("-") && !text.startsWith("---") ? "removed" : text.startsWith("@@") ? "hunk" : ""}, text || " ");
  const body = el("pre", {class: "diff", "aria-label": `diff of ${part.path}`}, lines.slice(0, DIFF_LINES_SHOWN).map(line));
  if (lines.length <= DIFF_LINES_SHOWN) return body;
  const more = el("button", {type: "button", class: "secondary"}, `show ${lines.length - DIFF_LINES_SHOWN} more lines`);
  more.addEventListener("click", () => { body.append(...lines.slice(DIFF_LINES_SHOWN).map(line)); more.remove(); });
  return el("div", {}, body, more);
}

function renderParts(message) {
  const nodes = [];
  for (const part of message.parts) {
    if (part.type === "text") nodes.push(el("div", {}, part.text));
    else if (part.type === "tool_call") nodes.push(el("div", {class: "call"}, `→ ${part.name}(${part.arguments})`));
    else if (part.type === "tool_result") {
      const first = part.content.split("\n")[0].slice(0, 120);
      nodes.push(el("details", {class: part.is_error ? "result failed" : "result"},
        el("summary", {}, `${part.name}${part.is_error ? " failed" : ""}: ${first}`), el("pre", {}, part.content)));
    } else if (part.type === "diff") nodes.push(diffNode(part));
    else if (part.type === "error") nodes.push(el("div", {class: "failed", role: "alert"}, `error ${part.code}: ${part.message}`));
    else if (part.type === "image") nodes.push(el("div", {class: "status"}, "[image]"));
  }
  return nodes;
}

// Background subagents of a session: state, elapsed time, result; cancel and retry for members.
function subagentsPane(sessionId, canWrite) {
  const badge = el("span", {class: "badge running", hidden: ""});
  const items = el("ul", {class: "list"});
  const pane = el("aside", {class: "subagents", "aria-label": "Background subagents"},
    el("h2", {}, "Background subagents ", badge), items);
  const act = async (path) => { await api("POST", path).catch((problem) => toast(problem.message)); refresh(); };
  const refresh = async () => {
    const {subagents, running} = await api("GET", `/api/sessions/${sessionId}/subagents`);
    pane.hidden = subagents.length === 0;
    badge.hidden = running === 0;
    badge.textContent = `${running} running`;
    items.replaceChildren(...subagents.map((task) => {
      const ended = ["completed", "failed", "cancelled", "interrupted"].includes(task.status);
      const seconds = task.duration_seconds === null ? "" : ` · ${task.duration_seconds.toFixed(1)}s`;
      const row = el("li", {"data-task": task.task_id},
        el("strong", {}, task.label || task.task_id.slice(0, 8)), " ",
        el("span", {class: `badge ${task.state}`}, task.state.replaceAll("_", " ")),
        el("span", {class: "status"}, `${seconds} · ${task.tokens} tokens`));
      if (task.result || task.error) {
        row.append(el("details", {class: "result"}, el("summary", {}, task.result ? "result" : "error"),
          el("pre", {}, task.result || `${task.error.code}: ${task.error.message}`)));
      }
      if (canWrite && !ended) {
        const cancel = el("button", {type: "button", class: "secondary"}, "Cancel");
        cancel.addEventListener("click", () => act(`/api/runs/${task.task_id}/cancel`));
        row.append(" ", cancel);
      }
      if (canWrite && ended) {
        const retry = el("button", {type: "button", class: "secondary"}, "Retry");
        retry.addEventListener("click", () => act(`/api/subagents/${task.task_id}/retry`));
        row.append(" ", retry);
      }
      return row;
    }));
  };
  pane.hidden = true;
  return {pane, refresh};
}

// A tool call waiting for a person: approve or deny (members), or just see it (viewers).
function approvalNode(approval, canWrite, onDecided) {
  const card = el("div", {class: "approval", role: "group", "aria-label": `approval for ${approval.tool}`,
                          "data-approval": approval.id},
    el("strong", {}, `${approval.tool} needs approval`), el("pre", {}, JSON.stringify(approval.arguments)));
  if (canWrite) {
    for (const decision of ["approve", "deny"]) {
      const button = el("button", {type: "button", class: decision === "deny" ? "secondary" : ""},
        decision === "approve" ? "Approve" : "Deny");
      button.addEventListener("click", async () => {
        await api("POST", `/api/approvals/${approval.id}/decision`, {decision});
        onDecided(approval.id);
      });
      card.append(button);
    }
  }
  return card;
}

function messageNode(message) {
  return el("article", {class: `message ${message.role}`, "data-seq": message.seq},
    el("span", {class: "role"}, message.role), renderParts(message));
}

async function showSession(sessionId) {
  const {session: chat} = await api("GET", `/api/sessions/${sessionId}`);
  const {project} = await api("GET", `/api/projects/${chat.project_id}`);
  setCrumbs(el("a", {href: "#/"}, "Projects"), el("a", {href: `#/projects/${project.id}`}, project.name), chat.title);
  const list = el("section", {class: "messages", "aria-live": "polite", "aria-label": "Conversation"});
  const status = el("p", {class: "status", id: "run-status"});
  const seen = new Set();
  const add = (message) => {
    if (seen.has(message.id)) return;
    seen.add(message.id);
    list.querySelector(".live")?.remove();
    list.append(messageNode(message));
  };
  const {messages} = await api("GET", `/api/sessions/${sessionId}/messages?limit=500`);
  messages.forEach(add);
  const canWrite = project.role !== "viewer";
  const pending = el("section", {class: "approvals", "aria-label": "Approvals"});
  const removeApproval = (id) => pending.querySelector(`[data-approval="${id}"]`)?.remove();
  const showApproval = (approval) => {
    if (approval.status !== "pending" || pending.querySelector(`[data-approval="${approval.id}"]`)) return;
    pending.append(approvalNode(approval, canWrite, removeApproval));
  };
  const {approvals: waiting} = await api("GET", `/api/sessions/${sessionId}/approvals?status=pending`);
  waiting.forEach(showApproval);
  let activeRun = null;
  const chatRuns = new Set();  // the chat's own (top-level agent) runs; only those drive Stop and the status
  const stop = el("button", {type: "button", class: "secondary", hidden: ""}, "Stop");
  stop.addEventListener("click", () => activeRun && api("POST", `/api/runs/${activeRun}/cancel`).catch(() => null));
  const {runs: recent} = await api("GET", `/api/sessions/${sessionId}/runs?limit=20`);
  const unfinished = recent.find((run) => run.kind === "agent" && !run.parent_id &&
                                          ["queued", "running", "waiting"].includes(run.status));
  recent.filter((run) => run.kind === "agent" && !run.parent_id).forEach((run) => chatRuns.add(run.id));
  if (unfinished) { activeRun = unfinished.id; status.textContent = "working…"; if (canWrite) stop.hidden = false; }
  const tasks = subagentsPane(sessionId, canWrite);
  await tasks.refresh();
  const nodes = [el("h1", {}, chat.title), tasks.pane, list, pending,
                 el("div", {class: "controls"}, status, canWrite ? stop : "")];
  if (canWrite) {
    const input = el("textarea", {name: "text", "aria-label": "Message", placeholder: "Ask the agent…", required: ""});
    const form = el("form", {class: "send"}, input, el("button", {type: "submit"}, "Send"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      input.value = "";
      try {
        const {message} = await api("POST", `/api/sessions/${sessionId}/messages`, {text});
        add(message);
      } catch (problem) { status.textContent = problem.message; }
    });
    nodes.push(form);
  }
  view.replaceChildren(...nodes);
  follow(sessionId, chat.last_seq, {
    "message.created": (event) => api("GET", `/api/sessions/${sessionId}/messages?after=${event.seq - 1}&limit=1`)
      .then(({messages: found}) => found.filter((message) => message.seq === event.seq).forEach(add)),
    "text.delta": (event) => {
      if (!chatRuns.has(event.run_id)) return;  // a subagent's or workflow agent's text is not this chat's
      let live = list.querySelector(".live");
      if (!live) {
        live = el("article", {class: "message assistant live"}, el("span", {class: "role"}, "assistant"), el("div"));
        list.append(live);
      }
      live.lastChild.textContent += event.data.text;
    },
    "run.queued": (event) => {
      if (event.data.kind === "agent" && !event.data.parent_id) chatRuns.add(event.run_id);
    },
    "run.started": (event) => {
      if (!chatRuns.has(event.run_id)) return;  // a subagent or a workflow's agent: not this chat's turn
      activeRun = event.run_id;
      status.textContent = "working…";
      if (canWrite) stop.hidden = false;
    },
    "run.finished": (event) => {
      if (event.run_id !== activeRun) return;  // a subagent or workflow agent, not the chat's own run
      activeRun = null;
      stop.hidden = true;
      list.querySelector(".live")?.remove();
      status.textContent = event.data.status === "completed" ? "" : `run ${event.data.status}` +
        (event.data.error ? `: ${event.data.error.message}` : "");
    },
    "run.waiting": () => { status.textContent = "waiting for approval"; },
    "approval.requested": (event) => { showApproval(event.data); toast(`${event.data.tool} needs approval`); },
    "subagent.spawned": () => tasks.refresh(),
    "subagent.admitted": () => tasks.refresh(),
    "subagent.finished": (event) => {
      tasks.refresh();
      toast(`subagent ${event.data.label || event.data.task_id.slice(0, 8)} ${event.data.status}`);
    },
    "approval.decided": (event) => removeApproval(event.data.id),
  });
}

// Follow a session's events from `since`, reconnecting with back-off and replaying what was missed.
function follow(sessionId, since, handlers) {
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
      const handler = handlers[event.type];
      if (handler) handler(event);
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

// ------------------------------------------------------------------ routing

async function route() {
  closeSocket();
  try {
    const {user} = await api("GET", "/api/me");
    who.textContent = user.display_name || user.username;
    signout.hidden = false;
    const [, kind, id] = location.hash.replace(/^#\/?/, "/").split("/");
    if (kind === "projects" && id) await showProject(id);
    else if (kind === "sessions" && id) await showSession(id);
    else await showProjects();
  } catch (problem) {
    if (problem.status === 401) return showSignIn();
    if (problem.status === 404) return view.replaceChildren(el("h1", {}, "Not found"),
      el("p", {}, "There is nothing here, or you are not a member of its project."));
    view.replaceChildren(el("p", {class: "error", role: "alert"}, problem.message));
  }
}

window.addEventListener("hashchange", route);
route();
