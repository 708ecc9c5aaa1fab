export const meta = {
  name: "find-issues",
  description: "Hunt for bugs area by area, then have each candidate checked by an independent verifier; only confirmed issues are reported.",
  whenToUse: "You suspect a module has bugs and want a short list of real, verified issues rather than a long list of maybes.",
  phases: ["map", "hunt", "verify"],
  args: { type: "object", properties: { area: { type: "string" }, kinds: { type: "string" } } },
  example: { area: "src/", kinds: "error handling" },
};

// args: {area?: string, kinds?: string}
// An agent that fails (null) or gives unusable output is named in `failed`: a part whose hunt failed is in
// `unsearched`, a candidate whose verifier failed is in `unverified` (reported, but not as confirmed).
const area = (args && args.area) || "the project";
const kinds = (args && args.kinds) || "crashes, wrong results, resource leaks, races and unchecked input";
const candidateSchema = { type: "object", required: ["candidates"], properties: { candidates: { type: "array",
  items: { type: "object", required: ["file", "title", "evidence"], properties: {
    file: { type: "string" }, line: { type: "integer" }, title: { type: "string" }, evidence: { type: "string" } } } } } };
const failed = [];
const ask = (prompt, options) => agent(prompt, options).then((value) => {
  if (value === null) { failed.push(options.label); log(`agent "${options.label}" failed`); }
  return value;
}, (error) => {
  if (error && error.name === "WorkflowBudgetExceededError") throw error;
  failed.push(options.label);
  log(`agent "${options.label}" failed: ${error && error.message}`);
  return null;
});

phase("map");
const map = await ask(`Split ${area} into at most 6 parts that can be searched for bugs independently (directories or modules).`,
  { label: "map", agentType: "Explore", schema: { type: "object", required: ["parts"],
    properties: { parts: { type: "array", minItems: 1, maxItems: 6, items: { type: "string" } } } } });
// Without a map, search the area as one part rather than not at all.
const parts = map === null ? [area] : map.parts;

// Each part moves on to verification as soon as its own hunt is done (no barrier between stages).
const results = await pipeline(parts,
  (part) => ask(`Find likely bugs (${kinds}) in ${part}. Give the evidence for each.`,
    { label: `hunt ${part}`, phase: "hunt", agentType: "Explore", schema: candidateSchema }),
  (found, part) => parallel(found.candidates.map((candidate) => () => ask(
    `Verify or refute this suspected bug by reading the code. Be sceptical.\n${JSON.stringify(candidate)}`,
    { label: `verify ${candidate.title}`, phase: "verify", agentType: "reviewer", schema: { type: "object",
      required: ["confirmed", "reason"], properties: { confirmed: { type: "boolean" }, reason: { type: "string" } } } })))
    .then((verdicts) => found.candidates.map((candidate, index) => ({ ...candidate, part, verdict: verdicts[index] }))));

const confirmed = [];
const unverified = [];
const unsearched = [];
results.forEach((list, index) => {
  if (list === null) { unsearched.push(parts[index]); return; }
  for (const item of list) {
    if (item.verdict === null) unverified.push(item);
    else if (item.verdict.confirmed) confirmed.push(item);
  }
});
log(`${confirmed.length} confirmed issue(s)` + (unverified.length ? `, ${unverified.length} not verified` : "") +
  (unsearched.length ? `; not searched: ${unsearched.join(", ")}` : ""));
return { area, parts, confirmed, unverified, unsearched, failed,
  complete: failed.length === 0 };
