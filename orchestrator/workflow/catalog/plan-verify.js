export const meta = {
  name: "plan-verify",
  description: "Draft an implementation plan, have an independent reviewer check it against the code, and revise until it holds (at most a few rounds).",
  whenToUse: "Before a change that touches several modules: you want a plan that has survived a sceptical read.",
  phases: ["plan", "verify"],
};

// args: {task: string, rounds?: number (1-4, default 2)}
const task = typeof args === "string" ? args : args && args.task;
if (!task) throw new Error('plan-verify needs args {task: "..."}');
const rounds = Math.min(Math.max(Number((args && args.rounds) || 2), 1), 4);
const planSchema = { type: "object", required: ["steps"], properties: { steps: { type: "array", minItems: 1,
  items: { type: "object", required: ["do"], properties: { do: { type: "string" }, files: { type: "array", items: { type: "string" } } } } },
  risks: { type: "array", items: { type: "string" } } } };
const reviewSchema = { type: "object", required: ["approved", "problems"], properties: {
  approved: { type: "boolean" }, problems: { type: "array", items: { type: "string" } } } };

phase("plan");
let plan = await agent(`Plan this task step by step, naming the files each step touches:\n${task}`,
  { label: "plan 1", agentType: "Plan", schema: planSchema });
let review = null;
for (let round = 1; round <= rounds; round++) {
  phase("verify");
  review = await agent(`Check this plan against the actual code. Does each step make sense, are files right, is anything ` +
    `missing? Approve only if it would work.\nTask: ${task}\nPlan: ${JSON.stringify(plan)}`,
    { label: `verify ${round}`, agentType: "reviewer", schema: reviewSchema });
  if (review.approved || round === rounds) break;
  phase("plan");
  plan = await agent(`Revise the plan to fix these problems:\n- ${review.problems.join("\n- ")}\nTask: ${task}\n` +
    `Previous plan: ${JSON.stringify(plan)}`, { label: `plan ${round + 1}`, agentType: "Plan", schema: planSchema });
}
return { task, plan, approved: review.approved, openProblems: review.approved ? [] : review.problems };
