"""Checking flow expressions and templates without running them.

    check_expression(text)  a `when` guard or a switch case: one JavaScript expression
    check_code(text)        a `code` step: an expression or a function body (`return …;`)
    references(text)        the step ids the JavaScript names as `steps.id` or `steps["id"]`
    parse_template(text)    `{{ input.x }}` / `{{ steps.id.result.field }}` placeholders, or problems
    render_template(...)    fill a template from the input and the steps' records (pure Python)

User JavaScript only ever runs in the workflow sandbox process (DESIGN §3.5, §3.6), so this module
does not run it: it tokenises (strings, template literals, comments, regular expressions) and checks
what a tokeniser can see — balanced brackets, closed strings, no statements where an expression is
due, no literal clock or randomness. Anything subtler (`a +* b`) is a syntax error the sandbox
reports when the step runs. Templates are not JavaScript: a placeholder is a dotted path, rendered
here, so a prompt never needs the sandbox.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.workflow.script import NONDETERMINISTIC

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {value: key for key, value in OPENERS.items()}
# After one of these a `/` starts a regular expression rather than dividing.
REGEX_AFTER = set("(,=:[!&|?{};+-*%<>~^") | {""}
REGEX_AFTER_WORDS = {"return", "typeof", "instanceof", "in", "of", "new", "delete", "void", "throw", "case", "do",
                     "else"}
# Statements that cannot appear at the top level of an expression (inside a function body they can).
STATEMENTS = re.compile(r"(?<![\w$.])(var|let|const|if|for|while|do|return|throw|try|catch|finally|class|"
                        r"import|export|switch|break|continue|debugger|with)(?![\w$])")
DOT_REFERENCE = re.compile(r"(?<![\w$.])steps\s*(?:\?\.|\.)\s*([A-Za-z_$][\w$]*)")
INDEX_REFERENCE = re.compile(r"(?<![\w$.])steps\s*(?:\?\.)?\s*\[\s*(['\"])")
WORD = re.compile(r"[\w$]+")
PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
PATH = re.compile(r"^(input|steps)((?:\.[A-Za-z_][\w-]*|\[\d+\])*)$")
STEP_FIELDS = ("result", "state", "error", "attempt")


# A problem inside an expression or template: (line within its text, 1-based; message).
Issue = tuple[int, str]


@dataclass(frozen=True)
class Skeleton:
    """The source with string, comment and regex contents blanked (same length, same lines)."""

    text: str
    problems: tuple[tuple[int, str], ...]  # (offset, message)


class _Scanner:
    """One pass over JavaScript source; what it blanks can no longer fool the bracket count."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.out = list(source)
        self.problems: list[tuple[int, str]] = []
        self.stack: list[tuple[str, int]] = []  # (opener, offset); "${" for a template substitution
        self.position = 0
        self.last = ""  # the last significant token, to tell a regex from a division

    def blank(self, start: int, end: int) -> None:
        for index in range(start, min(end, len(self.out))):
            if self.out[index] != "\n":
                self.out[index] = " "

    def quoted(self, quote: str) -> None:
        """Skip a '…' or "…" string from its opening quote."""
        start = self.position
        index = start + 1
        while index < len(self.source) and self.source[index] not in (quote, "\n"):
            index += 2 if self.source[index] == "\\" else 1
        if index >= len(self.source) or self.source[index] == "\n":
            self.problems.append((start, f"unterminated string starting with {quote}"))
        self.blank(start + 1, index)
        self.position = index + 1
        self.last = "string"

    def template(self) -> None:
        """Skip template-literal text up to its end or a `${`, which opens a nested scope."""
        start = self.position
        index = start
        while index < len(self.source):
            char = self.source[index]
            if char == "\\":
                index += 2
                continue
            if char == "`":
                self.blank(start, index)
                self.position, self.last = index + 1, "string"
                return
            if self.source.startswith("${", index):
                self.blank(start, index)
                self.stack.append(("${", index))
                self.position, self.last = index + 2, "("
                return
            index += 1
        self.problems.append((start, "unterminated template literal"))
        self.blank(start, len(self.source))
        self.position = len(self.source)

    def comment_or_regex(self) -> bool:
        """Handle a `/` that starts a comment or a regular expression; False if it divides."""
        source, start = self.source, self.position
        if source.startswith("//", start):
            end = source.find("\n", start)
            end = len(source) if end < 0 else end
            self.blank(start, end)
            self.position = end
            return True
        if source.startswith("/*", start):
            end = source.find("*/", start + 2)
            if end < 0:
                self.problems.append((start, "unterminated /* comment"))
                end = len(source) - 2
            self.blank(start, end + 2)
            self.position = end + 2
            return True
        if self.last not in REGEX_AFTER and self.last not in REGEX_AFTER_WORDS:
            return False
        self.regex()
        return True

    def regex(self) -> None:
        """Skip a regular expression literal; a `/` inside a character class does not end it."""
        start, index, in_class = self.position, self.position + 1, False
        while index < len(self.source) and self.source[index] != "\n":
            char = self.source[index]
            if char == "\\":
                index += 2
                continue
            if char == "[":
                in_class = True
            elif char == "]":
                in_class = False
            elif char == "/" and not in_class:
                break
            index += 1
        if index >= len(self.source) or self.source[index] == "\n":
            self.problems.append((start, "unterminated regular expression"))
        self.blank(start + 1, index)
        self.position, self.last = index + 1, "string"

    def bracket(self, char: str) -> None:
        """Match brackets; the `}` closing a `${` resumes the template literal around it."""
        if char in OPENERS:
            self.stack.append((char, self.position))
        elif not self.stack:
            self.problems.append((self.position, f"unmatched {char!r}"))
        else:
            opener, _ = self.stack.pop()
            if opener == "${" and char == "}":
                self.position += 1
                self.template()
                return
            if OPENERS.get(opener) != char:
                expected = "}" if opener == "${" else OPENERS[opener]
                self.problems.append((self.position, f"{char!r} closes {opener!r} (expected {expected!r})"))
        self.last = char
        self.position += 1

    def word(self) -> None:
        match = WORD.match(self.source, self.position)
        assert match is not None
        self.last = match.group(0)
        self.position = match.end()

    def run(self) -> Skeleton:
        """Dispatch on the next character; whatever is still open at the end is reported where it opened."""
        while self.position < len(self.source):
            char = self.source[self.position]
            if char in "'\"":
                self.quoted(char)
            elif char == "`":
                self.position += 1
                self.template()
            elif char == "/" and self.comment_or_regex():
                continue
            elif char in OPENERS or char in CLOSERS:
                self.bracket(char)
            elif char.isalnum() or char in "_$":
                self.word()
            else:
                if not char.isspace():
                    self.last = char
                self.position += 1
        for opener, at in self.stack:
            self.problems.append((at, f"{opener!r} is never closed"))
        return Skeleton("".join(self.out), tuple(self.problems))


