// BooCode web UI: a thin client over the public REST + WebSocket API (the same one the CLI uses).
// This module routes (#/…), signs in, and draws projects, members and the session page; the chat,
// trace, cache, timeline, workflow and flow views live in js/.

import {api, closeSocket, dollars, el, follow, hitClass, percent, toast} from "./js/api.js";
import {createChat} from "./js/chat.js";
import {showFlowRun, showFlows} from "./js/flows.js";
import {createTimeline} from "./js/timeline.js";
import {createCache, createTrace} from "./js/trace.js";
import {showWorkflowRun, showWorkflows} from "./js/workflows.js";

const view = document.getElementById("view");
const crumbs = document.getElementById("crumbs");
const who = document.getElementById("who");
const signout = document.getElementById("signout");

function setCrumbs(...items) {
  crumbs.replaceChildren(...items.flatMap((item, index) => [index ? " / " : "", item]));
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
    el("label", {}, "User name", el("input", {name: "username", autocomplete: "username"})),
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

// ------------------------------------------------------------------ projects, members, sessions

// Your projects; an admin also registers a directory as a new project here.
async function showProjects(user) {
  setCrumbs("Projects");
  const {projects} = await api("GET", "/api/projects");
  const nodes = [el("h1", {}, "Projects"),
    projects.length ? el("ul", {class: "list"}, projects.map((project) =>
      el("li", {}, el("a", {href: `#/projects/${project.id}`}, project.name), " ",
         el("span", {class: "status"}, `${project.role} · ${project.root_path}`))))
    : el("p", {}, "You are not a member of any project yet.")];
  if (user.is_admin) {
    const problem = el("p", {class: "error", role: "alert"});
    const form = el("form", {class: "row", "aria-label": "Add a project"},
      el("label", {}, "Name", el("input", {name: "name", required: true, maxlength: "200"})),
      el("label", {class: "wide"}, "Root path (a directory on the server)",
         el("input", {name: "root_path", required: true, placeholder: "/srv/code/my-project", size: "40"})),
      el("button", {type: "submit"}, "Add project"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      try {
        const {project} = await api("POST", "/api/projects", {name: data.get("name").trim(), root_path: data.get("root_path").trim()});
        location.hash = `#/projects/${project.id}`;
      } catch (error) { problem.textContent = error.message; }
    });
    nodes.push(el("h2", {}, "Add a project"), form, problem);
  }
  view.replaceChildren(...nodes);
}

const BADGES = {running: "running", waiting: "waiting for approval", failed: "failed", cancelled: "cancelled"};

async function showProject(projectId) {
  const {project} = await api("GET", `/api/projects/${projectId}`);
  setCrumbs(el("a", {href: "#/"}, "Projects"), project.name);
  const {sessions} = await api("GET", `/api/projects/${projectId}/sessions`);
  const canWrite = project.role !== "viewer";
  const create = el("button", {type: "button"}, "New session");
  create.addEventListener("click", async () => {
    const {session} = await api("POST", `/api/projects/${projectId}/sessions`, {});  // named by its first message
    location.hash = `#/sessions/${session.id}`;
  });
  view.replaceChildren(el("h1", {}, project.name),
    el("nav", {class: "row", "aria-label": "Project"}, canWrite ? create : "",
       el("a", {href: `#/projects/${projectId}/workflows`}, "Workflows"),
       el("a", {href: `#/projects/${projectId}/flows`}, "Flows"),
       el("a", {href: `#/projects/${projectId}/members`}, project.role === "owner" ? "Members and roles" : "Members")),
    el("ul", {class: "list"}, sessions.map((chat) =>
      el("li", {}, el("a", {href: `#/sessions/${chat.id}`}, chat.title), " ",
         chat.activity !== "idle" ? el("span", {class: `badge ${chat.activity}`}, BADGES[chat.activity]) : "", " ",
         el("span", {class: "status"}, new Date(chat.updated_at).toLocaleString())))));
}

// Members and their roles; owners add people by user name, change roles and remove members.
async function showMembers(projectId) {
  const {project} = await api("GET", `/api/projects/${projectId}`);
  setCrumbs(el("a", {href: "#/"}, "Projects"), el("a", {href: `#/projects/${projectId}`}, project.name), "Members");
  const owner = project.role === "owner";
  const problem = el("p", {class: "error", role: "alert"});
  const items = el("ul", {class: "list members"});
  const roles = (current) => ["owner", "member", "viewer"].map((role) => el("option", {value: role, selected: role === current}, role));
  const act = async (method, path, body) => {
    try { await api(method, path, body); problem.textContent = ""; } catch (error) { problem.textContent = error.message; }
    await refresh();
  };
  const refresh = async () => {
    const {members} = await api("GET", `/api/projects/${projectId}/members`);
    items.replaceChildren(...members.map((member) => {
      const row = el("li", {"data-user": member.username}, el("strong", {}, member.username), " ");
      if (owner) {
        const pick = el("select", {"aria-label": `Role of ${member.username}`}, roles(member.role));
        pick.addEventListener("change", () => act("PUT", `/api/projects/${projectId}/members/${member.user_id}`, {role: pick.value}));
        const remove = el("button", {type: "button", class: "secondary"}, `Remove ${member.username}`);
        remove.addEventListener("click", () => act("DELETE", `/api/projects/${projectId}/members/${member.user_id}`));
        row.append(pick, " ", remove);
      } else row.append(el("span", {class: "badge"}, member.role));
      return row;
    }));
  };
  const nodes = [el("h1", {}, "Members"), items];
  if (owner) {
    const form = el("form", {class: "row", "aria-label": "Add a member"},
      el("label", {}, "User name", el("input", {name: "username", required: true})),
      el("label", {}, "Role", el("select", {name: "role"}, roles("member"))),
      el("button", {type: "submit"}, "Add member"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(form);
      act("POST", `/api/projects/${projectId}/members`, {username: data.get("username").trim(), role: data.get("role")})
        .then(() => { if (!problem.textContent) form.reset(); });
    });
    nodes.push(el("h2", {}, "Add a member"), form);
  }
  nodes.push(problem);
  await refresh();
  view.replaceChildren(...nodes);
}

// ------------------------------------------------------------------ a session: chat, trace, cache, timeline

const TABS = ["chat", "trace", "cache"];
const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;

// The session's title as a heading; members rename it in place (Enter keeps, Escape gives up).
function titleEditor(chat, canWrite, onRenamed) {
  const heading = el("h1", {id: "session-title"}, chat.title);
  if (!canWrite) return {node: heading, show: () => null};
  const rename = el("button", {type: "button", class: "secondary small", "aria-label": "Rename the session"}, "Rename");
  const node = el("div", {class: "title-row"}, heading, rename);
  const show = (title) => { chat.title = title; heading.textContent = title; onRenamed(title); };
  rename.addEventListener("click", () => {
    const input = el("input", {name: "title", "aria-label": "Session title", value: chat.title, maxlength: "300", size: "50"});
    const problem = el("span", {class: "error", role: "alert"});
    const form = el("form", {class: "title-row", "aria-label": "Rename the session"}, input,
                    el("button", {type: "submit"}, "Save"), problem);
    const close = () => form.replaceWith(node);
    input.addEventListener("keydown", (event) => { if (event.key === "Escape") close(); });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const {session} = await api("PUT", `/api/sessions/${chat.id}/title`, {title: input.value.trim()});
        show(session.title);
        close();
        rename.focus();
      } catch (error) { problem.textContent = error.message; }
    });
    node.replaceWith(form);
    input.select();
  });
  return {node, show};
}

