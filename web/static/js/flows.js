// Flows: what a project can run (project, personal and built-in flows, the files refused with every
// problem, a Start form taking JSON input) and a page per flow run that draws its DAG live.
//
//     draw(report):  steps in layers by their longest path from a root (file order, then the mean
//                    position of their upstreams), each a positioned button coloured by its state;
//                    edges as SVG paths; a switch's taken branch solid, its excluded branches dashed
//     live:          every flow.* event and every event of the run itself on the session's socket
//                    -> refetch GET /api/flow-runs/{id} (debounced); the socket closes once the run
//                    has ended and opens again after a rerun
//
// Everything a flow's author or a model wrote reaches the page as text (el() / textContent), or as
// Markdown through the sanitiser (markdown.js) for the run's output; nothing here parses HTML.

import {ENDED, api, closeSocket, dollars, duration, el, follow, number, toast} from "./api.js";
import {markdownNode} from "./markdown.js";

const words = (state) => state.replaceAll("_", " ");  // timed_out → timed out
const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;
const json = (value) => (typeof value === "string" ? value : JSON.stringify(value, null, 2));

// ------------------------------------------------------------------ the flow list

function inputHint(schema) {
  const properties = schema && schema.properties ? Object.entries(schema.properties) : [];
  if (!properties.length) return el("p", {class: "status"}, schema ? "Input: any JSON." : "This flow takes no declared input.");
  const required = new Set(schema.required || []);
  return el("ul", {class: "args", "aria-label": "Input it takes"}, properties.map(([name, spec]) => el("li", {"data-arg": name},
    el("code", {}, name), ` (${spec.type || "any"}${required.has(name) ? ", required" : ""})`,
    spec.description ? ` — ${spec.description}` : "")));
}

function startForm(project, flow) {
  const start = flow.example !== null && flow.example !== undefined ? JSON.stringify(flow.example, null, 2) : "{}";
  const input = el("textarea", {name: "input", rows: "6", spellcheck: "false"}, start);
  const problem = el("p", {class: "error", role: "alert"});
  const parsed = () => {
    const text = input.value.trim();
    if (!text) return {value: undefined};
    try { return {value: JSON.parse(text)}; } catch (error) { return {problem: `not valid JSON: ${error.message}`}; }
  };
  input.addEventListener("input", () => {
    const {problem: wrong} = parsed();
    problem.textContent = wrong || "";
    input.setAttribute("aria-invalid", String(Boolean(wrong)));
  });
  const form = el("form", {class: "start-flow", "aria-label": `Start ${flow.name}`},
    el("label", {}, "Input (JSON)", input), inputHint(flow.input), problem,
    el("div", {class: "row"}, el("button", {type: "submit"}, "Start")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const {value, problem: wrong} = parsed();
    if (wrong) { problem.textContent = wrong; return; }
    try {
      const {run} = await api("POST", `/api/projects/${project.id}/flows/${encodeURIComponent(flow.name)}/runs`,
                              value === undefined ? {} : {input: value});
      location.hash = `#/flow-runs/${run.id}`;
    } catch (error) {
      const details = Array.isArray(error.details) ? error.details.map((detail) => `${detail.path}: ${detail.message}`).join("; ") : "";
      problem.textContent = details ? `${error.message} (${details})` : error.message;
    }
  });
  return form;
}

function flowItem(project, flow, canWrite) {
  const item = el("li", {"data-flow": flow.name},
    el("h2", {}, flow.name, " ", el("span", {class: "badge"}, flow.source)),
    el("p", {}, flow.description || "(no description)"),
    el("p", {class: "status"}, `${plural(flow.steps.length, "step")}: `,
       flow.steps.map((step) => `${step.id} (${step.kind})`).join(", ")),
    flow.schedule ? el("p", {class: "status"}, `Scheduled: ${flow.schedule.cron} (${flow.schedule.timezone || "UTC"})`) : "");
  if (!canWrite) return item;
  const open = el("button", {type: "button", class: "secondary", "aria-expanded": "false"}, `Start ${flow.name}…`);
  open.addEventListener("click", () => {
    const shown = item.querySelector("form");
    open.setAttribute("aria-expanded", String(!shown));
    if (shown) { shown.remove(); return; }
    const form = startForm(project, flow);
    item.append(form);
    form.querySelector("textarea").focus();
  });
  item.append(open);
  return item;
}

