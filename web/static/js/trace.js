// The trace viewer (run > turn > model call / tool call, with a waterfall, live ticking, tokens, cost,
// filters and keyset pages) and the cache view (per model call: cache read / write / uncached tokens,
// hit rate, why the cache missed). Both read only the public spans and trace-summary endpoints.

import {allSpans, api, dollars, duration, el, hitClass, number, percent, runNumbers, turnNumber} from "./api.js";

const when = (stamp) => new Date(stamp).getTime();
const spanEnd = (span) => (span.ended_at ? when(span.ended_at) : Date.now());

function payloadText(value) {
  if (!value) return "";
  if ("inline" in value) return value.inline;
  return `${value.preview}\n… (${number(value.size)} characters in all; the first 500 are shown)`;
}

// Whether the provider said nothing about its prompt cache (llama.cpp, some vLLM set-ups): then a 0
// read is no miss. The cache diagnosis says `unreported`; usage flags say it where the diagnosis is older.
const SILENT_FLAGS = ["cache_not_reported", "no_usage_reported"];
export const UNREPORTED = "not reported by this provider";
export function cacheUnreported(attributes) {
  const flags = ((attributes || {}).usage || {}).flags || [];
  return ((attributes || {}).cache || {}).status === "unreported" || flags.some((flag) => SILENT_FLAGS.includes(flag));
}

// Figures as a list of labelled fields (name → shown value); empty ones are left out.
function figures(label, entries) {
  const shown = entries.filter(([, value]) => value !== undefined && value !== null && value !== "");
  return el("dl", {class: "figures", "aria-label": label},
    shown.flatMap(([name, value, key]) => [el("dt", {}, name), el("dd", {"data-field": key || name}, value)]));
}

function usageFields(usage, attributes) {
  const silent = cacheUnreported(attributes);
  return figures("usage", [
    ["input", number(usage.input_total), "input_total"],
    ["cache read", silent ? UNREPORTED : number(usage.cache_read), "cache_read"],
    ["cache write", silent ? undefined : number(usage.cache_write), "cache_write"],
    ["uncached", silent ? undefined : number(usage.uncached), "uncached"],
    ["output", number(usage.output), "output"],
    ["reasoning", usage.reasoning ? number(usage.reasoning) : undefined, "reasoning"],
    ["notes", (usage.flags || []).length ? usage.flags.map((flag) => flag.replaceAll("_", " ")).join(", ") : undefined, "flags"]]);
}

function costFields(cost) {
  if (cost.priced === false) return el("span", {class: "status"}, "no price known for this model");
  const money = (value) => (value ? dollars(value) : undefined);
  return figures("cost", [["total", dollars(cost.total), "total"], ["input", money(cost.input), "input"],
    ["cache read", money(cost.cache_read), "cache_read"], ["cache write", money(cost.cache_write), "cache_write"],
    ["output", money(cost.output), "output"], ["saved by the cache", money(cost.saved), "saved"]]);
}

// What a span's expanded row shows: its inputs and outputs, usage and cost, cache diagnosis, error.
function spanDetails(span) {
  const a = span.attributes || {};
  const rows = [];
  const field = (name, value) => value !== undefined && value !== null && value !== "" &&
    rows.push(el("div", {class: "field", "data-name": name}, el("span", {class: "status"}, name),
      value instanceof Node ? value : el("pre", {}, typeof value === "string" ? value : JSON.stringify(value, null, 2))));
  if (span.kind === "model_call") {
    field("model", `${a.model || span.name}${a.provider ? ` (${a.provider})` : ""}${a.finish_reason ? ` · finish: ${a.finish_reason}` : ""}`);
    field("usage", a.usage && usageFields(a.usage, a));
    field("cost", a.cost && costFields(a.cost));
    field("cache", a.cache && (cacheUnreported(a) ? `${UNREPORTED}${a.cache.cause ? ` — ${a.cache.detail}` : ""}`
      : `${a.cache.status}${a.cache.detail ? ` — ${a.cache.detail}` : ""}`));
    field("latency", a.latency_ms !== undefined && `${duration(a.latency_ms)} (first token after ${duration(a.time_to_first_token_ms)})`);
    field("error", a.error);
    field("output", payloadText(a.output));
    field("tool calls", a.tool_calls && a.tool_calls.length ? a.tool_calls.join(", ") : "");
  } else if (span.kind === "tool_call") {
    field("arguments", payloadText(a.arguments));
    field("result", payloadText(a.result));
  } else if (span.kind === "run") {
    field("result", a.result);
  }
  return el("div", {class: "span-details"}, rows.length ? rows : el("span", {class: "status"}, "nothing recorded"));
}

