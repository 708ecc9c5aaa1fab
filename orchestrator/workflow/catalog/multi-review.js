export const meta = {
  name: "multi-review",
  description: "Several reviewers with different lenses (correctness, security, performance, tests) review the same target in parallel; a judge merges and ranks their findings.",
  whenToUse: "An important change deserves more than one pair of eyes, and you want the overlap between reviewers to raise confidence.",
  phases: ["review", "judge"],
};

// args: {target: string, lenses?: string[]}
const target = (args && args.target) || "the most recent changes in the project";
const lenses = (args && args.lenses) || ["correctness", "security", "performance", "tests and maintainability"];

phase("review");
const reviews = await parallel(lenses.map((lens) => () => agent(
  `Review ${target} strictly through the lens of ${lens}. List concrete findings with file:line and why each matters.`,
  { label: lens, agentType: "reviewer" })));

phase("judge");
const usable = reviews.map((text, index) => ({ lens: lenses[index], text })).filter((review) => review.text !== null);
if (!usable.length) throw new Error("every reviewer failed; nothing to judge");
const verdict = await agent(
  `You are the judge. Merge these reviews of ${target}: drop duplicates and anything unsupported, rank what remains by ` +
  `impact, and give a recommendation.\n\n` + usable.map((review) => `### ${review.lens}\n${review.text}`).join("\n\n"),
  { label: "judge", schema: { type: "object", required: ["recommendation", "findings"], properties: {
    recommendation: { enum: ["approve", "approve with changes", "request changes"] },
    findings: { type: "array", items: { type: "object", required: ["title"], properties: {
      title: { type: "string" }, where: { type: "string" }, lenses: { type: "array", items: { type: "string" } } } } } } } });
return { target, lenses: usable.map((review) => review.lens), ...verdict };
