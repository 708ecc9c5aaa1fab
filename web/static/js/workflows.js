// Workflows: what a project can run (built-in, personal and project scripts, with description and
// phases); a form to run one (JSON args checked as you type, optional caps, a dry run with the cost
// estimate); and a live view of a run: phases as groups, each agent's label, status, model, tokens,
// cost, duration and a "cached" mark, the log, failures, the result, Cancel and Resume.

import {ENDED, api, dollars, duration, el, follow, number, toast} from "./api.js";

const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;
const words = (status) => status.replaceAll("_", " ");  // completed_with_failures → completed with failures

// What a workflow run is doing, as a person would say it: between two ticks the run itself is queued
// for the worker while its agents work, which is running, not waiting to start.
export function shownStatus(report) {
  const status = report.run.status;
  if (status === "queued" && (report.run.started_at || report.agents.some((agent) => agent.status === "running"))) return "running";
  return status;
}

// The arguments a workflow declares (`meta.args`: a JSON Schema or a description of each argument, and
// `meta.example`), wherever the workflow list puts them; null when it declares none.
export function declaredArgs(workflow) {
  const meta = workflow.meta || {};
  const args = workflow.args ?? meta.args ?? null;
  const example = workflow.example ?? meta.example ?? workflow.argsExample ?? meta.argsExample ?? null;
  if (args === null && example === null) return null;
  const schema = args && typeof args === "object" && args.type === "object" && args.properties ? args : null;
  const fields = schema ? Object.entries(schema.properties).map(([name, spec]) =>
    ({name, type: spec.type || "", about: spec.description || "", required: (schema.required || []).includes(name)}))
    : args && typeof args === "object" ? Object.entries(args).map(([name, about]) =>
      ({name, type: "", about: typeof about === "string" ? about : JSON.stringify(about), required: false}))
    : [];
  return {fields, required: schema ? schema.required || [] : [], text: typeof args === "string" ? args : "", example};
}

function argsHint(declared) {
  if (!declared) return el("p", {class: "status args-hint"}, "This workflow declares no arguments (meta.args); see its source for what it reads from args.");
  return el("div", {class: "args-hint", "aria-label": "Arguments it takes"},
    declared.text ? el("p", {class: "status"}, declared.text) : "",
    declared.fields.length ? el("ul", {class: "args"}, declared.fields.map((field) => el("li", {"data-arg": field.name},
      el("code", {}, field.name), field.type ? ` (${field.type}${field.required ? ", required" : ""})` : field.required ? " (required)" : "",
      field.about ? ` — ${field.about}` : ""))) : "",
    declared.example !== null ? el("p", {class: "status"}, "Example: ", el("code", {}, JSON.stringify(declared.example))) : "");
}


function capsFields() {
  const field = (name, label) => el("label", {}, label, el("input", {name, type: "number", min: "1", placeholder: "default"}));
  return el("fieldset", {class: "caps"}, el("legend", {}, "Caps (optional)"),
    field("concurrency", "Agents at once"), field("max_agents", "Most agents"), field("max_tokens", "Most tokens"));
}

