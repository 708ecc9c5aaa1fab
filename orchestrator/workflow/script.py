"""Loading a workflow script: the literal `meta` export, then the body, refused early when malformed.

    export const meta = { name: "review", description: "…", phases: ["read", "judge"] };
    const notes = await agent("Read the diff", { label: "reader" });
    return notes;

`meta` must be a literal (objects, arrays, strings without substitutions, numbers, booleans, null):
it is parsed here, without running anything. The body keeps its line numbers (the meta text is
blanked, not removed) so errors point at the user's lines. Literal uses of the clock or randomness
are refused before anything runs; aliases are caught at run time by the sandbox.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

MAX_SCRIPT_BYTES = 256 * 1024
META_START = re.compile(r"^(?:\s+|//[^\n]*|/\*.*?\*/)*export\s+const\s+meta\s*=\s*", re.S)
NONDETERMINISTIC = [
    (re.compile(r"\bDate\s*\.\s*now\s*\("), "Date.now()"),
    (re.compile(r"\bMath\s*\.\s*random\s*\("), "Math.random()"),
    (re.compile(r"\bnew\s+Date\s*\(\s*\)"), "new Date() without arguments"),
    (re.compile(r"(?<![\w.$])Date\s*\(\s*\)"), "Date() without arguments"),
]


class ScriptError(Exception):
    """The script is refused before it runs; `line` is 1-based in the user's file when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class WorkflowScript:
    meta: dict[str, Any]
    body: str  # the source with the meta export blanked out (same line numbers)
    source: str

    @property
    def name(self) -> str:
        return self.meta["name"]


class _LiteralParser:
    """A JavaScript literal, and nothing else: anything that would need evaluating is refused."""

    def __init__(self, text: str, start: int) -> None:
        self.text, self.position = text, start

    def line(self) -> int:
        return self.text.count("\n", 0, self.position) + 1

    def fail(self, what: str) -> ScriptError:
        return ScriptError(f"meta must be a literal ({what})", self.line())

    def skip(self) -> None:
        while True:
            match = re.compile(r"\s+|//[^\n]*|/\*.*?\*/", re.S).match(self.text, self.position)
            if not match or not match.group(0):
                return
            self.position = match.end()

    def value(self) -> Any:
        self.skip()
        char = self.text[self.position:self.position + 1]
        if char == "{":
            return self.object()
        if char == "[":
            return self.array()
        if char in "\"'`":
            return self.string()
        match = re.compile(r"-?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+)").match(self.text, self.position)
        if match:
            self.position = match.end()
            number = match.group(0)
            return float(number) if any(c in number for c in ".eE") else int(number)
        for word, result in (("true", True), ("false", False), ("null", None)):
            following = self.text[self.position + len(word):][:1]
            if self.text.startswith(word, self.position) and not re.match(r"[\w$]", following):
                self.position += len(word)
                return result
        raise self.fail(f"unexpected {self.text[self.position:self.position + 20]!r}")

    def string(self) -> str:
        quote = self.text[self.position]
        out: list[str] = []
        position = self.position + 1
        escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "`": "`", "0": "\0"}
        while position < len(self.text):
            char = self.text[position]
            if char == quote:
                self.position = position + 1
                return "".join(out)
            if char == "\\":
                out.append(escapes.get(self.text[position + 1], self.text[position + 1]))
                position += 2
                continue
            if quote == "`" and self.text.startswith("${", position):
                self.position = position
                raise self.fail("template substitutions are code")
            if char == "\n" and quote != "`":
                break
            out.append(char)
            position += 1
        raise self.fail("unterminated string")

    def object(self) -> dict[str, Any]:
        self.position += 1
        result: dict[str, Any] = {}
        while True:
            self.skip()
            if self.text.startswith("}", self.position):
                self.position += 1
                return result
            if self.text[self.position] in "\"'":
                key = self.string()
            else:
                match = re.compile(r"[A-Za-z_$][\w$]*").match(self.text, self.position)
                if not match:
                    raise self.fail("expected a property name")
                key = match.group(0)
                self.position = match.end()
            self.skip()
            if not self.text.startswith(":", self.position):
                raise self.fail(f"expected ':' after {key!r} (shorthand properties and methods are code)")
            self.position += 1
            result[key] = self.value()
            self.skip()
            if self.text.startswith(",", self.position):
                self.position += 1
            elif not self.text.startswith("}", self.position):
                raise self.fail("expected ',' or '}'")

    def array(self) -> list[Any]:
        self.position += 1
        result: list[Any] = []
        while True:
            self.skip()
            if self.text.startswith("]", self.position):
                self.position += 1
                return result
            result.append(self.value())
            self.skip()
            if self.text.startswith(",", self.position):
                self.position += 1
            elif not self.text.startswith("]", self.position):
                raise self.fail("expected ',' or ']'")


def _strip_strings_and_comments(source: str) -> str:
    """Blank string contents and comments (keeping newlines) so code checks do not look inside them."""
    pattern = re.compile(r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`", re.S)
    return pattern.sub(lambda match: re.sub(r"[^\n]", " ", match.group(0)), source)


def load_script(source: str, *, max_bytes: int = MAX_SCRIPT_BYTES) -> WorkflowScript:
    if len(source.encode()) > max_bytes:
        raise ScriptError(f"the script is {len(source.encode())} bytes; the limit is {max_bytes}")
    start = META_START.match(source)
    if not start:
        raise ScriptError("a workflow script starts with `export const meta = {name, description, …}`", 1)
    parser = _LiteralParser(source, start.end())
    if not source[parser.position:].lstrip().startswith("{"):
        raise ScriptError("meta must be an object literal", parser.line())
    meta = parser.value()
    parser.skip()
    if source.startswith(";", parser.position):
        parser.position += 1
    problems = []
    if not isinstance(meta.get("name"), str) or not meta["name"].strip():
        problems.append("meta.name must be a non-empty string")
    if not isinstance(meta.get("description"), str):
        problems.append("meta.description must be a string")
    if "phases" in meta and not (isinstance(meta["phases"], list) and all(isinstance(p, str) for p in meta["phases"])):
        problems.append("meta.phases must be a list of strings")
    if "args" in meta:  # a JSON Schema for the run's args, checked before launch (launch.validate_args)
        try:
            Draft202012Validator.check_schema(meta["args"])
        except SchemaError as error:
            problems.append(f"meta.args must be a JSON Schema: {error.message}")
    if problems:
        raise ScriptError("; ".join(problems), 1)
    blanked = re.sub(r"[^\n]", " ", source[:parser.position])
    body = blanked + source[parser.position:]
    code = _strip_strings_and_comments(body)
    for pattern, what in NONDETERMINISTIC:
        match = pattern.search(code)
        if match:
            raise ScriptError(f"{what} makes a workflow non-deterministic (a resumed run could take another path); "
                              "pass times or seeds in through args", code.count("\n", 0, match.start()) + 1)
    return WorkflowScript(meta=meta, body=body, source=source)
