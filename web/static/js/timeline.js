// The session timeline: one entry per turn of the chat's own runs (model, tokens, duration, tool calls),
// kept current from span events; a running turn's duration ticks every half second. Runs and turns
// are numbered as in the trace and cache views ("run 2 · turn 1"). Choosing a turn scrolls the chat to it.
// It opens with the turns of the newest RECENT_RUNS chat runs (spans read from the first span of the
// oldest of them on), so a session of thousands of turns opens as fast as a short one; "Earlier
// turns" reads the rest.

import {api, duration, el, number, runNumbers, turnNumber} from "./api.js";

const RECENT_RUNS = 50;
const KINDS = ["turn", "model_call", "tool_call"];

// The position just before the first span of the RECENT_RUNS-th newest chat run (0: read from the start).
async function recentStart(chatRunsNewestFirst) {
  if (chatRunsNewestFirst.length <= RECENT_RUNS) return 0;
  const oldest = chatRunsNewestFirst[RECENT_RUNS - 1];
  const {spans: [first]} = await api("GET", `/api/runs/${oldest.id}/spans?limit=1`);
  return first ? first.position - 1 : 0;
}

// A session's spans of one kind with positions in (after, until]: keyset pages, stopping past `until`.
async function spansBetween(sessionId, kind, after, until = null) {
  const found = [];
  for (let cursor = after; cursor !== null;) {
    const page = await api("GET", `/api/sessions/${sessionId}/spans?kind=${kind}&limit=200&cursor=${cursor}`);
    const within = until === null ? page.spans : page.spans.filter((span) => span.position <= until);
    found.push(...within);
    cursor = within.length < page.spans.length ? null : page.next_cursor;
  }
  return found;
}

export async function createTimeline({sessionId, onPick}) {
  const turns = new Map();   // "run/turn" → {run, turn, started, ended, status, model, tokens, tools:Set}
  const chatRuns = new Set();
  const numbers = runNumbers(sessionId);
  const runs = await numbers.load();
  runs.filter((run) => run.kind === "agent" && !run.parent_id).forEach((run) => chatRuns.add(run.id));
  const items = el("ol", {class: "timeline-list"});
  const earlier = el("button", {type: "button", class: "secondary small", hidden: true}, "Earlier turns");
  const node = el("nav", {class: "timeline", "aria-label": "Session timeline"}, el("h2", {}, "Timeline"), earlier, items);

  const entry = (span) => {
    const key = `${span.run_id}/${span.turn}`;
    if (!turns.has(key)) turns.set(key, {run: span.run_id, turn: span.turn, position: span.position, tools: new Set(), tokens: 0});
    return turns.get(key);
  };
  const take = (span) => {
    if (!chatRuns.has(span.run_id) || span.turn === null) return false;
    const turn = entry(span);
    if (span.kind === "turn") Object.assign(turn, {started: span.started_at, ended: span.ended_at, status: span.status, duration: span.duration_ms, position: span.position});
    else if (span.kind === "model_call") {
      turn.model = (span.attributes && span.attributes.model) || span.name;
      const usage = (span.attributes && span.attributes.usage) || {};
      turn.tokens = (usage.input_total || 0) + (usage.output || 0);
    } else if (span.kind === "tool_call") turn.tools.add(span.id);
    return true;
  };
  const render = () => {
    const list = [...turns.values()].sort((a, b) => a.position - b.position);
    const seenInRun = new Map();
    items.replaceChildren(...(list.length ? list.map((turn) => {
      const rank = seenInRun.get(turn.run) || 0;  // the how-manieth turn of its run, counting from 0
      seenInRun.set(turn.run, rank + 1);
      const running = !turn.ended;
      const pick = el("button", {type: "button", class: `turn ${running ? "running" : turn.status}`, "data-run": turn.run,
                                 "data-turn": String(turn.turn)},
        el("strong", {}, `Run ${numbers.of(turn.run) ?? "?"} · turn ${turnNumber(turn.turn)}`),
        el("span", {class: "status"}, `${turn.model || "…"} · `,
           el("span", {"data-field": "tokens"}, running && !turn.tokens ? "… tokens" : `${number(turn.tokens)} tokens`), " · ",
           el("span", {"data-field": "duration"}, duration(length(turn))), " · ",
           `${turn.tools.size} tool call${turn.tools.size === 1 ? "" : "s"}`));
      pick.addEventListener("click", () => onPick(turn.run, rank));
      return el("li", {"data-key": `${turn.run}/${turn.turn}`}, pick);
    }) : [el("li", {class: "status"}, "No turns yet.")]));
  };
  const length = (turn) => turn.ended ? turn.duration : turn.started ? Date.now() - new Date(turn.started).getTime() : null;
  // A running turn's duration grows in place (the button, its focus and the list's scroll stay).
  let placed = false;
  const ticker = setInterval(() => {
    if (node.isConnected) placed = true;
    else { if (placed) clearInterval(ticker); return; }  // gone with the page it was on
    for (const turn of turns.values()) {
      if (turn.ended || !turn.started) continue;
      const shown = items.querySelector(`[data-key="${turn.run}/${turn.turn}"] [data-field="duration"]`);
      if (shown) shown.textContent = duration(length(turn));
    }
  }, 500);
  const start = await recentStart(runs.filter((run) => run.kind === "agent" && !run.parent_id));
  for (const kind of KINDS) {
    for (const span of await spansBetween(sessionId, kind, start)) take(span);
  }
  render();
  earlier.hidden = start === 0;
  earlier.addEventListener("click", async () => {
    earlier.disabled = true;
    for (const kind of KINDS) (await spansBetween(sessionId, kind, 0, start)).forEach(take);
    earlier.hidden = true;
    render();
  });
  let timer = null;
  const handle = (event) => {
    if (event.type === "run.queued" && event.data.kind === "agent" && !event.data.parent_id) {
      chatRuns.add(event.run_id);
      if (numbers.of(event.run_id) === null) numbers.load().then(render);
    }
    if ((event.type === "span.started" || event.type === "span.finished") && take(event.data)) {
      clearTimeout(timer);
      timer = setTimeout(render, 150);
    }
  };
  return {node, handle};
}
