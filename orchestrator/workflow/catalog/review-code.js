export const meta = {
  name: "review-code",
  description: "Review code file by file: pick the files in scope, review each in parallel with a critical reviewer, then summarise the findings by severity.",
  whenToUse: "Before merging a change or when inheriting a module: you want concrete findings with file and line, not a general impression.",
  phases: ["scope", "review", "summary"],
};

// args: {target?: string (paths, a module or a description; default: the whole project), focus?: string, maxFiles?: number}
const target = (args && args.target) || "the whole project";
const focus = (args && args.focus) || "correctness, error handling, security and missing tests";
const maxFiles = Math.min(Number((args && args.maxFiles) || 8), 32);
const finding = { type: "object", required: ["line", "severity", "issue"], properties: {
  line: { type: "integer" }, severity: { enum: ["high", "medium", "low"] }, issue: { type: "string" },
  suggestion: { type: "string" } } };

phase("scope");
const scope = await agent(
  `List the source files to review for: ${target}. At most ${maxFiles}, most important first; skip generated and vendored files.`,
  { label: "scope", agentType: "Explore", schema: { type: "object", required: ["files"],
    properties: { files: { type: "array", maxItems: maxFiles, items: { type: "string" } } } } });
if (!scope.files.length) return { files: [], findings: [], summary: "nothing to review" };

phase("review");
const reviews = await parallel(scope.files.map((file) => () => agent(
  `Review ${file}. Focus on ${focus}. Report only real defects you can point at, with the line.`,
  { label: file, agentType: "reviewer", schema: { type: "object", required: ["findings"],
    properties: { findings: { type: "array", items: finding } } } })));
const findings = [];
reviews.forEach((review, index) => {
  if (review === null) { log(`review of ${scope.files[index]} failed`); return; }
  for (const item of review.findings) findings.push({ file: scope.files[index], ...item });
});
const order = { high: 0, medium: 1, low: 2 };
findings.sort((a, b) => order[a.severity] - order[b.severity] || a.file.localeCompare(b.file) || a.line - b.line);

phase("summary");
const summary = await agent(
  `Summarise these review findings for the author in a few sentences: what matters most and what to fix first.\n\n` +
  JSON.stringify(findings, null, 1), { label: "summary" });
return { files: scope.files, findings, summary };
