export const meta = {
  name: "find-issues",
  description: "Hunt for bugs area by area, then have each candidate checked by an independent verifier; only confirmed issues are reported.",
  whenToUse: "You suspect a module has bugs and want a short list of real, verified issues rather than a long list of maybes.",
  phases: ["map", "hunt", "verify"],
};

// args: {area?: string, kinds?: string}
const area = (args && args.area) || "the project";
const kinds = (args && args.kinds) || "crashes, wrong results, resource leaks, races and unchecked input";
const candidateSchema = { type: "object", required: ["candidates"], properties: { candidates: { type: "array",
  items: { type: "object", required: ["file", "title", "evidence"], properties: {
    file: { type: "string" }, line: { type: "integer" }, title: { type: "string" }, evidence: { type: "string" } } } } } };

phase("map");
const map = await agent(`Split ${area} into at most 6 parts that can be searched for bugs independently (directories or modules).`,
  { label: "map", agentType: "Explore", schema: { type: "object", required: ["parts"],
    properties: { parts: { type: "array", minItems: 1, maxItems: 6, items: { type: "string" } } } } });

// Each part moves on to verification as soon as its own hunt is done (no barrier between stages).
const results = await pipeline(map.parts,
  (part) => agent(`Find likely bugs (${kinds}) in ${part}. Give the evidence for each.`,
    { label: `hunt ${part}`, phase: "hunt", agentType: "Explore", schema: candidateSchema }),
  (found, part) => parallel(found.candidates.map((candidate) => () => agent(
    `Verify or refute this suspected bug by reading the code. Be sceptical.\n${JSON.stringify(candidate)}`,
    { label: `verify ${candidate.title}`, phase: "verify", agentType: "reviewer", schema: { type: "object",
      required: ["confirmed", "reason"], properties: { confirmed: { type: "boolean" }, reason: { type: "string" } } } })))
    .then((verdicts) => found.candidates.map((candidate, index) => ({ ...candidate, part, verdict: verdicts[index] }))));

const confirmed = [];
for (const list of results) {
  for (const item of list || []) if (item.verdict && item.verdict.confirmed) confirmed.push(item);
}
log(`${confirmed.length} confirmed issue(s)`);
return { area, confirmed };