function summaryNode(summary) {
  const cell = (label, value, name) => el("div", {class: "figure"}, el("span", {class: "status"}, label),
                                         el("strong", {"data-field": name}, value));
  return el("div", {class: "summary", "aria-label": "Trace summary"},
    cell("model calls", number(summary.model_calls), "model_calls"),
    cell("tool calls", number(summary.tool_calls), "tool_calls"),
    cell("errors", number(summary.errors), "errors"),
    cell("input tokens", number(summary.tokens.input_total), "input_total"),
    cell("cached", number(summary.tokens.cache_read), "cache_read"),
    cell("output", number(summary.tokens.output), "output"),
    cell("reasoning", number(summary.tokens.reasoning), "reasoning"),
    cell("cost", dollars(summary.cost.total), "cost"),
    cell("cache hit rate", percent(summary.cache_hit_rate), "cache_hit_rate"),
    cell("run time", duration(summary.duration_ms), "duration"));
}

export function createTrace({sessionId}) {
  const spans = new Map();       // id → span, of the pages loaded so far
  let cursor = null;             // the next page's cursor (null: everything is loaded)
  let filters = {};
  const expanded = new Set();
  const numbers = runNumbers(sessionId);
  const runPick = el("select", {name: "run", "aria-label": "Run"}, el("option", {value: ""}, "all runs"));
  const toolPick = el("input", {name: "tool", "aria-label": "Tool", placeholder: "any tool", size: "12"});
  const statusPick = el("select", {name: "status", "aria-label": "Status"},
    ["", "running", "ok", "error", "interrupted", "cancelled"].map((value) => el("option", {value}, value || "any status")));
  const turnPick = el("input", {name: "turn", type: "number", min: "1", "aria-label": "Turn (from 1)", placeholder: "any turn", size: "6"});
  const sizePick = el("select", {name: "limit", "aria-label": "Spans per page"},
    ["10", "50", "100", "200"].map((value) => el("option", {value, selected: value === "100"}, `${value} per page`)));
  const filterForm = el("form", {class: "filters", "aria-label": "Trace filters"}, runPick, toolPick, statusPick, turnPick,
                        sizePick, el("button", {type: "submit"}, "Apply"));
  const summary = el("div");
  const rows = el("div", {class: "tree", role: "tree", "aria-label": "Spans"});
  const more = el("button", {type: "button", class: "secondary", hidden: true}, "Load more");
  const node = el("section", {class: "trace", "aria-label": "Trace"}, filterForm, summary, rows, more);

  const base = () => filters.run ? `/api/runs/${filters.run}` : `/api/sessions/${sessionId}`;
  const query = () => {
    const params = new URLSearchParams({limit: filters.limit || "100"});
    for (const key of ["tool", "status"]) if (filters[key]) params.set(key, filters[key]);
    if (filters.turn) params.set("turn", String(Number(filters.turn) - 1));  // shown from 1, counted from 0
    return params;
  };
  const loadSummary = async () => {
    const {summary: figures} = await api("GET", `${base()}/trace-summary`);
    summary.replaceChildren(summaryNode(figures));
  };
  const loadPage = async () => {
    const params = query();
    params.set("cursor", String(cursor || 0));
    const page = await api("GET", `${base()}/spans?${params}`);
    for (const span of page.spans) spans.set(span.id, span);
    cursor = page.next_cursor;
    more.hidden = cursor === null;
    render();
  };
  const reload = async () => {
    spans.clear();
    cursor = null;
    await Promise.all([loadPage(), loadSummary()]);
  };

  // A row's title, with turns counted from 1 and runs numbered as in every other view.
  const spanTitle = (span) => {
    const kind = span.kind.replace("_", " ");
    if (span.kind === "turn") return `turn ${turnNumber(span.turn)}`;
    if (span.kind === "run") return `run ${numbers.of(span.run_id) ?? "?"} · ${span.name}`;
    return `${kind} · ${span.name}`;
  };

  // The tree: children under their parent (a span whose parent is not loaded, e.g. filtered out, is a root).
  const render = () => {
    const list = [...spans.values()].sort((a, b) => a.position - b.position);
    const children = new Map();
    const roots = [];
    for (const span of list) {
      if (span.parent_id && spans.has(span.parent_id)) {
        if (!children.has(span.parent_id)) children.set(span.parent_id, []);
        children.get(span.parent_id).push(span);
      } else roots.push(span);
    }
    const out = [];
    const walk = (span, depth) => {
      const a = span.attributes || {};
      const usage = a.usage || {};
      const running = !span.ended_at;
      const length = running ? Date.now() - when(span.started_at) : span.duration_ms;
      const bar = el("span", {class: `bar ${span.kind} ${span.status}`});
      const toggle = el("button", {type: "button", class: "span-name", "aria-expanded": String(expanded.has(span.id)),
                                   style: `padding-left:${0.4 + depth * 1.1}rem`}, spanTitle(span));
      const flip = () => { expanded.has(span.id) ? expanded.delete(span.id) : expanded.add(span.id); render(); };
      toggle.addEventListener("click", (event) => { event.stopPropagation(); flip(); });
      const row = el("div", {class: `span-row ${span.status}${running ? " running" : ""}${expanded.has(span.id) ? " open" : ""}`,
                             role: "treeitem", "aria-expanded": String(expanded.has(span.id)),
                             "aria-level": String(depth + 1), "data-span": span.id, "data-kind": span.kind},
        toggle,
        el("span", {class: `badge ${span.status === "ok" ? "completed" : span.status === "error" ? "failed" : span.status}`}, span.status),
        el("span", {class: "num", "data-field": "duration"}, duration(length)),
        el("span", {class: "num", "data-field": "tokens"}, span.kind === "model_call" && a.usage
          ? `${number(usage.input_total)} in · ${cacheUnreported(a) ? "cache not reported" : `${number(usage.cache_read)} cached`} · ${number(usage.output)} out` +
            (usage.reasoning ? ` · ${number(usage.reasoning)} reasoning` : "") : ""),
        el("span", {class: "num", "data-field": "cost"}, a.cost ? dollars(a.cost.total) : ""),
        el("span", {class: "waterfall"}, bar));
      row.addEventListener("click", (event) => {  // the whole row opens the span, not only its name
        if (!event.target.closest("a, button, input, select, summary") && !getSelection().toString()) flip();
      });
      out.push(row);
      if (expanded.has(span.id)) out.push(spanDetails(span));
      for (const child of children.get(span.id) || []) walk(child, depth + 1);
    };
    roots.forEach((span) => walk(span, 0));
    rows.replaceChildren(...(out.length ? out : [el("p", {class: "status"}, "No spans match.")]));
    layout();
  };

  // The waterfall: each bar placed on the loaded spans' common time axis. Running spans grow, so this
  // runs again every half second while any is running (in place: focus and open rows stay as they are).
  const layout = () => {
    const list = [...spans.values()];
    if (!list.length) return;
    const start = Math.min(...list.map((span) => when(span.started_at)));
    const total = Math.max(1, Math.max(...list.map(spanEnd)) - start);
    for (const row of rows.querySelectorAll(".span-row")) {
      const span = spans.get(row.dataset.span);
      const length = span.ended_at ? span.duration_ms : Date.now() - when(span.started_at);
      const bar = row.querySelector(".bar");
      bar.style.left = `${((when(span.started_at) - start) / total) * 100}%`;
      bar.style.width = `${Math.max(0.4, (length / total) * 100)}%`;
      if (!span.ended_at) row.querySelector('[data-field="duration"]').textContent = duration(length);
    }
  };

  filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    filters = {run: runPick.value, tool: toolPick.value.trim(), status: statusPick.value, turn: turnPick.value,
               limit: sizePick.value};
    reload();
  });
  more.addEventListener("click", loadPage);
  // Running spans tick: their bars and durations grow until the span ends.
  const ticker = setInterval(() => {
    if (!node.isConnected) { clearInterval(ticker); return; }
    if (!node.closest("[hidden]") && [...spans.values()].some((span) => !span.ended_at)) layout();
  }, 500);

  const matches = (span) => (!filters.run || span.run_id === filters.run) && (!filters.status || span.status === filters.status)
    && (!filters.turn || span.turn === Number(filters.turn) - 1) && (!filters.tool || (span.kind === "tool_call" && span.name === filters.tool));
  let summaryTimer = null;
  const handle = (event) => {
    if (event.type !== "span.started" && event.type !== "span.finished") return;
    const span = event.data;
    // a span not yet paged in arrives with its page; a new one is shown once every page is loaded
    if (spans.has(span.id) || (cursor === null && matches(span))) {
      spans.set(span.id, span);
      if (numbers.of(span.run_id) === null) numbers.load().then(render); else render();
    }
    clearTimeout(summaryTimer);
    summaryTimer = setTimeout(loadSummary, 300);
  };
  const open = async () => {
    const runs = await numbers.load();
    runPick.replaceChildren(el("option", {value: ""}, "all runs"), ...runs.map((run) =>
      el("option", {value: run.id, selected: run.id === filters.run},
         `run ${numbers.of(run.id)} · ${run.kind} · ${run.status} · ${new Date(run.created_at).toLocaleTimeString()}`)));
    await reload();
  };
  return {node, handle, open};
}