function refusedList(problems) {
  if (!problems.length) return "";
  return el("section", {"aria-label": "Refused files"}, el("h2", {}, "Refused files"),
    el("ul", {class: "list refused"}, problems.map((file) => el("li", {"data-path": file.path},
      el("strong", {}, file.path), " ", el("span", {class: "badge"}, file.source),
      el("ul", {}, (file.problems || []).map((problem) => el("li", {class: "error"},
        `${problem.line ? `line ${problem.line} ` : ""}${problem.step ? `[${problem.step}] ` : ""}${problem.message}`)))))));
}

export async function showFlows(view, project) {
  const [{flows, problems}, {runs}] = await Promise.all([
    api("GET", `/api/projects/${project.id}/flows`), api("GET", `/api/projects/${project.id}/runs?limit=50`)]);
  const canWrite = project.role !== "viewer";
  const recent = runs.filter((run) => run.kind === "flow");
  view.replaceChildren(el("h1", {}, "Flows"),
    el("ul", {class: "list flows"}, flows.map((flow) => flowItem(project, flow, canWrite))),
    refusedList(problems),
    el("h2", {}, "Recent runs"),
    recent.length ? el("ul", {class: "list"}, recent.map((run) => el("li", {},
      el("a", {href: `#/flow-runs/${run.id}`}, (run.input && run.input.flow && run.input.flow.name) || run.id.slice(0, 8)), " ",
      el("span", {class: `badge ${run.status}`}, words(run.status)), " ",
      el("span", {class: "status"}, new Date(run.created_at).toLocaleString()))))
      : el("p", {class: "status"}, "None yet."));
}

// ------------------------------------------------------------------ laying the DAG out

const NODE = {width: 176, height: 84, gapX: 36, gapY: 60, pad: 14};

// Each step's layer: 0 for a root, else one below its deepest upstream (definitions are acyclic;
// the provisional 0 only keeps bad data from looping).
function layersOf(steps) {
  const byId = new Map(steps.map((step) => [step.id, step]));
  const depth = new Map();
  const depthOf = (id) => {
    if (depth.has(id)) return depth.get(id);
    depth.set(id, 0);
    const deps = (byId.get(id).deps || []).filter((dep) => byId.has(dep));
    const found = deps.length ? 1 + Math.max(...deps.map(depthOf)) : 0;
    depth.set(id, found);
    return found;
  };
  const layers = [];
  steps.forEach((step, index) => { (layers[depthOf(step.id)] ||= []).push({step, index}); });
  return layers.filter(Boolean);
}

// Positions (top-left, px) of every step, layers top to bottom, each layer centred; within a layer
// steps sit under the mean x of their upstreams (fewer crossings), ties in file order.
export function layout(steps) {
  const layers = layersOf(steps);
  const slot = NODE.width + NODE.gapX;
  const widest = Math.max(1, ...layers.map((layer) => layer.length));
  const width = widest * slot - NODE.gapX + 2 * NODE.pad;
  const centre = new Map();
  const positions = new Map();
  layers.forEach((layer, row) => {
    const pull = ({step, index}) => {
      const above = (step.deps || []).filter((dep) => centre.has(dep)).map((dep) => centre.get(dep));
      return above.length ? above.reduce((sum, x) => sum + x, 0) / above.length : index * slot;
    };
    const ordered = layer.map((entry) => ({...entry, pull: pull(entry)}))
      .sort((a, b) => a.pull - b.pull || a.index - b.index);
    const left = (width - (ordered.length * slot - NODE.gapX)) / 2;
    ordered.forEach(({step}, column) => {
      const x = left + column * slot;
      positions.set(step.id, {x, y: NODE.pad + row * (NODE.height + NODE.gapY)});
      centre.set(step.id, x + NODE.width / 2);
    });
  });
  return {positions, width, height: layers.length * (NODE.height + NODE.gapY) - NODE.gapY + 2 * NODE.pad};
}

