export const meta = {
  name: "bounty-hunt",
  description: "Several hunters search different parts of the project for bugs in parallel; every claim is checked by an independent skeptic, and confirmed bugs are ranked by severity.",
  whenToUse: "A broad bug sweep where false positives are expensive: you only want claims that survive an adversarial check.",
  phases: ["hunt", "judge", "rank"],
  args: { type: "object", properties: { goal: { type: "string" }, hunters: { type: "integer", description: "1-8, default 4" } } },
  example: { goal: "crashes and data loss", hunters: 4 },
};

// args: {goal?: string, hunters?: number (1-8, default 4)}
// An agent that fails (null) or gives unusable output is named in `failed`; a claim whose judge failed is
// in `unjudged` (not confirmed, not refuted).
const goal = (args && args.goal) || "bugs that would hurt users: crashes, data loss, security holes, wrong results";
const hunters = Math.min(Math.max(Number((args && args.hunters) || 4), 1), 8);
const claimSchema = { type: "object", required: ["bugs"], properties: { bugs: { type: "array", items: {
  type: "object", required: ["title", "file", "evidence", "severity"], properties: {
    title: { type: "string" }, file: { type: "string" }, line: { type: "integer" }, evidence: { type: "string" },
    severity: { enum: ["critical", "high", "medium", "low"] } } } } } };
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

phase("hunt");
const hunts = await parallel(Array.from({ length: hunters }, (_, index) => () => ask(
  `You are bug hunter ${index + 1} of ${hunters}. Take the ${index + 1}th share of the project's top-level source ` +
  `directories (split them evenly in name order) and look for ${goal}. Claim only bugs you can show evidence for.`,
  { label: `hunter ${index + 1}`, agentType: "Explore", schema: claimSchema })));
const claims = [];
hunts.forEach((hunt, index) => { for (const bug of (hunt && hunt.bugs) || []) claims.push({ hunter: index + 1, ...bug }); });
const silentHunters = hunts.map((hunt, index) => index + 1).filter((hunter) => hunts[hunter - 1] === null);
log(`${claims.length} claim(s) to judge` + (silentHunters.length ? `; hunter(s) ${silentHunters.join(", ")} failed` : ""));

phase("judge");
const verdicts = await parallel(claims.map((claim) => () => ask(
  `You are a skeptic paid only for refuting false bug claims. Read the code and decide whether this claim is real.\n` +
  JSON.stringify(claim), { label: `judge: ${claim.title}`, agentType: "reviewer", schema: { type: "object",
    required: ["real", "reason"], properties: { real: { type: "boolean" }, reason: { type: "string" } } } })));

phase("rank");
const order = { critical: 0, high: 1, medium: 2, low: 3 };
const judged = claims.map((claim, index) => ({ ...claim, verdict: verdicts[index] }));
const confirmed = judged.filter((claim) => claim.verdict && claim.verdict.real)
  .sort((a, b) => order[a.severity] - order[b.severity] || a.file.localeCompare(b.file));
const unjudged = judged.filter((claim) => claim.verdict === null);
return { goal, claims: claims.length, confirmed, unjudged, failedHunters: silentHunters, failed };