// The prompt cache, call by call.
export function createCache({sessionId}) {
  const calls = new Map();
  const numbers = runNumbers(sessionId);
  const callName = (span) => `run ${numbers.of(span.run_id) ?? "?"} · turn ${turnNumber(span.turn)} · ${span.name}`;
  const rows = el("div", {class: "cache-rows"});
  const node = el("section", {class: "cache", "aria-label": "Prompt cache"},
    el("p", {class: "status"}, "Each model call's input tokens: read from the provider's cache, written to it, and not cached. ",
       "The badge is the call's hit rate (≥60% green, 30–59% amber, under 30% red); ",
       `a provider that does not say what it read from its cache is "${UNREPORTED}", not a miss.`),
    el("div", {class: "legend"}, el("span", {class: "key read"}, "cache read"), el("span", {class: "key write"}, "cache write"),
       el("span", {class: "key uncached"}, "uncached")),
    rows);
  const render = () => {
    const list = [...calls.values()].sort((a, b) => a.position - b.position);
    const widest = Math.max(1, ...list.map((span) => (span.attributes.usage || {}).input_total || 0));
    rows.replaceChildren(...(list.length ? list.map((span) => {
      const usage = span.attributes.usage;
      if (!usage) return el("div", {class: "cache-row running", "data-span": span.id}, el("span", {class: "call-name"}, callName(span)), el("span", {class: "status"}, "in progress…"));
      const cache = span.attributes.cache || {};
      const silent = cacheUnreported(span.attributes);
      const rate = usage.input_total && !silent ? usage.cache_read / usage.input_total : null;
      const segment = (kind, tokens) => el("span", {class: `seg ${kind}`, "data-tokens": String(tokens), title: `${kind}: ${number(tokens)} tokens`,
                                                    style: `width:${(tokens / widest) * 100}%`});
      const cause = cache.status === "hit" || (silent && !cache.cause) ? "" : (cache.detail || cache.cause || "");
      return el("div", {class: `cache-row${silent ? " unreported" : ""}`, "data-span": span.id},
        el("span", {class: "call-name"}, callName(span)),
        silent ? el("span", {class: "badge hit hit-unreported", "data-field": "hit_rate", title: UNREPORTED}, "not reported")
          : el("span", {class: `badge hit ${hitClass(rate)}`, "data-field": "hit_rate"}, percent(rate)),
        el("span", {class: "stack", role: "img", "aria-label": `${usage.cache_read} read, ${usage.cache_write} written, ${usage.uncached} uncached`},
           segment("read", usage.cache_read), segment("write", usage.cache_write), segment("uncached", usage.uncached)),
        el("span", {class: "num"}, `${number(usage.input_total)} tokens`),
        el("span", {class: "cause", "data-field": "cause"}, silent ? (cause ? `${UNREPORTED}; ${cause}` : UNREPORTED)
          : cause ? `${cache.status}: ${cause}` : cache.status || ""));
    }) : [el("p", {class: "status"}, "No model calls yet.")]));
  };
  const open = async () => {
    calls.clear();
    await numbers.load();
    for (const span of await allSpans(`/api/sessions/${sessionId}/spans?kind=model_call`)) calls.set(span.id, span);
    render();
  };
  const handle = (event) => {
    if ((event.type === "span.started" || event.type === "span.finished") && event.data.kind === "model_call") {
      calls.set(event.data.id, event.data);
      if (numbers.of(event.data.run_id) === null) numbers.load().then(render); else render();
    }
  };
  return {node, open, handle};
}
