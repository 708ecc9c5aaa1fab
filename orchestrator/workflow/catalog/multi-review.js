export const meta = {
  name: "multi-review",
  description: "Several reviewers with different lenses (correctness, security, performance, tests) review the same target in parallel; a judge merges and ranks their findings.",
  whenToUse: "An important change deserves more than one pair of eyes, and you want the overlap between reviewers to raise confidence.",
  phases: ["review", "judge"],
  args: { type: "object", properties: { target: { type: "string" }, lenses: { type: "array", items: { type: "string" } } } },
  example: { target: "src/app.py", lenses: ["correctness", "security"] },
};

// args: {target: string, lenses?: string[]}
// An agent that fails (null) or gives unusable output is named in `failed`; without the judge the
// reviews come back unmerged (`reviews`), and `recommendation` is null.
const target = (args && args.target) || "the most recent changes in the project";
const lenses = (args && args.lenses) || ["correctness", "security", "performance", "tests and maintainability"];
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

phase("review");
const reviews = await parallel(lenses.map((lens) => () => ask(
  `Review ${target} strictly through the lens of ${lens}. List concrete findings with file:line and why each matters.`,
  { label: lens, agentType: "reviewer" })));

phase("judge");
const usable = reviews.map((text, index) => ({ lens: lenses[index], text })).filter((review) => review.text !== null);
const missing = lenses.filter((_, index) => reviews[index] === null);
if (!usable.length) {
  return { target, lenses: [], missingLenses: missing, failed, recommendation: null, findings: [],
    summary: "Every reviewer failed, so there was nothing to judge." };
}
const verdict = await ask(
  `You are the judge. Merge these reviews of ${target}: drop duplicates and anything unsupported, rank what remains by ` +
  `impact, and give a recommendation.` + (missing.length ? ` (No review came back for: ${missing.join(", ")}; say so.)` : "") +
  `\n\n` + usable.map((review) => `### ${review.lens}\n${review.text}`).join("\n\n"),
  { label: "judge", schema: { type: "object", required: ["recommendation", "findings"], properties: {
    recommendation: { enum: ["approve", "approve with changes", "request changes"] },
    findings: { type: "array", items: { type: "object", required: ["title"], properties: {
      title: { type: "string" }, where: { type: "string" }, lenses: { type: "array", items: { type: "string" } } } } } } } });
if (verdict === null) {
  return { target, lenses: usable.map((review) => review.lens), missingLenses: missing, failed, recommendation: null,
    findings: [], reviews: usable, summary: "The judge failed; the reviews are returned unmerged." };
}
return { target, lenses: usable.map((review) => review.lens), missingLenses: missing, failed, ...verdict };