async function showSession(sessionId, tab) {
  const {session: chat} = await api("GET", `/api/sessions/${sessionId}`);
  const {project} = await api("GET", `/api/projects/${chat.project_id}`);
  const crumb = el("span", {}, chat.title);
  setCrumbs(el("a", {href: "#/"}, "Projects"), el("a", {href: `#/projects/${project.id}`}, project.name), crumb);
  const canWrite = project.role !== "viewer";
  const title = titleEditor(chat, canWrite, (text) => { crumb.textContent = text; });
  // the server names a session from its first message: show the name it chose
  const onSent = () => api("GET", `/api/sessions/${sessionId}`)
    .then(({session}) => { if (session.title !== chat.title) title.show(session.title); }).catch(() => null);
  const conversation = await createChat({sessionId, canWrite, since: chat.last_seq, onSent});
  const trace = createTrace({sessionId});
  const cache = createCache({sessionId});
  const panels = {chat: conversation.node, trace: trace.node, cache: cache.node};
  const opened = new Set(["chat"]);
  const tabs = TABS.map((name) => el("button", {type: "button", role: "tab", id: `tab-${name}`, "aria-controls": `panel-${name}`},
                                    name[0].toUpperCase() + name.slice(1)));
  const tabList = el("div", {role: "tablist", "aria-label": "Session views", class: "tabs"}, tabs);
  const holders = TABS.map((name) => el("div", {role: "tabpanel", id: `panel-${name}`, "aria-labelledby": `tab-${name}`, class: "panel"},
                                        panels[name]));
  const select = async (name, focus = false) => {
    TABS.forEach((other, index) => {
      const active = other === name;
      tabs[index].setAttribute("aria-selected", String(active));
      tabs[index].tabIndex = active ? 0 : -1;
      holders[index].hidden = !active;
    });
    if (focus) tabs[TABS.indexOf(name)].focus();
    history.replaceState(null, "", `#/sessions/${sessionId}${name === "chat" ? "" : `/${name}`}`);
    if (!opened.has(name)) {
      opened.add(name);
      await (name === "trace" ? trace.open() : cache.open()).catch((error) => toast(error.message));
    }
  };
  tabs.forEach((button, index) => {
    button.addEventListener("click", () => select(TABS[index]));
    button.addEventListener("keydown", (event) => {  // arrow keys move between tabs
      const step = {ArrowRight: 1, ArrowLeft: -1}[event.key];
      if (step) { event.preventDefault(); select(TABS[(index + step + TABS.length) % TABS.length], true); }
    });
  });
  const timeline = await createTimeline({sessionId, onPick: (runId, index) => {
    select("chat").then(() => conversation.jumpTo(runId, index));
  }});
  const footer = el("footer", {class: "session-footer", "aria-label": "Session totals"});
  const refreshFooter = async () => {
    const {summary} = await api("GET", `/api/sessions/${sessionId}/trace-summary`);
    footer.replaceChildren(
      el("span", {}, "cache hit rate ", el("span", {class: `badge hit ${hitClass(summary.cache_hit_rate)}`, "data-field": "cache_hit_rate"},
                                          percent(summary.cache_hit_rate))),
      el("span", {}, "saved ", el("strong", {"data-field": "saved"}, dollars(summary.cost.saved))),
      el("span", {}, "cost ", el("strong", {"data-field": "cost"}, dollars(summary.cost.total))),
      el("span", {}, `${plural(summary.model_calls, "model call")} · ${plural(summary.tool_calls, "tool call")}`));
  };
  await refreshFooter();
  view.replaceChildren(el("div", {class: "session-page"},
    el("div", {class: "session-main"}, title.node, tabList, holders, footer), timeline.node));
  await select(TABS.includes(tab) ? tab : "chat");
  conversation.scrollToEnd();
  let footerTimer = null;
  follow(sessionId, chat.last_seq, new Set([conversation.handle, trace.handle, cache.handle, timeline.handle, (event) => {
    if (event.type !== "span.finished") return;
    clearTimeout(footerTimer);
    footerTimer = setTimeout(refreshFooter, 300);
  }]));
}