function runForm(project, workflow, sessions) {
  const declared = declaredArgs(workflow);
  const start = declared && declared.example !== null ? JSON.stringify(declared.example, null, 2) : "{}";
  const args = el("textarea", {name: "args", "aria-label": "Arguments (JSON)", rows: "5", spellcheck: "false"}, start);
  const argsProblem = el("p", {class: "error", role: "alert", id: `args-problem-${workflow.name}`});
  const parsed = () => {
    const text = args.value.trim();
    if (!text) return {value: undefined};
    let value;
    try { value = JSON.parse(text); } catch (error) { return {problem: `not valid JSON: ${error.message}`}; }
    const missing = (declared ? declared.required : []).filter((name) => !value || typeof value !== "object" || !(name in value));
    return missing.length ? {problem: `missing ${missing.join(", ")} (this workflow requires ${missing.length === 1 ? "it" : "them"})`} : {value};
  };
  args.addEventListener("input", () => {
    const {problem} = parsed();
    argsProblem.textContent = problem || "";
    args.setAttribute("aria-invalid", String(Boolean(problem)));
  });
  const where = el("select", {name: "session"},
    el("option", {value: ""}, "a new session"), sessions.map((chat) => el("option", {value: chat.id}, chat.title)));
  const caps = capsFields();
  const outcome = el("div", {class: "dry-run", role: "status"});
  const check = el("button", {type: "button", class: "secondary"}, "Check (dry run)");
  const form = el("form", {class: "run-workflow", "aria-label": `Run ${workflow.name}`},
    el("label", {}, "Arguments (JSON)", args), argsHint(declared), argsProblem, el("label", {}, "Run in", where), caps,
    el("div", {class: "row"}, el("button", {type: "submit"}, "Run"), check), outcome);
  const body = (dryRun) => {
    const {value, problem} = parsed();
    if (problem) throw new Error(problem);
    const limits = {};
    for (const input of caps.querySelectorAll("input")) if (input.value) limits[input.name] = Number(input.value);
    return {name: workflow.name, ...(value === undefined ? {} : {args: value}),
            ...(Object.keys(limits).length ? {caps: limits} : {}), ...(dryRun ? {dry_run: true} : {})};
  };
  const sessionFor = async () => {
    if (where.value) return where.value;
    const {session} = await api("POST", `/api/projects/${project.id}/sessions`, {title: `workflow ${workflow.name}`});
    return session.id;
  };
  check.addEventListener("click", async () => {
    try {
      const chat = where.value || (sessions[0] && sessions[0].id);
      if (!chat) { outcome.textContent = "a dry run needs a session: start one first"; return; }
      const {dry_run: dry} = await api("POST", `/api/sessions/${chat}/workflows`, body(true));
      const guess = dry.estimate || {};
      outcome.replaceChildren(el("p", {}, `Compiles. First wave: ${dry.first_wave.length} agent${dry.first_wave.length === 1 ? "" : "s"}.`),
        el("pre", {}, JSON.stringify(guess, null, 2)));
    } catch (error) { outcome.replaceChildren(el("p", {class: "error"}, error.message)); }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const payload = body(false);
      const chat = await sessionFor();
      const {run} = await api("POST", `/api/sessions/${chat}/workflows`, payload);
      location.hash = `#/runs/${run.id}`;
    } catch (error) {
      const details = (error.details || []).map((detail) => `${detail.path}: ${detail.message}`).join("; ");
      outcome.replaceChildren(el("p", {class: "error"}, details ? `${error.message} (${details})` : error.message));
    }
  });
  return form;
}

export async function showWorkflows(view, project) {
  const [{workflows, problems}, {sessions}] = await Promise.all([
    api("GET", `/api/projects/${project.id}/workflows`), api("GET", `/api/projects/${project.id}/sessions`)]);
  const canWrite = project.role !== "viewer";
  const {runs} = await api("GET", `/api/projects/${project.id}/runs?limit=20`);
  const recent = runs.filter((run) => run.kind === "workflow");
  view.replaceChildren(el("h1", {}, "Workflows"),
    el("ul", {class: "list workflows"}, workflows.map((workflow) => {
      const item = el("li", {"data-workflow": workflow.name},
        el("h2", {}, workflow.name, " ", el("span", {class: "badge"}, workflow.source)),
        el("p", {}, workflow.description || "(no description)"),
        workflow.phases.length ? el("p", {class: "status"}, `Phases: ${workflow.phases.join(" → ")}`) : "");
      if (canWrite) {
        const open = el("button", {type: "button", class: "secondary", "aria-expanded": "false"}, `Run ${workflow.name}…`);
        open.addEventListener("click", () => {
          const shown = item.querySelector("form");
          if (shown) { shown.remove(); open.setAttribute("aria-expanded", "false"); return; }
          const form = runForm(project, workflow, sessions);
          item.append(form);
          open.setAttribute("aria-expanded", "true");
          form.querySelector("textarea").focus();
        });
        item.append(open);
      }
      return item;
    })),
    problems.length ? el("section", {}, el("h2", {}, "Refused files"),
      el("ul", {class: "list"}, problems.map((problem) => el("li", {class: "error"}, `${problem.path}: ${problem.message || problem.error}`)))) : "",
    el("h2", {}, "Recent runs"),
    recent.length ? el("ul", {class: "list"}, recent.map((run) => el("li", {},
      el("a", {href: `#/runs/${run.id}`}, `${(run.input && run.input.meta && run.input.meta.name) || run.id.slice(0, 8)}`), " ",
      el("span", {class: `badge ${run.status}`}, words(run.status)), " ",
      el("span", {class: "status"}, new Date(run.created_at).toLocaleString()))))
      : el("p", {class: "status"}, "None yet."));
}

