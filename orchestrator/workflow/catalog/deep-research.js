export const meta = {
  name: "deep-research",
  description: "Answer a question about the code base by splitting it into sub-questions, researching each in parallel, and writing one cited report.",
  whenToUse: "A question that needs reading many files: how a feature works end to end, where a behaviour comes from, what would break if X changed.",
  phases: ["plan", "research", "report"],
};

// args: {question: string, angles?: number (2-8, default 4)}
const question = typeof args === "string" ? args : args && args.question;
if (!question) throw new Error('deep-research needs args {question: "..."}');
const angles = Math.min(Math.max(Number((args && args.angles) || 4), 2), 8);

phase("plan");
const plan = await agent(
  `Split this question about the project into at most ${angles} independent sub-questions that together answer it. ` +
  `Look around the code base first so the sub-questions name real modules.\n\nQuestion: ${question}`,
  { label: "planner", agentType: "Explore", schema: {
      type: "object", required: ["questions"],
      properties: { questions: { type: "array", minItems: 1, maxItems: angles, items: { type: "string" } } } } });
log(`researching ${plan.questions.length} sub-questions`);

phase("research");
const findings = await parallel(plan.questions.map((sub, index) => () => agent(
  `Research this sub-question in the code base and answer with facts, each with the file path and line it comes from.\n\n` +
  `Sub-question: ${sub}\n(Part of the larger question: ${question})`,
  { label: `research ${index + 1}`, agentType: "Explore" })));

phase("report");
const notes = findings.map((text, index) => `## ${plan.questions[index]}\n${text === null ? "(this research failed)" : text}`);
const report = await agent(
  `Write a report answering the question below from the research notes. Keep the citations (file:line); say plainly ` +
  `where the notes disagree or leave gaps.\n\nQuestion: ${question}\n\n${notes.join("\n\n")}`,
  { label: "report" });
return { question, subQuestions: plan.questions, report };