// What an edge is: a switch's branch (taken, excluded, or not decided yet) or a plain dependency;
// an edge touching an excluded step is drawn excluded too.
export function edgeKind(from, to) {
  const taken = from.kind === "switch" && from.state === "completed" && from.result && Array.isArray(from.result.branch)
    ? from.result.branch : null;
  if (from.kind === "switch" && (from.branches || []).includes(to.id)) {
    if (taken === null) return "branch";
    return taken.includes(to.id) ? "branch taken" : "branch excluded";
  }
  return from.state === "excluded" || to.state === "excluded" ? "excluded" : "";
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

function edgesNode(steps, placed) {
  const byId = new Map(steps.map((step) => [step.id, step]));
  const arrow = svg("marker", {id: "flow-arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "9",
                               markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto-start-reverse"},
                   svg("path", {d: "M 0 0 L 10 5 L 0 10 z"}));
  const paths = steps.flatMap((to) => (to.deps || []).filter((dep) => byId.has(dep)).map((dep) => {
    const a = placed.positions.get(dep);
    const b = placed.positions.get(to.id);
    const [sx, sy, tx, ty] = [a.x + NODE.width / 2, a.y + NODE.height, b.x + NODE.width / 2, b.y];
    const bend = Math.max(24, (ty - sy) / 2);
    return svg("path", {class: `flow-edge ${edgeKind(byId.get(dep), to)}`.trim(), "data-from": dep, "data-to": to.id,
                        d: `M ${sx} ${sy} C ${sx} ${sy + bend}, ${tx} ${ty - bend}, ${tx} ${ty}`,
                        "marker-end": "url(#flow-arrow)"});
  }));
  return svg("svg", {class: "flow-edges", width: String(placed.width), height: String(placed.height),
                     "aria-hidden": "true"}, svg("defs", {}, arrow), ...paths);
}

// ------------------------------------------------------------------ a flow run's page

// How long the step's attempt ran (or has run so far); none for a step that never ran (a switch is
// resolved in the plan, an excluded or skipped step was settled without an attempt).
const elapsedOf = (step, now) => {
  if (step.kind === "switch" || !(step.attempt > 0)) return null;
  return step.duration_ms ?? (step.state === "running" && step.started_at ? now - new Date(step.started_at).getTime() : null);
};

function nodeFor(step, spot, now, selected) {
  const elapsed = elapsedOf(step, now);
  const spent = step.kind === "agent" || step.tokens > 0;
  return el("button", {type: "button", class: `flow-node ${step.state}`, "data-step": step.id, "data-state": step.state,
                       "aria-pressed": String(selected), title: `${step.id}: ${words(step.state)}`,
                       style: `left: ${spot.x}px; top: ${spot.y}px; width: ${NODE.width}px; height: ${NODE.height}px`},
    el("span", {class: "node-head"}, el("strong", {class: "node-id"}, step.id), el("span", {class: "node-kind"}, step.kind)),
    el("span", {class: "node-state", "data-field": "state"}, words(step.state),
       step.attempt > 1 ? el("span", {"data-field": "attempt"}, ` · attempt ${step.attempt}`) : ""),
    el("span", {class: "node-figures"},
       el("span", {"data-field": "duration"}, elapsed === null ? "" : duration(elapsed)),
       spent ? el("span", {"data-field": "tokens"}, `${number(step.tokens)} tok`) : "",
       spent ? el("span", {"data-field": "cost"}, dollars(step.cost)) : ""));
}

function graphNode(report, selected, onPick) {
  const placed = layout(report.steps);
  const now = Date.now();
  const nodes = report.steps.map((step) => {
    const node = nodeFor(step, placed.positions.get(step.id), now, step.id === selected);
    node.addEventListener("click", () => onPick(step.id));
    return node;
  });
  return el("div", {class: "flow-graph", role: "group", "aria-label": "Steps",
                    style: `width: ${placed.width}px; height: ${placed.height}px`}, edgesNode(report.steps, placed), nodes);
}

function childLink(step, report) {
  if (!step.child_run_id) return "";
  if (step.kind === "flow") return el("a", {href: `#/flow-runs/${step.child_run_id}`}, "Open its flow run");
  return el("a", {href: `#/sessions/${report.run.session_id}/trace`, "data-child": step.child_run_id},
            "Trace of its agent run (in the run's session)");
}

function switchNote(step) {
  if (step.kind !== "switch" || !step.result || !Array.isArray(step.result.branch)) return "";
  const excluded = (step.branches || []).filter((id) => !step.result.branch.includes(id));
  return el("p", {class: "status"}, `Took ${step.result.branch.join(", ") || "no branch"}`,
            step.result.case === null ? " (the default)" : ` (case ${step.result.case + 1})`,
            excluded.length ? `; excluded ${excluded.join(", ")}` : "");
}

function historyList(step) {
  if (!(step.history || []).length) return "";
  return el("section", {"aria-label": "Attempts"}, el("h3", {}, "Attempts"),
    el("ol", {class: "attempts"}, step.history.map((entry) => {
      const spent = entry.started_at && entry.finished_at ? new Date(entry.finished_at) - new Date(entry.started_at) : null;
      return el("li", {}, `attempt ${entry.attempt}: ${words(entry.state)} · ${duration(spent)} · ${number(entry.tokens)} tokens · `
                + dollars(entry.cost), entry.error ? el("span", {class: "failed"}, ` — ${entry.error.message || entry.error.code}`) : "");
    })));
}

function stepDetail(step, report) {
  const stamp = (value) => (value ? new Date(value).toLocaleTimeString() : "–");
  const facts = [["kind", step.kind], ["state", words(step.state)], ["attempt", step.attempt || "–"],
    ["waits for", (step.deps || []).join(", ") || "nothing"], ["line", step.line], ["batch", step.batch],
    ["started", stamp(step.started_at)], ["finished", stamp(step.finished_at)],
    ["duration", duration(elapsedOf(step, Date.now()))], ["tokens", number(step.tokens)], ["cost", dollars(step.cost)],
    ["model", step.model], ["reason", step.reason]].filter(([, value]) => value !== undefined && value !== null && value !== "");
  return el("section", {class: "flow-step", "aria-label": `Step ${step.id}`, "data-detail": step.id},
    el("h2", {}, `Step ${step.id}`),
    el("dl", {class: "figures"}, facts.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {"data-field": name}, String(value))])),
    switchNote(step), childLink(step, report),
    step.error ? el("p", {class: "failed", role: "alert"}, `${step.error.code || "error"}: ${step.error.message || ""}`) : "",
    step.result !== null && step.result !== undefined
      ? el("details", {class: "result", open: true}, el("summary", {}, "result"), el("pre", {}, json(step.result))) : "",
    historyList(step));
}

