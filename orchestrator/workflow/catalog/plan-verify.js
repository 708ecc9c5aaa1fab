export const meta = {
  name: "plan-verify",
  description: "Draft an implementation plan, have an independent reviewer check it against the code, and revise until it holds (at most a few rounds).",
  whenToUse: "Before a change that touches several modules: you want a plan that has survived a sceptical read.",
  phases: ["plan", "verify"],
  args: { type: "object", properties: { task: { type: "string" }, rounds: { type: "integer", description: "1-4, default 2" } } },
  example: { task: "add input validation to the signup form" },
};

// args: {task: string, rounds?: number (1-4, default 2)}
// An agent that fails (null) or gives unusable output is named in `failed`; `approved` is true only if a
// reviewer approved the returned plan, and `openProblems` says why not.
const task = typeof args === "string" ? args : args && args.task;
if (!task) throw new Error('plan-verify needs args {task: "..."}');
const rounds = Math.min(Math.max(Number((args && args.rounds) || 2), 1), 4);
const planSchema = { type: "object", required: ["steps"], properties: { steps: { type: "array", minItems: 1,
  items: { type: "object", required: ["do"], properties: { do: { type: "string" }, files: { type: "array", items: { type: "string" } } } } },
  risks: { type: "array", items: { type: "string" } } } };
const reviewSchema = { type: "object", required: ["approved", "problems"], properties: {
  approved: { type: "boolean" }, problems: { type: "array", items: { type: "string" } } } };
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

phase("plan");
let plan = await ask(`Plan this task step by step, naming the files each step touches:\n${task}`,
  { label: "plan 1", agentType: "Plan", schema: planSchema });
if (plan === null) return { task, plan: null, approved: false, openProblems: ["the planner failed: no plan"], failed };
let review = null;
let openProblems = ["the plan was not checked"];
for (let round = 1; round <= rounds; round++) {
  phase("verify");
  review = await ask(`Check this plan against the actual code. Does each step make sense, are files right, is anything ` +
    `missing? Approve only if it would work.\nTask: ${task}\nPlan: ${JSON.stringify(plan)}`,
    { label: `verify ${round}`, agentType: "reviewer", schema: reviewSchema });
  if (review === null) { openProblems = [`reviewer ${round} failed: this plan was not checked`]; break; }
  openProblems = review.approved ? [] : review.problems;
  if (review.approved || round === rounds) break;
  phase("plan");
  const revised = await ask(`Revise the plan to fix these problems:\n- ${review.problems.join("\n- ")}\nTask: ${task}\n` +
    `Previous plan: ${JSON.stringify(plan)}`, { label: `plan ${round + 1}`, agentType: "Plan", schema: planSchema });
  if (revised === null) { openProblems = [`the revision failed; these problems remain:`, ...review.problems]; break; }
  plan = revised;
  review = null;
  openProblems = ["the revised plan was not checked"];
}
return { task, plan, approved: review !== null && review.approved === true && openProblems.length === 0, openProblems, failed };