// ------------------------------------------------------------------ routing

async function route() {
  closeSocket();
  try {
    const {user} = await api("GET", "/api/me");
    who.textContent = user.display_name || user.username;
    signout.hidden = false;
    const [, kind, id, sub] = location.hash.replace(/^#\/?/, "/").split("/");
    if (kind === "projects" && id && sub === "workflows") {
      const {project} = await api("GET", `/api/projects/${id}`);
      setCrumbs(el("a", {href: "#/"}, "Projects"), el("a", {href: `#/projects/${id}`}, project.name), "Workflows");
      await showWorkflows(view, project);
    } else if (kind === "projects" && id && sub === "flows") {
      const {project} = await api("GET", `/api/projects/${id}`);
      setCrumbs(el("a", {href: "#/"}, "Projects"), el("a", {href: `#/projects/${id}`}, project.name), "Flows");
      await showFlows(view, project);
    } else if (kind === "projects" && id && sub === "members") await showMembers(id);
    else if (kind === "projects" && id) await showProject(id);
    else if (kind === "sessions" && id) await showSession(id, sub);
    else if (kind === "runs" && id) await showWorkflowRun(view, id, setCrumbs);
    else if (kind === "flow-runs" && id) await showFlowRun(view, id, setCrumbs);
    else await showProjects(user);
  } catch (problem) {
    if (problem.status === 401) return showSignIn();
    if (problem.status === 404) return view.replaceChildren(el("h1", {}, "Not found"),
      el("p", {}, "There is nothing here, or you are not a member of its project."));
    view.replaceChildren(el("p", {class: "error", role: "alert"}, problem.message));
  }
}

window.addEventListener("hashchange", route);
route();
