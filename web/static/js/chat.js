// A session's chat: the conversation (virtualised: only a window of it is in the page), live text,
// tool calls and diffs, approvals, the Stop button, follow-ups queued behind a busy run, image
// attachments (picker, drag-and-drop, paste) and the background subagents pane.

import {ENDED, api, el, imageURL, toast, upload} from "./api.js";
import {markdownNode} from "./markdown.js";

const DIFF_LINES_SHOWN = 40;
const WINDOW = 120;      // the newest messages fetched and shown at first
const STEP = 80;         // older messages fetched each time the reader scrolls to the top of what is shown
const PAGE = 500;        // older messages fetched per request when jumping back to a turn

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

// One dialog for every image: opened by a thumbnail, closed by Escape, the button or a click outside.
function lightbox() {
  let dialog = document.getElementById("lightbox");
  if (!dialog) {
    const picture = el("img", {alt: ""});
    const close = el("button", {type: "button", class: "secondary"}, "Close");
    dialog = el("dialog", {id: "lightbox", "aria-label": "Image"}, picture, close);
    close.addEventListener("click", () => dialog.close());
    dialog.addEventListener("click", (event) => { if (event.target === dialog) dialog.close(); });
    document.body.append(dialog);
  }
  return dialog;
}

function thumbnail(sessionId, part) {
  const image = el("img", {class: "thumb", alt: "attached image", loading: "lazy", width: "120", height: "90"});
  const button = el("button", {type: "button", class: "thumb-button", "aria-label": "Open the attached image"}, image);
  imageURL(`/api/sessions/${sessionId}/attachments/${part.blob}`)
    .then((url) => { image.src = url; })
    .catch(() => button.replaceChildren("[image unavailable]"));
  button.addEventListener("click", () => {
    const dialog = lightbox();
    dialog.querySelector("img").src = image.src;
    dialog.showModal();
    dialog.querySelector("button").focus();
  });
  return button;
}

// Why a failed tool call failed, in one line for its collapsed row: run_command's status line
// ("exit code 1", "timed out after 30s") and the first line of its stderr, or the error's own first line.
export function failureSummary(content) {
  const lines = content.split("\n");
  const status = lines.find((line) => /^(exit code -?\d+|timed out |stopped: )/.test(line));
  if (!status) return lines.find((line) => line.trim()) || "";
  const errors = lines.slice(lines.indexOf("--- stderr ---") + 1).find((line) => line.trim());
  const output = lines.slice(lines.indexOf("--- stdout ---") + 1, lines.indexOf("--- stderr ---")).find((line) => line.trim());
  const why = lines.includes("--- stderr ---") ? errors || output : "";
  return why ? `${status}: ${why.trim().slice(0, 160)}` : status;
}

function toolResultNode(part) {
  const first = part.content.split("\n")[0].slice(0, 120);
  const summary = el("summary", {}, `${part.name}${part.is_error ? " failed" : ""}: ${first}`);
  if (part.is_error) {
    const why = failureSummary(part.content);
    if (why && why !== first) summary.append(el("span", {class: "why", "data-field": "why"}, why));
  }
  return el("details", {class: part.is_error ? "result failed" : "result"}, summary, el("pre", {}, part.content));
}

function renderParts(sessionId, message) {
  const nodes = [];
  for (const part of message.parts) {
    if (part.type === "text") nodes.push(message.role === "assistant" ? markdownNode(part.text) : el("div", {}, part.text));
    else if (part.type === "tool_call") nodes.push(el("div", {class: "call"}, `→ ${part.name}(${part.arguments})`));
    else if (part.type === "tool_result") nodes.push(toolResultNode(part));
    else if (part.type === "diff") nodes.push(diffNode(part));
    else if (part.type === "error") nodes.push(el("div", {class: "failed", role: "alert"}, `error ${part.code}: ${part.message}`));
    else if (part.type === "image") nodes.push(thumbnail(sessionId, part));
  }
  return nodes;
}