// A flow run waiting for its steps' agents is queued between two ticks; to a person it is running.
export function shownStatus(report) {
  const status = report.run.status;
  if (status === "queued" && (report.run.started_at || report.steps.some((step) => step.state === "running"))) return "running";
  return status;
}

// The run's state and, once it has ended, how: which steps failed and which they blocked.
function outcomeNode(report) {
  const status = shownStatus(report);
  const counts = Object.entries(report.counts).map(([state, count]) => `${count} ${words(state)}`).join(", ");
  const failed = report.failures.map((failure) => `${failure.step} (${words(failure.state)}` +
    `${failure.error && failure.error.message ? `: ${failure.error.message}` : ""})`);
  return el("div", {class: "flow-outcome", id: "flow-state", role: "status"},
    el("span", {class: `badge large ${status}`, "data-status": status}, words(status)),
    ` ${counts} · ${number(report.totals.tokens)} tokens · ${dollars(report.totals.cost)}`,
    failed.length ? el("p", {class: "failed", "data-field": "failures"}, `Failed steps: ${failed.join("; ")}`) : "",
    report.blocked.length ? el("p", {class: "failed", "data-field": "blocked"}, `Blocked by them: ${report.blocked.join(", ")}`) : "",
    status === "failed" && report.error && !failed.length ? el("p", {class: "failed", role: "alert"}, report.error.message) : "");
}

function outputNode(report) {
  if (report.value === null || report.value === undefined) return "";
  return el("section", {class: "flow-output", "aria-label": "Output"}, el("h2", {}, "Output"),
    typeof report.value === "string" ? markdownNode(report.value) : el("pre", {}, json(report.value)));
}

