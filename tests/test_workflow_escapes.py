"""A sandbox-escape corpus: every attack ends failed or refused, and the sandbox pool and this process live on.

Each attack is a workflow body run in a real sandbox process. An attack that finds nothing throws
`contained` itself, so every row ends with the run failed (a script error, a broken limit, a crash of
the sandbox process) or never finishing (waiting on nothing); then a plain script runs in the same
pool. A few of these also go through a real worker in tests/test_workflows.py.
"""

from __future__ import annotations

import os

import pytest

from orchestrator.workflow.sandbox import SandboxError, run_to_completion
from orchestrator.workflow.script import load_script

HEADER = 'export const meta = { name: "attack", description: "tries to get out" };\n'
CONTAINED = 'throw new Error("contained");'

ATTACKS: dict[str, str] = {
    # reaching the real global object or the host through constructors and eval
    "function constructor chain": f'''
const g = (function () {{}}).constructor("return this")();
const extra = Object.getOwnPropertyNames(g).filter((n) => /host|boocode|__/.test(n));
if (extra.length || typeof g.process !== "undefined") return extra;
{CONTAINED}''',
    "async function constructor": f'''
const AsyncFunction = (async () => {{}}).constructor;
const found = await AsyncFunction("return typeof process + typeof require + typeof fetch")();
if (found !== "undefinedundefinedundefined") return found;
{CONTAINED}''',
    "generator constructor": f'''
const G = (function* () {{}}).constructor;
const it = G("yield this")();
const g = it.next().value;
if (g && Object.getOwnPropertyNames(g).some((n) => n.startsWith("__"))) return "host";
{CONTAINED}''',
    "indirect eval": f'''
const g = (0, eval)("this");
if (Object.getOwnPropertyNames(g).some((n) => n.startsWith("__"))) return "host";
{CONTAINED}''',
    "dynamic import": 'await import("fs");\nreturn "imported";',
    "import of a data url": 'await import("data:text/javascript,export default 1");\nreturn "imported";',
    "WebAssembly": 'const m = new WebAssembly.Module(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]));\nreturn "wasm";',
    "SharedArrayBuffer": 'const s = new SharedArrayBuffer(8);\nreturn s.byteLength;',
    "Atomics.wait": 'Atomics.wait(new Int32Array(4), 0, 0, 1000);\nreturn "waited";',
    "WeakRef and FinalizationRegistry (GC timing)": 'new WeakRef({});\nnew FinalizationRegistry(() => {});\nreturn 1;',
    "caller of a host callback": f'''
const callers = await parallel([function probe() {{ return typeof probe.caller; }}]);
if (callers[0] === "function") return "host function reached";
{CONTAINED}''',
    "arguments.callee.caller": f'''
const got = await parallel([function () {{ return typeof arguments.callee.caller; }}]);
if (got[0] === "function") return "host function reached";
{CONTAINED}''',
    "stack trace hook": f'''
try {{ Error.prepareStackTrace = (error, frames) => frames.map((f) => f.getFunction()); }} catch (e) {{}}
try {{ Object.defineProperty(Error, "prepareStackTrace", {{ value: (e, frames) => frames }}); }} catch (e) {{}}
const stack = new Error("x").stack;
if (typeof stack !== "string" || Error.prepareStackTrace !== undefined) return "hooked";
{CONTAINED}''',
    "captureStackTrace and stackTraceLimit": f'''
try {{ Error.captureStackTrace = () => "mine"; }} catch (e) {{}}
try {{ Error.stackTraceLimit = Infinity; }} catch (e) {{}}
if (Error.stackTraceLimit !== 10 || Error.captureStackTrace.toString().includes("mine")) return "changed";
{CONTAINED}''',
    # pollution of what the host relies on
    "Object.prototype pollution": f'''
Object.prototype.then = function (resolve) {{ resolve("hijacked"); }};
Object.prototype.polluted = "yes";
const value = await agent("a");
if (value !== "a" || ({{}}).polluted) return "polluted";
{CONTAINED}''',
    "Object.prototype accessor": '''
Object.defineProperty(Object.prototype, "key", { get() { return "forged"; } });
return "defined";''',
    "Array.prototype pollution": f'''
Array.prototype.push = function () {{ return 0; }};
Array.prototype.map = () => ["hijacked"];
const out = await parallel([() => agent("x"), () => agent("y")]);
if (out.join() !== "x,y") return out;
{CONTAINED}''',
    "Promise pollution": f'''
try {{ Promise.prototype.then = function () {{ return "hijacked"; }}; }} catch (e) {{}}
try {{ globalThis.Promise = function FakePromise() {{}}; }} catch (e) {{}}
try {{ Promise.resolve = () => "x"; }} catch (e) {{}}
const value = await agent("a");
if (value !== "a" || (async () => {{}})() instanceof Promise === false) return "hijacked";
{CONTAINED}''',
    "rebinding the globals the host uses": f'''
for (const name of ["Object", "JSON", "BigInt", "Map", "Error", "TypeError", "Number", "Array"]) {{
  try {{ globalThis[name] = function fake() {{ return "fake"; }}; }} catch (e) {{}}
  try {{ delete globalThis[name]; }} catch (e) {{}}
}}
const value = await agent("a", {{ label: "still checked" }});
if (value !== "a" || typeof JSON.stringify !== "function") return "rebound";
{CONTAINED}''',
    "the global object's prototype": f'''
try {{ Object.setPrototypeOf(globalThis, new Proxy({{}}, {{ get: () => () => "trapped" }})); }} catch (e) {{}}
const value = await agent("a");
if (value !== "a") return "trapped";
{CONTAINED}''',
    "freezing the global object before args": '})();\nObject.preventExtensions(globalThis);\n(function () {',
    "replacing the primitives": f'''
for (const name of ["agent", "parallel", "budget", "workflow", "log"]) {{
  try {{ globalThis[name] = () => "mine"; }} catch (e) {{}}
  try {{ Object.defineProperty(globalThis, name, {{ value: () => "mine" }}); }} catch (e) {{}}
}}
if (typeof budget.remaining !== "function" || (await agent("a")) !== "a") return "replaced";
{CONTAINED}''',
    "budget tampering": f'''
try {{ budget.total = 1e12; }} catch (e) {{}}
try {{ Object.defineProperty(budget, "remaining", {{ value: () => Infinity }}); }} catch (e) {{}}
await agent("a");
if (budget.total !== 2 || budget.remaining() !== 1) return "tampered";
{CONTAINED}''',
    # limits: memory, time, the event loop
    "huge array": "const a = new Array(2 ** 28).fill(1.5);\nreturn a.length;",
    "huge string doubling": 'let s = "x";\nwhile (true) s += s;',
    "huge ArrayBuffer": "const b = new ArrayBuffer(2 ** 31);\nnew Uint8Array(b).fill(1);\nreturn b.byteLength;",
    "many objects": "const hoard = [];\nwhile (true) hoard.push({ a: [1, 2, 3], b: 'x'.repeat(64) });",
    "deep recursion": "function down(n) { return down(n + 1) + 1; }\nreturn down(0);",
    "deep recursion after an await": "await agent('a');\nconst f = (n) => f(n + 1) + 1;\nreturn f(0);",
    "endless loop after an await": "await agent('a');\nwhile (true) {}",
    "microtask flood": "function flood() { Promise.resolve().then(flood); }\nflood();\nawait agent('a');\nreturn 1;",
    "timer flood": "function again() { setTimeout(again, 0); }\nagain();\nawait agent('a');\nreturn 1;",
    "a million timers": "for (let i = 0; i < 1e8; i++) setTimeout(() => {}, 0);\nreturn 1;",
    "never-resolving promise": "await new Promise(() => {});\nreturn 'never';",
    "catastrophic regular expression": "return /^(a+)+$/.test('a'.repeat(40) + 'b');",
    # hostile values handed to the host
    "getter that throws in agent options": 'await agent("a", { get label() { throw new Error("boom"); } });\nreturn 1;',
    "getter that loops in agent options": 'await agent("a", { get label() { for (;;) {} } });\nreturn 1;',
    "Proxy as agent options": '''
await agent("a", new Proxy({}, { ownKeys() { throw new Error("trap"); } }));
return 1;''',
    "Proxy as the prompt": 'await agent(new Proxy({}, { get: () => () => "text" }));\nreturn 1;',
    "Symbol.toPrimitive prompt": 'await agent({ [Symbol.toPrimitive]: () => "a prompt" });\nreturn 1;',
    "toJSON that throws in options":
        'await agent("a", { schema: { toJSON() { throw new Error("no"); } } });\nreturn 1;',
    "toJSON that changes its mind": f'''
let n = 0;
const schema = {{ toJSON() {{ n += 1; return n === 1 ? {{ type: "string" }} : {{ type: {{}} }}; }} }};
await agent("a", {{ schema }});
if (n !== 1) return "read twice";
{CONTAINED}''',
    "cyclic agent options": 'const o = {};\no.o = o;\nawait agent("a", { schema: o });\nreturn 1;',
    "cyclic result": "const a = [];\na.push(a);\nreturn a;",
    "BigInt result": "return { total: 10n ** 30n };",
    "result whose getter throws": 'return { get x() { throw new Error("gotcha"); } };',
    "result that is a Proxy": 'return new Proxy({}, { ownKeys() { throw new Error("trap"); } });',
    "thrown value with hostile getters": '''
throw new Proxy({}, { get() { throw new Error("no"); }, getPrototypeOf() { throw new Error("no"); } });''',
    "thrown value whose toString loops": "throw { toString() { for (;;) {} } };",
    "thenable that never settles": "await { then() {} };\nreturn 1;",
    "workflow() with hostile args": 'const a = {};\na.a = a;\nawait workflow("x", a);\nreturn 1;',
}


def attack(body: str):  # type: ignore[no-untyped-def]
    return run_to_completion(load_script(HEADER + body), None, lambda call: call["prompt"], timeout_seconds=1.0,
                             budget=2)


def test_the_corpus_is_large_enough() -> None:
    assert len(ATTACKS) >= 30


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_ends_failed_or_refused_and_the_pool_lives_on(name: str) -> None:
    try:
        state = attack(ATTACKS[name])
    except SandboxError as error:
        assert error.code in ("script_timeout", "script_memory", "script_crashed", "script_syntax", "sandbox_error"), \
            (error.code, error.message)
    else:
        ended_failed = state["done"] and state["error"] is not None
        never_finished = not state["done"]
        assert ended_failed or never_finished, (name, state["result"])
        if CONTAINED in ATTACKS[name]:  # it looked, found nothing, and said so (not some other error)
            assert state["error"]["message"] == "contained", state["error"]
    assert attack("return 'alive';")["result"] == "alive"
    assert os.getpid()