def skeleton(source: str) -> Skeleton:
    """Tokenise once; every check below reads the blanked text so strings cannot confuse it."""
    return _Scanner(source).run()


def _line_of(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def _top_level(text: str) -> str:
    """A blanked text with everything inside brackets blanked too: what sits at depth 0."""
    depth, out = 0, []
    for char in text:
        if char in OPENERS:
            depth += 1
        elif char in CLOSERS:
            depth = max(0, depth - 1)
        out.append(char if depth == 0 and char not in CLOSERS else " ")
    return "".join(out)


def _common_problems(source: str, blanked: Skeleton) -> list[Issue]:
    problems = [(_line_of(source, offset), message) for offset, message in blanked.problems]
    for pattern, what in NONDETERMINISTIC:
        if (found := pattern.search(blanked.text)) is not None:
            problems.append((_line_of(source, found.start()),
                             f"{what} is not allowed: a flow must take the same path when it is resumed"))
    return problems


def check_expression(text: str) -> list[Issue]:
    """Problems with a guard or switch-case expression (empty list: it looks like one expression)."""
    if not text.strip():
        return [(1, "the expression is empty")]
    blanked = skeleton(text)
    problems = _common_problems(text, blanked)
    top = _top_level(blanked.text)
    if (statement := STATEMENTS.search(top)) is not None:
        problems.append((_line_of(text, statement.start()), f"{statement.group(1)!r} is a statement; a guard "
                         f"is one expression (use a `code` step for statements)"))
    if ";" in (body := top.rstrip().rstrip(";")):
        problems.append((_line_of(text, body.index(";")), "';' separates statements; a guard is one expression"))
    return problems


def check_code(text: str) -> list[Issue]:
    """Problems with a `code` step's source: an expression or a function body, both allowed."""
    if not text.strip():
        return [(1, "the code is empty")]
    return _common_problems(text, skeleton(text))


def references(text: str) -> set[str]:
    """Step ids named literally (`steps.x`, `steps?.x`, `steps["x"]`); computed ones are not seen."""
    blanked = skeleton(text).text
    found = {match.group(1) for match in DOT_REFERENCE.finditer(blanked)}
    for match in INDEX_REFERENCE.finditer(blanked):
        quote_at = match.end() - 1
        close = text.find(match.group(1), quote_at + 1)
        if close > 0:
            found.add(text[quote_at + 1:close])
    return found


@dataclass(frozen=True)
class Placeholder:
    """One `{{ … }}`: the root (`input` or `steps`), the step id for `steps`, and the path after it."""

    source: str
    root: str
    step: str | None
    path: tuple[str | int, ...]


def _split_path(rest: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for match in re.finditer(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]", rest):
        parts.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
    return tuple(parts)


def _placeholder(inner: str) -> Placeholder | str:
    """Parse the inside of `{{ … }}`, or say why it is not a placeholder."""
    text = inner.strip()
    match = PATH.match(text)
    if not match:
        return (f"{{{{ {text} }}}} is not a placeholder: use input.name, or steps.<id>.result "
                f"(also .state, .error), optionally followed by .field or [index]")
    root, path = match.group(1), _split_path(match.group(2))
    if root == "input":
        return Placeholder(text, root, None, path)
    if len(path) < 2 or not isinstance(path[0], str) or path[1] not in STEP_FIELDS:
        return f"{{{{ {text} }}}}: say which part of the step, e.g. steps.<id>.result ({', '.join(STEP_FIELDS)})"
    return Placeholder(text, root, path[0], path[1:])


def parse_template(text: str) -> tuple[list[tuple[int, Placeholder]], list[Issue]]:
    """The placeholders of a template (with their lines) and the problems (an unclosed `{{`, a bad path)."""
    placeholders: list[tuple[int, Placeholder]] = []
    problems: list[Issue] = []
    for match in PLACEHOLDER.finditer(text):
        parsed = _placeholder(match.group(1))
        if isinstance(parsed, str):
            problems.append((_line_of(text, match.start()), parsed))
        else:
            placeholders.append((_line_of(text, match.start()), parsed))
    if "{{" in PLACEHOLDER.sub(lambda match: " " * len(match.group(0)), text):
        problems.append((_line_of(text, text.rfind("{{")), "'{{' is never closed with '}}'"))
    return placeholders, problems


def _lookup(value: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(part, int) and isinstance(value, list) and part < len(value):
            value = value[part]
        elif isinstance(part, str) and isinstance(value, Mapping):
            value = value.get(part)
        else:
            return None
    return value


def _text(value: Any) -> str:
    """Strings go in as they are (a prompt reads naturally); anything else as JSON; nothing as ''."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)


def render_template(text: str, flow_input: Any, steps: Mapping[str, Mapping[str, Any]]) -> str:
    """Fill every placeholder; a missing value (a skipped step, an absent key) renders as ''."""
    def fill(match: re.Match[str]) -> str:
        parsed = _placeholder(match.group(1))
        if isinstance(parsed, str):
            return match.group(0)
        if parsed.root == "input":
            return _text(_lookup(flow_input, parsed.path))
        return _text(_lookup(steps.get(parsed.step or "", {}), parsed.path))
    return PLACEHOLDER.sub(fill, text)