// Each failure once: an agent that failed is also reported by the parallel() or script step that
// awaited it, with the same reason; the agent's entry (with its label) is the one kept.
export function distinctFailures(report) {
  const byAgent = new Set(report.failures.filter((failure) => failure.kind === "agent").map((failure) => failure.reason));
  const seen = new Set();
  return report.failures.filter((failure) => {
    if (failure.kind !== "agent" && byAgent.has(failure.reason)) return false;
    const key = `${failure.kind}|${failure.key ?? failure.index}|${failure.reason}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function agentRow(agent, now, pass) {
  // a call made in an earlier pass that this pass did not reach again (its prompt changed, say)
  const stale = agent.pass < pass && !agent.cached;
  const elapsed = agent.duration_ms ?? (agent.started_at && !ENDED.includes(agent.status) ? now - new Date(agent.started_at).getTime() : null);
  return el("li", {class: `agent ${agent.status}${stale ? " stale" : ""}`, "data-agent": agent.key},
    el("strong", {}, agent.label || agent.key), " ",
    stale ? el("span", {class: "badge", title: "made in an earlier pass and not used by this one"}, `pass ${agent.pass}`) : "", " ",
    el("span", {class: `badge ${agent.status}`}, words(agent.status)), " ",
    agent.cached ? el("span", {class: "badge cached", title: "served from the journal: not run again"}, "cached") : "",
    el("span", {class: "status"}, ` ${agent.model || ""} · ${number(agent.tokens)} tokens · ${dollars(agent.cost)} · ${duration(elapsed)}`),
    agent.error ? el("div", {class: "failed"}, `${agent.error.code || "error"}: ${agent.error.message || ""}`) : "",
    agent.value !== null && agent.value !== undefined ? el("details", {class: "result"}, el("summary", {}, "result"),
      el("pre", {}, typeof agent.value === "string" ? agent.value : JSON.stringify(agent.value, null, 2))) : "");
}

export async function showWorkflowRun(view, runId, setCrumbs) {
  let report = await api("GET", `/api/runs/${runId}/workflow`);
  const {project} = await api("GET", `/api/projects/${report.run.project_id}`);
  const canWrite = project.role !== "viewer";
  setCrumbs(el("a", {href: "#/"}, "Projects"), el("a", {href: `#/projects/${project.id}`}, project.name),
            el("a", {href: `#/projects/${project.id}/workflows`}, "Workflows"), report.meta.name || runId.slice(0, 8));
  const heading = el("h1", {}, `Workflow ${report.meta.name || ""}`);
  const state = el("p", {class: "status", role: "status", id: "workflow-state"});
  const cancel = el("button", {type: "button", class: "secondary"}, "Cancel");
  const resume = el("button", {type: "button"}, "Resume");
  const body = el("div");
  cancel.addEventListener("click", () => api("POST", `/api/runs/${runId}/cancel`).then(refresh).catch((error) => toast(error.message)));
  resume.addEventListener("click", () => api("POST", `/api/runs/${runId}/resume`).then(refresh).catch((error) => toast(error.message)));
  const draw = () => {
    const now = Date.now();
    const ended = ENDED.includes(report.run.status);
    cancel.hidden = !canWrite || ended;
    resume.hidden = !canWrite || !ended;
    const counts = Object.entries(report.counts).map(([name, count]) => `${count} ${words(name)}`).join(", ");
    const status = shownStatus(report);
    state.replaceChildren(el("span", {class: `badge large ${status}`, "data-status": status}, words(status)),
      ` pass ${report.pass} · ${plural(report.totals.agents, "agent")} (${counts || "none yet"}) · ${report.cached} cached · ` +
      `${number(report.totals.tokens)} tokens · ${dollars(report.totals.cost)}`);
    const byKey = new Map(report.agents.map((agent) => [agent.key, agent]));
    const failures = distinctFailures(report);
    const opened = new Set([...body.querySelectorAll("[data-agent] details[open]")].map((node) => node.closest("[data-agent]").dataset.agent));
    body.replaceChildren(
      el("section", {"aria-label": "Phases"}, report.phases.map((phase) => el("section", {class: "phase", "aria-label": `phase ${phase.title || "(none)"}`},
        el("h2", {}, phase.title || "(no phase)"),
        phase.agents.length ? el("ul", {class: "list agents"}, phase.agents.map((key) => agentRow(byKey.get(key), now, report.pass)))
          : el("p", {class: "status"}, "no agents yet")))),
      failures.length ? el("section", {"aria-label": "Failures"}, el("h2", {}, "Failures"),
        el("ul", {class: "list"}, failures.map((failure) => el("li", {class: "failed"},
          `${failure.label || failure.key || failure.kind || ""} ${failure.status ? words(failure.status) : "failed"}` +
          `${failure.line ? ` (line ${failure.line})` : ""}: ${failure.reason || JSON.stringify(failure)}`)))) : "",
      report.error ? el("p", {class: "failed", role: "alert", id: "workflow-error"},
        `${report.error.code}${report.error.line ? ` at line ${report.error.line}` : ""}: ${report.error.message}`) : "",
      report.value !== null && report.value !== undefined ? el("section", {"aria-label": "Result"}, el("h2", {}, "Result"),
        el("pre", {class: "workflow-result"}, typeof report.value === "string" ? report.value : JSON.stringify(report.value, null, 2))) : "",
      el("section", {"aria-label": "Log"}, el("h2", {}, "Log"),
        el("ol", {class: "log"}, report.logs.map((entry) => el("li", {class: `log-${entry.level}`},
          el("span", {class: "status"}, `${new Date(entry.created_at).toLocaleTimeString()} ${entry.phase ? `[${entry.phase}] ` : ""}`), entry.text)))));
    for (const key of opened) body.querySelector(`[data-agent="${CSS.escape(key)}"] details`)?.setAttribute("open", "");
  };
  const refresh = async () => { report = await api("GET", `/api/runs/${runId}/workflow`); draw(); };
  view.replaceChildren(heading, el("div", {class: "controls"}, state, cancel, resume), body);
  draw();
  let timer = null;
  const {session: chat} = await api("GET", `/api/sessions/${report.run.session_id}`);
  follow(chat.id, chat.last_seq, new Set([(event) => {
    // the run's own events and its agents' (workflow.agent.*); other runs in the session are not ours
    if (event.run_id !== runId && !event.type.startsWith("workflow.")) return;
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  }]));
  await refresh();  // anything that happened before the stream was opened
  const ticker = setInterval(() => {
    if (!heading.isConnected) { clearInterval(ticker); return; }
    if (!ENDED.includes(report.run.status)) draw();
  }, 1000);
}
