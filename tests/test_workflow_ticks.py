"""What makes a wide tick cheap must not change what a tick decides: results settled as one batch (one
message to the sandbox process, one V8 task each) give the keys, logs and values that one result at
a time gives and that earlier versions journaled, and a continuation that never yields inside a
batch is still stopped by the script's own time limit. Through a real sandbox process."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.workflow.sandbox import Sandbox, SandboxError, run_to_completion
from orchestrator.workflow.script import load_script

HEADER = 'export const meta = { name: "t", description: "a test" };\n'

# Sequential calls, a parallel, a pipeline, non-ASCII prompts and a log line: every way a key is made.
STRUCTURE = r'''const first = await agent("read the diff", {label: "reader", schema: {type: "object"}});
const fanned = await parallel([0, 1, 2].map((i) => () => agent("check part " + i + " \u00e9\u4e2d", {effort: "low"})));
await pipeline(["x", "y"], (item) => agent("stage one " + item), (previous) => agent("stage two " + previous));
log("done", fanned.length);
return fanned;'''

# The keys the version before batched replay (and BigInt hashing) journaled for STRUCTURE, answered
# with upper-cased prompts: a resume of a run journaled then must find its calls under the same keys.
JOURNALED_KEYS = ["fcf3dd5f410e90a48f0e35fde96d369b", "5cc2641b4c10b93cc331016812d0a28f",
                  "c4a8cfa7f01c98a9146766daf2c4a896", "b658ebea2d30105ba8799a8e3dc65c1c",
                  "c9ca388e9fe3b6b67f0afd5d5b0e1b13", "c1d1d9deac28b96923a8c3f27d8b1aa8",
                  "f6370961fab9661bb103b654d7c82562", "74952f0ab6b46f2a5d2bfc0935b2b537"]
JOURNALED_LOG_KEY = "c969e853d7754634ceacaf07ff248a75"

# 40 slots, each a chain of two calls and a log line: each batch holds many results whose
# continuations make new calls.
FAN_OUT = '''const results = await parallel(Array.from({length: 40}, (_, i) => async () => {
  const first = await agent("first " + i);
  log("slot", i, first);
  return agent("second " + i + " after " + first);
}));
return results;'''


def upper(call: dict[str, Any]) -> str:
    return call["prompt"].upper()


def one_at_a_time(body: str) -> dict[str, Any]:
    """Drive the script with one `step` request per result (the way replays went before batches)."""
    with Sandbox(load_script(HEADER + body), None) as sandbox:
        sandbox.set_budget(None, 0)
        sandbox.start()
        queue, keys = sandbox.take_calls(), []
        while queue:
            call = queue.pop(0)
            keys.append(call["key"])
            queue += sandbox.step(0, call["key"], True, json.dumps(upper(call)))
            queue += [] if queue else sandbox.take_calls()
        return {**sandbox.state(), "keys": keys}


def test_batched_replay_finds_the_keys_earlier_versions_journaled() -> None:
    state = run_to_completion(load_script(HEADER + STRUCTURE), None, upper)
    assert sorted(call["key"] for call in state["calls"]) == sorted(JOURNALED_KEYS)
    assert [entry["key"] for entry in state["logs"]] == [JOURNALED_LOG_KEY]
    assert state["result"] == ["CHECK PART 0 \u00c9\u4e2d", "CHECK PART 1 \u00c9\u4e2d", "CHECK PART 2 \u00c9\u4e2d"]


def test_a_batch_of_results_and_one_result_at_a_time_decide_the_same() -> None:
    batched = run_to_completion(load_script(HEADER + FAN_OUT), None, upper)
    single = one_at_a_time(FAN_OUT)
    assert len(batched["calls"]) == 80
    assert sorted(call["key"] for call in batched["calls"]) == sorted(single["keys"])
    assert sorted(entry["key"] for entry in batched["logs"]) == sorted(entry["key"] for entry in single["logs"])
    assert batched["result"] == single["result"] == [f"SECOND {i} AFTER FIRST {i}" for i in range(40)]


def test_a_continuation_that_never_yields_in_the_middle_of_a_batch_hits_the_script_time_limit() -> None:
    body = '''return await parallel([0, 1, 2, 3, 4].map((i) => async () => {
  const value = await agent("a" + i);
  if (i === 2) for (;;) {}
  return value;
}));'''
    with pytest.raises(SandboxError) as caught:
        run_to_completion(load_script(HEADER + body), None, upper, timeout_seconds=0.5)
    # V8's own limit stopped it, not the sandbox process' deadline (which would say "did not answer")
    assert caught.value.code == "script_timeout" and "without waiting" in caught.value.message
    assert run_to_completion(load_script(HEADER + "return 'fine';"), None, upper)["result"] == "fine"
