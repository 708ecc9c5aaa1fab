export const meta = {
  name: "review-code",
  description: "Review code file by file: pick the files in scope, review each in parallel with a critical reviewer, then summarise the findings by severity.",
  whenToUse: "Before merging a change or when inheriting a module: you want concrete findings with file and line, not a general impression.",
  phases: ["scope", "review", "summary"],
  args: { type: "object", properties: { target: { type: "string", description: "paths, a module or a description; default: the whole project" }, focus: { type: "string" }, maxFiles: { type: "integer" } } },
  example: { target: "src/", focus: "error handling" },
};

// args: {target?: string (paths, a module or a description; default: the whole project), focus?: string, maxFiles?: number}
// An agent that fails (null) or gives unusable output is named in `failed`, and the rest still counts.
const target = (args && args.target) || "the whole project";
const focus = (args && args.focus) || "correctness, error handling, security and missing tests";
const maxFiles = Math.min(Number((args && args.maxFiles) || 8), 32);
const finding = { type: "object", required: ["line", "severity", "issue"], properties: {
  line: { type: "integer" }, severity: { enum: ["high", "medium", "low"] }, issue: { type: "string" },
  suggestion: { type: "string" } } };
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

phase("scope");
const scope = await ask(
  `List the source files to review for: ${target}. At most ${maxFiles}, most important first; skip generated and vendored files.`,
  { label: "scope", agentType: "Explore", schema: { type: "object", required: ["files"],
    properties: { files: { type: "array", maxItems: maxFiles, items: { type: "string" } } } } });
// Without a file list, review the target as one piece rather than nothing at all.
const files = scope === null ? [target] : scope.files;
if (!files.length) return { files: [], findings: [], summary: "nothing to review", failed };

phase("review");
const reviews = await parallel(files.map((file) => () => ask(
  `Review ${file}. Focus on ${focus}. Report only real defects you can point at, with the line.`,
  { label: file, agentType: "reviewer", schema: { type: "object", required: ["findings"],
    properties: { findings: { type: "array", items: finding } } } })));
const findings = [];
const reviewed = [];
reviews.forEach((review, index) => {
  if (review === null) return;
  reviewed.push(files[index]);
  for (const item of review.findings) findings.push({ file: files[index], ...item });
});
const order = { high: 0, medium: 1, low: 2 };
findings.sort((a, b) => order[a.severity] - order[b.severity] || a.file.localeCompare(b.file) || a.line - b.line);
const notReviewed = files.filter((file) => !reviewed.includes(file));
const gaps = (scope === null ? "The scope agent failed, so the target was reviewed as a whole. " : "") +
  (notReviewed.length ? `Not reviewed (the reviewer failed): ${notReviewed.join(", ")}.` : "");
if (!reviewed.length) {
  return { files, findings, notReviewed, failed, summary: `No review succeeded, so there are no findings. ${gaps}`.trim() };
}

phase("summary");
const summary = await ask(
  `Summarise these review findings for the author in a few sentences: what matters most and what to fix first.` +
  (gaps ? ` Say plainly what was not reviewed: ${gaps}` : "") + `\n\n` + JSON.stringify(findings, null, 1),
  { label: "summary" });
const counts = ["high", "medium", "low"].map((level) => `${findings.filter((item) => item.severity === level).length} ${level}`);
return { files, findings, notReviewed, failed,
  summary: summary !== null ? summary
    : `${findings.length} finding(s) (${counts.join(", ")}) in ${reviewed.length} file(s); the summary agent failed, ` +
      `so this is only the count. ${gaps}`.trim() };