// Background subagents of a session: state, elapsed time, result; cancel and retry for members.
function subagentsPane(sessionId, canWrite) {
  const known = new Map();  // task id → the subagent as the API describes it (label, prompt, state…)
  const badge = el("span", {class: "badge running", hidden: true});
  const items = el("ul", {class: "list"});
  const pane = el("aside", {class: "subagents", "aria-label": "Background subagents", hidden: true},
    el("h2", {}, "Background subagents ", badge), items);
  const act = async (path) => { await api("POST", path).catch((problem) => toast(problem.message)); refresh(); };
  const refresh = async () => {
    const {subagents, running} = await api("GET", `/api/sessions/${sessionId}/subagents`);
    for (const task of subagents) known.set(task.task_id, task);
    pane.hidden = subagents.length === 0;
    badge.hidden = running === 0;
    badge.textContent = `${running} running`;
    items.replaceChildren(...subagents.map((task) => {
      const ended = ENDED.includes(task.status);
      const seconds = task.duration_seconds === null ? "" : ` · ${task.duration_seconds.toFixed(1)}s`;
      const row = el("li", {"data-task": task.task_id},
        el("strong", {}, task.label || task.task_id.slice(0, 8)), " ",
        el("span", {class: `badge ${task.state}`}, task.state.replaceAll("_", " ")),
        el("span", {class: "status"}, `${seconds} · ${task.tokens} tokens`),
        task.prompt ? el("p", {class: "prompt", "data-field": "prompt", title: task.prompt}, task.prompt) : "");
      if (task.result || task.error) {
        row.append(el("details", {class: "result"}, el("summary", {}, task.result ? "result" : "error"),
          el("pre", {}, task.result || `${task.error.code}: ${task.error.message}`)));
      }
      if (canWrite) {
        const button = el("button", {type: "button", class: "secondary"}, ended ? "Retry" : "Cancel");
        button.addEventListener("click", () => act(ended ? `/api/subagents/${task.task_id}/retry`
                                                         : `/api/runs/${task.task_id}/cancel`));
        row.append(" ", button);
      }
      return row;
    }));
  };
  return {pane, refresh, known};
}

const firstWords = (text, length = 240) => text.length > length ? `${text.slice(0, length).trimEnd()}…` : text;

// A subagent's finished (or failed) notice, which reaches the chat as the message that hands its
// result over: shown as a system event with the subagent's label and prompt, not as something the
// person wrote. The notice's text parts pair up, in order, with its subagent_notice parts.
function noticeNode(message, tasks) {
  const notices = message.parts.filter((part) => part.type === "subagent_notice");
  const texts = message.parts.filter((part) => part.type === "text");
  const node = el("article", {class: "message system subagent-notice", "data-seq": message.seq, "data-id": message.id,
                              "data-run": message.run_id || undefined, role: "note"});
  const fill = () => node.replaceChildren(el("span", {class: "role"}, "system"), ...notices.map((notice, index) => {
    const task = tasks.known.get(notice.task_id) || {};
    const label = task.label || notice.task_id.slice(0, 8);
    const ended = notice.status === "completed" ? "finished" : notice.status.replaceAll("_", " ");
    const seconds = task.duration_seconds === null || task.duration_seconds === undefined ? "" : ` after ${task.duration_seconds.toFixed(1)}s`;
    const said = (texts[index] ? texts[index].text : "").split("\n").slice(1).join("\n").trim();
    return el("div", {class: "notice", "data-task": notice.task_id},
      el("strong", {}, `Subagent ${label} ${ended}${seconds}`),
      task.prompt ? el("p", {class: "prompt", "data-field": "prompt"}, "Prompt: ", firstWords(task.prompt)) : "",
      said || task.result ? el("details", {class: "result"}, el("summary", {}, notice.status === "completed" ? "result" : "error"),
        el("pre", {}, said || task.result)) : "");
  }));
  fill();
  if (notices.some((notice) => !tasks.known.has(notice.task_id))) tasks.refresh().then(fill).catch(() => null);
  return node;
}