// Cancel while the run goes on; on an ended run, rerun it from a chosen step (the picked node by default).
function controlsFor(runId, refresh, onRerun) {
  const cancel = el("button", {type: "button", class: "secondary"}, "Cancel");
  const from = el("select", {"aria-label": "Rerun from step"});
  const rerun = el("button", {type: "button"}, "Rerun from step");
  const rerunBox = el("span", {class: "row rerun"}, from, rerun);
  cancel.addEventListener("click", () => api("POST", `/api/flow-runs/${runId}/cancel`).then(refresh)
    .catch((error) => toast(error.message)));
  rerun.addEventListener("click", () => api("POST", `/api/flow-runs/${runId}/rerun`, {from_step: from.value})
    .then(onRerun).catch((error) => toast(error.message)));
  const update = (report, canWrite, picked) => {
    const ended = ENDED.includes(report.run.status);
    cancel.hidden = !canWrite || ended;
    rerunBox.hidden = !canWrite || !ended;
    const ids = report.steps.map((step) => step.id);
    if (from.options.length !== ids.length) from.replaceChildren(...ids.map((id) => el("option", {value: id}, id)));
    if (picked && ids.includes(picked)) from.value = picked;
  };
  return {node: el("div", {class: "controls"}, cancel, rerunBox), update};
}

export async function showFlowRun(view, runId, setCrumbs) {
  let report = await api("GET", `/api/flow-runs/${runId}`);
  const {project} = await api("GET", `/api/projects/${report.run.project_id}`);
  const canWrite = project.role !== "viewer";
  const name = report.flow.name || runId.slice(0, 8);
  setCrumbs(el("a", {href: "#/"}, "Projects"), el("a", {href: `#/projects/${project.id}`}, project.name),
            el("a", {href: `#/projects/${project.id}/flows`}, "Flows"), name);
  const heading = el("h1", {}, `Flow ${name}`);
  const outcome = el("div");
  const graph = el("div", {class: "flow-canvas"});
  const detail = el("div");
  const output = el("div");
  let picked = null;
  let following = false;
  let timer = null;
  const draw = () => {
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("[data-step]");
    outcome.replaceChildren(outcomeNode(report));
    graph.replaceChildren(graphNode(report, picked, (id) => { picked = picked === id ? null : id; draw(); }));
    const step = report.steps.find((entry) => entry.id === picked);
    detail.replaceChildren(step ? stepDetail(step, report) : el("p", {class: "status"}, "Pick a step to see its result, error and attempts."));
    output.replaceChildren(outputNode(report));
    controls.update(report, canWrite, picked);
    if (focused) graph.querySelector(`[data-step="${CSS.escape(focused.dataset.step)}"]`)?.focus();
  };
  const refresh = async () => {
    if (!heading.isConnected) return;  // the page was left: its socket is not ours to close any more
    report = await api("GET", `/api/flow-runs/${runId}`);
    draw();
    if (following && ENDED.includes(report.run.status)) { closeSocket(); following = false; }
  };
  const watch = async () => {
    if (following || !heading.isConnected) return;
    following = true;
    const {session: chat} = await api("GET", `/api/sessions/${report.run.session_id}`);
    follow(chat.id, chat.last_seq, new Set([(event) => {
      // the run's own events and its steps' (flow.step.*); its agents' token deltas are not needed here
      if (event.run_id !== runId && !event.type.startsWith("flow.")) return;
      clearTimeout(timer);
      timer = setTimeout(() => refresh().catch((error) => toast(error.message)), 200);
    }]));
    await refresh();  // whatever happened before the socket opened
  };
  const controls = controlsFor(runId, refresh, () => { following = false; return watch(); });
  view.replaceChildren(heading, report.flow.description ? el("p", {class: "status"}, report.flow.description) : "",
    outcome, controls.node, graph, detail, output,
    el("details", {class: "result"}, el("summary", {}, "input"), el("pre", {}, json(report.input ?? null))));
  draw();
  if (!ENDED.includes(report.run.status)) await watch();
  const ticker = setInterval(() => {  // running steps' clocks go on between events
    if (!heading.isConnected) { clearInterval(ticker); return; }
    const now = Date.now();
    for (const step of report.steps.filter((entry) => entry.state === "running")) {
      const shown = graph.querySelector(`[data-step="${CSS.escape(step.id)}"] [data-field="duration"]`);
      if (shown) shown.textContent = duration(elapsedOf(step, now));
    }
  }, 1000);
}
