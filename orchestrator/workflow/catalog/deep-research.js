export const meta = {
  name: "deep-research",
  description: "Answer a question about the code base by splitting it into sub-questions, researching each in parallel, and writing one cited report.",
  whenToUse: "A question that needs reading many files: how a feature works end to end, where a behaviour comes from, what would break if X changed.",
  phases: ["plan", "research", "report"],
  args: { type: "object", properties: { question: { type: "string" }, angles: { type: "integer", description: "2-8, default 4" } } },
  example: { question: "How are runs recovered after a crash?" },
};

// args: {question: string, angles?: number (2-8, default 4)}
// An agent that fails (null) or gives unusable output is named in `failed`; the report says what is missing.
const question = typeof args === "string" ? args : args && args.question;
if (!question) throw new Error('deep-research needs args {question: "..."}');
const angles = Math.min(Math.max(Number((args && args.angles) || 4), 2), 8);
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
const plan = await ask(
  `Split this question about the project into at most ${angles} independent sub-questions that together answer it. ` +
  `Look around the code base first so the sub-questions name real modules.\n\nQuestion: ${question}`,
  { label: "planner", agentType: "Explore", schema: {
      type: "object", required: ["questions"],
      properties: { questions: { type: "array", minItems: 1, maxItems: angles, items: { type: "string" } } } } });
// Without a plan, research the question as a whole rather than not at all.
const subQuestions = plan === null ? [question] : plan.questions;
log(`researching ${subQuestions.length} sub-question(s)`);

phase("research");
const findings = await parallel(subQuestions.map((sub, index) => () => ask(
  `Research this sub-question in the code base and answer with facts, each with the file path and line it comes from.\n\n` +
  `Sub-question: ${sub}\n(Part of the larger question: ${question})`,
  { label: `research ${index + 1}`, agentType: "Explore" })));
const unanswered = subQuestions.filter((_, index) => findings[index] === null);
const notes = findings.map((text, index) => `## ${subQuestions[index]}\n${text === null ? "(this research failed)" : text}`);
if (unanswered.length === subQuestions.length) {
  return { question, subQuestions, unanswered, failed, report: null,
    summary: "Every research agent failed, so there is nothing to report." };
}

phase("report");
const report = await ask(
  `Write a report answering the question below from the research notes. Keep the citations (file:line); say plainly ` +
  `where the notes disagree or leave gaps.\n\nQuestion: ${question}\n\n${notes.join("\n\n")}`,
  { label: "report" });
// Without the writer, the notes themselves are the answer (they carry the citations).
return { question, subQuestions, unanswered, failed,
  report: report !== null ? report : `(the report agent failed; the research notes follow)\n\n${notes.join("\n\n")}` };