// A tool call waiting for a person: approve or deny (members), or just see it (viewers).
function approvalNode(approval, canWrite, onDecided) {
  const card = el("div", {class: "approval", role: "group", "aria-label": `approval for ${approval.tool}`,
                          "data-approval": approval.id},
    el("strong", {}, `${approval.tool} needs approval`), el("pre", {}, JSON.stringify(approval.arguments)));
  if (canWrite) {
    const actions = el("div", {class: "approval-actions"});
    card.append(actions);
    for (const decision of ["approve", "deny"]) {
      const button = el("button", {type: "button", class: decision === "deny" ? "secondary" : ""},
        decision === "approve" ? "Approve" : "Deny");
      button.addEventListener("click", async () => {
        await api("POST", `/api/approvals/${approval.id}/decision`, {decision});
        onDecided(approval.id);
      });
      actions.append(button);
    }
  }
  return card;
}

// The composer: text plus images picked, dropped or pasted; each image is uploaded at once and
// shown as a preview that can be taken off again before sending.
function composer(sessionId, onSend) {
  const input = el("textarea", {name: "text", "aria-label": "Message", placeholder: "Ask the agent… (Enter sends, Shift+Enter is a new line)"});
  const picker = el("input", {type: "file", accept: "image/png,image/jpeg,image/gif,image/webp", multiple: true,
                              class: "visually-hidden", id: "attach-picker", "aria-label": "Attach images"});
  const pick = el("label", {for: "attach-picker", class: "attach"}, "Attach image");  // the input, hidden, keeps the focus
  const previews = el("div", {class: "previews", "aria-label": "Attachments"});
  const problem = el("p", {class: "error", role: "alert"});
  const attached = [];
  const add = async (file) => {
    if (!file.type.startsWith("image/")) { problem.textContent = `${file.name || "that file"} is not an image`; return; }
    const preview = el("figure", {class: "preview uploading"}, el("img", {src: URL.createObjectURL(file), alt: file.name || "pasted image"}));
    previews.append(preview);
    try {
      const stored = await upload(`/api/sessions/${sessionId}/attachments`, file);
      const entry = {type: "image", blob: stored.blob, media_type: stored.media_type};
      attached.push(entry);
      const remove = el("button", {type: "button", class: "secondary", "aria-label": `Remove ${file.name || "image"}`}, "×");
      remove.addEventListener("click", () => { attached.splice(attached.indexOf(entry), 1); preview.remove(); });
      preview.classList.remove("uploading");
      preview.append(remove);
      problem.textContent = "";
    } catch (error) {
      preview.remove();
      problem.textContent = `could not attach ${file.name || "the image"}: ${error.message}`;
    }
  };
  picker.addEventListener("change", () => { [...picker.files].forEach(add); picker.value = ""; });
  const form = el("form", {class: "send"}, el("div", {class: "compose"}, input, previews, problem),
                  el("div", {class: "compose-actions"}, picker, pick, el("button", {type: "submit"}, "Send")));
  form.addEventListener("dragover", (event) => { event.preventDefault(); form.classList.add("dropping"); });
  form.addEventListener("dragleave", () => form.classList.remove("dropping"));
  form.addEventListener("drop", (event) => {
    event.preventDefault();
    form.classList.remove("dropping");
    [...event.dataTransfer.files].forEach(add);
  });
  input.addEventListener("paste", (event) => {
    const files = [...event.clipboardData.items].filter((item) => item.kind === "file").map((item) => item.getAsFile());
    if (files.length) { event.preventDefault(); files.forEach(add); }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (previews.querySelector(".uploading")) { problem.textContent = "an image is still uploading"; return; }
    const text = input.value.trim();
    if (!text && !attached.length) return;
    const parts = [...(text ? [{type: "text", text}] : []), ...attached];
    try {
      await onSend(parts);
      input.value = "";
      attached.length = 0;
      previews.replaceChildren();
      problem.textContent = "";
    } catch (error) { problem.textContent = error.message; }
  });
  return form;
}

// `since` is the session's last_seq when the page opened: the newest page is read up to it and the
// event stream follows from it, so no message is missed or shown twice.
export async function createChat({sessionId, canWrite, since, onSent = () => null}) {
  // Only the newest WINDOW messages are fetched; older ones are fetched a page at a time (keyset by
  // seq) as the reader scrolls back, so opening a session of 10,000 messages costs one small page.
  const messagesPath = `/api/sessions/${sessionId}/messages`;
  const first = await api("GET", `${messagesPath}?before=${since + 1}&limit=${WINDOW}&count=earlier`);
  const all = [...first.messages];  // what is in the page, in seq order
  const seen = new Set(all.map((message) => message.id));
  let earlierCount = first.earlier;  // messages before all[0] not fetched yet
  let fetching = null;
  const sentinel = el("div", {class: "sentinel", "aria-hidden": "true"});
  const earlier = el("p", {class: "status earlier"});
  const list = el("section", {class: "messages", "aria-label": "Conversation", tabindex: "0"}, sentinel, earlier);
  const runStatus = new Map();     // run id → status, for the chat's own runs
  const chatRuns = new Set();      // the chat's own (top-level agent) runs; only those drive Stop and the status
  let activeRun = null;
  const status = el("p", {class: "status", id: "run-status", role: "status"});
  const queueNote = el("span", {class: "badge queued", id: "queue-note", hidden: true});
  const stop = el("button", {type: "button", class: "secondary", hidden: true}, "Stop");
  stop.addEventListener("click", () => activeRun && api("POST", `/api/runs/${activeRun}/cancel`).catch(() => null));

  const {runs: recent} = await api("GET", `/api/sessions/${sessionId}/runs?limit=50`);
  for (const run of recent.filter((run) => run.kind === "agent" && !run.parent_id)) {
    chatRuns.add(run.id);
    runStatus.set(run.id, run.status);
  }
  const busy = recent.filter((run) => chatRuns.has(run.id) && ["running", "waiting"].includes(run.status))[0]
    || recent.filter((run) => chatRuns.has(run.id) && run.status === "queued").at(-1);
  if (busy) { activeRun = busy.id; status.textContent = busy.status === "waiting" ? "waiting for approval" : "working…"; stop.hidden = !canWrite; }

  const tasks = subagentsPane(sessionId, canWrite);
  await tasks.refresh();

  const atBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const messageNode = (message) => {
    if (message.parts.some((part) => part.type === "subagent_notice")) return noticeNode(message, tasks);
    const subagent = message.run_id && tasks.known.get(message.run_id);  // a subagent's own conversation
    if (subagent) {
      return el("article", {class: `message ${message.role} from-subagent`, "data-seq": message.seq, "data-id": message.id,
                            "data-run": message.run_id},
        el("span", {class: "role"}, `subagent ${subagent.label || subagent.task_id.slice(0, 8)} · ${message.role}`),
        renderParts(sessionId, message));
    }
    const node = el("article", {class: `message ${message.role}`, "data-seq": message.seq, "data-id": message.id,
                                "data-run": message.run_id || undefined},
      el("span", {class: "role"}, message.role), renderParts(sessionId, message));
    if (message.role === "user" && message.run_id && runStatus.get(message.run_id) === "queued" && message.run_id !== activeRun) {
      node.classList.add("queued");
      node.prepend(el("span", {class: "badge queued"}, "queued"));
    }
    return node;
  };
  const sayEarlier = () => {
    earlier.textContent = earlierCount ? `${earlierCount} earlier messages — scroll up to see them` : "";
  };
  // Fetch up to `count` older messages and put them above what is shown, keeping the reader's place;
  // false once the start of the conversation is reached. One fetch at a time.
  const showEarlier = (count = STEP) => {
    if (!earlierCount || !all.length) return Promise.resolve(false);
    fetching ??= api("GET", `${messagesPath}?before=${all[0].seq}&limit=${count}`).then(({messages, next_before: more}) => {
      const fresh = messages.filter((message) => !seen.has(message.id));
      fresh.forEach((message) => seen.add(message.id));
      const keep = list.scrollHeight - list.scrollTop;
      earlier.after(...fresh.map(messageNode));
      all.unshift(...fresh);
      list.scrollTop = list.scrollHeight - keep;
      earlierCount = more === null ? 0 : Math.max(0, earlierCount - fresh.length);
      sayEarlier();
      return fresh.length > 0;
    }).finally(() => { fetching = null; });
    return fetching;
  };
  sayEarlier();
  list.append(...all.map(messageNode));
  new IntersectionObserver((entries) => { if (entries.some((entry) => entry.isIntersecting)) showEarlier(); },
                           {root: list, rootMargin: "200px 0px 0px 0px"}).observe(sentinel);

  const add = (message) => {
    if (seen.has(message.id)) return;
    seen.add(message.id);
    const follow = atBottom();
    // each message is fetched as its event arrives, and the answers can come back out of order (a
    // fast run's messages arrive together): it goes before the first one shown with a later seq
    const at = all.findIndex((other) => other.seq > message.seq);
    const later = at === -1 ? null : list.querySelector(`.message[data-id="${all[at].id}"]`);
    all.splice(at === -1 ? all.length : at, 0, message);
    // the streamed text gives way to the message the model's turn wrote; a follow-up the person sends
    // meanwhile goes underneath while the stream goes on
    if (message.role !== "user") list.querySelector(".live")?.remove();
    if (later) later.before(messageNode(message)); else list.append(messageNode(message));
    if (follow || message.role === "user") list.scrollTop = list.scrollHeight;
  };

  // Follow-ups: a message sent while a run is busy waits for it; it is marked until its own run starts.
  const refreshQueue = () => {
    const waiting = [...runStatus.entries()].filter(([id, state]) => state === "queued" && id !== activeRun).length;
    queueNote.hidden = waiting === 0;
    queueNote.textContent = waiting === 1 ? "1 follow-up queued" : `${waiting} follow-ups queued`;
    for (const node of list.querySelectorAll(".message.user[data-run]")) {
      const queued = runStatus.get(node.dataset.run) === "queued" && node.dataset.run !== activeRun;
      if (queued && !node.classList.contains("queued")) {  // a run that went back to waiting its turn
        node.classList.add("queued");
        node.prepend(el("span", {class: "badge queued"}, "queued"));
      } else if (!queued && node.classList.contains("queued")) {
        node.classList.remove("queued");
        node.querySelector(".badge.queued")?.remove();
      }
    }
  };

  refreshQueue();

  const pending = el("section", {class: "approvals", "aria-label": "Approvals"});
  const removeApproval = (id) => pending.querySelector(`[data-approval="${id}"]`)?.remove();
  const showApproval = (approval) => {
    if (approval.status !== "pending" || pending.querySelector(`[data-approval="${approval.id}"]`)) return;
    pending.append(approvalNode(approval, canWrite, removeApproval));
  };
  const {approvals: waiting} = await api("GET", `/api/sessions/${sessionId}/approvals?status=pending`);
  waiting.forEach(showApproval);

  const node = el("div", {class: "chat"}, tasks.pane, list, pending,
                  el("div", {class: "controls"}, status, queueNote, canWrite ? stop : ""));
  if (canWrite) {
    node.append(composer(sessionId, async (parts) => {
      const {message, run} = await api("POST", `/api/sessions/${sessionId}/messages`, {parts});
      chatRuns.add(run.id);
      if (!runStatus.has(run.id)) runStatus.set(run.id, run.status);
      add(message);
      refreshQueue();
      onSent(message);
    }));
  }
  // The newest messages in view (again a frame later, once the ones on screen have their real sizes).
  const scrollToEnd = () => {
    list.scrollTop = list.scrollHeight;
    requestAnimationFrame(() => { list.scrollTop = list.scrollHeight; });
  };

  const started = (runId) => {
    activeRun = runId;
    runStatus.set(runId, "running");
    status.textContent = "working…";
    stop.hidden = !canWrite;
    refreshQueue();
  };
  const handlers = {
    "message.created": (event) => api("GET", `/api/sessions/${sessionId}/messages?after=${event.seq - 1}&limit=1`)
      .then(async ({messages: found}) => {
        for (const message of found.filter((message) => message.seq === event.seq)) {
          // a run that is not the chat's own may be a subagent just spawned: learn its label first
          if (message.run_id && !chatRuns.has(message.run_id) && !tasks.known.has(message.run_id)) await tasks.refresh();
          add(message);
        }
      }),
    "text.delta": (event) => {
      if (!chatRuns.has(event.run_id)) return;  // a subagent's or workflow agent's text is not this chat's
      const follow = atBottom();
      let live = list.querySelector(".live");
      if (!live) {
        live = el("article", {class: "message assistant live"}, el("span", {class: "role"}, "assistant"), el("div"));
        list.append(live);
      }
      live.lastChild.textContent += event.data.text;
      if (follow) list.scrollTop = list.scrollHeight;
    },
    "run.queued": (event) => {
      if (event.data.kind !== "agent" || event.data.parent_id) return;
      chatRuns.add(event.run_id);
      if (event.data.behind) {  // claimed (announced as started), but it waits for the run it is behind
        runStatus.set(event.run_id, "queued");
        if (activeRun === event.run_id) {
          const behind = runStatus.get(event.data.behind);
          activeRun = !behind || ["queued", "running", "waiting"].includes(behind) ? event.data.behind : null;
        }
      } else if (!runStatus.has(event.run_id) || runStatus.get(event.run_id) === "queued") {
        runStatus.set(event.run_id, "queued");
      }
      refreshQueue();
    },
    "run.started": (event) => { if (chatRuns.has(event.run_id)) started(event.run_id); },
    "run.resumed": (event) => { if (chatRuns.has(event.run_id)) started(event.run_id); },
    "run.finished": (event) => {
      if (!chatRuns.has(event.run_id)) return;  // a subagent or workflow agent, not the chat's own run
      runStatus.set(event.run_id, event.data.status);
      refreshQueue();
      if (event.run_id !== activeRun) return;
      activeRun = null;
      stop.hidden = true;
      list.querySelector(".live")?.remove();
      status.textContent = event.data.status === "completed" ? "" : `run ${event.data.status}` +
        (event.data.error ? `: ${event.data.error.message}` : "");
      status.classList.toggle("failed", !["completed", "cancelled"].includes(event.data.status));
    },
    "run.waiting": (event) => { if (event.run_id === activeRun) status.textContent = "waiting for approval"; },
    "approval.requested": (event) => { showApproval(event.data); toast(`${event.data.tool} needs approval`); },
    "approval.decided": (event) => removeApproval(event.data.id),
    "subagent.spawned": () => tasks.refresh(),
    "subagent.admitted": () => tasks.refresh(),
    "subagent.finished": (event) => {
      tasks.refresh();
      toast(`subagent ${event.data.label || event.data.task_id.slice(0, 8)} ${event.data.status}`);
    },
  };

  // Scroll to a turn of one of the chat's runs (`index` counts its turns from 0): the run's assistant
  // message of that turn (or, failing that, the message that started the run), fetching earlier
  // pages until the run's first (user) message is in the page.
  const jumpTo = async (runId, index) => {
    const started = () => all.some((message) => message.run_id === runId && message.role === "user");
    while (!started() && await showEarlier(PAGE)) { /* bring the run's start into the page */ }
    const ofRun = all.filter((message) => message.run_id === runId);
    const target = ofRun.filter((message) => message.role === "assistant")[index] || ofRun[0];
    if (!target) return false;
    const found = list.querySelector(`[data-id="${target.id}"]`);
    if (!found) return false;
    // At the top of the view, put back there frame after frame while the messages around it take
    // their real sizes (content-visibility: auto lays them out only as they come near the view).
    const offset = () => found.getBoundingClientRect().top - list.getBoundingClientRect().top;
    const place = (frames) => {
      if (Math.abs(offset()) > 2) found.scrollIntoView({block: "start"});
      if (frames > 0) requestAnimationFrame(() => place(frames - 1));
    };
    place(20);
    found.classList.add("highlight");
    setTimeout(() => found.classList.remove("highlight"), 1500);
    return true;
  };

  return {node, handle: (event) => handlers[event.type]?.(event), jumpTo, scrollToEnd};
}
