"""Generation speed of the embedded model through our server path, next to llama-cpp-python called directly.

    .venv/bin/python -m bench.local_model [--size 0.5b] [--tokens 128] [--repeats 3]

Ours:     ModelClient (the `openai` client every agent uses) -> llama_cpp.server on 127.0.0.1 (the process
          `boocode up` starts) -> the model; streamed, temperature 0.
Baseline: llama_cpp.Llama in this process, create_chat_completion(stream=True) with the same prompt,
          threads, context and token limit, measured in the same run (one after the other, so they do
          not share the two cores).
Generation tokens/s = output tokens / (time to the last token - time to the first), counted with the
model's own tokenizer; also the end-to-end seconds. Prints figures and the ratio; asserts nothing.
The model is fetched first if it is not in BOOCODE_LOCAL_MODEL_DIR (default ~/.boocode/models).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from pathlib import Path

from orchestrator.llm.client import ModelClient, Provider
from orchestrator.localmodel.catalog import MODELS
from orchestrator.localmodel.fetch import fetch
from orchestrator.localmodel.server import LocalModelServer

PROMPT = [{"role": "system", "content": "You are a helpful coding assistant."},
          {"role": "user", "content": "Write a Python function that parses an ISO 8601 date string and returns "
                                      "the day of the week, with a docstring and three doctests."}]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure(run_once, repeats: int, count_tokens) -> dict[str, float]:  # type: ignore[no-untyped-def]
    rates, totals = [], []
    for _ in range(repeats):
        started = time.monotonic()
        first, text = run_once()
        ended = time.monotonic()
        tokens = count_tokens(text)
        rates.append(tokens / max(ended - first, 1e-6))
        totals.append(ended - started)
    return {"tokens_per_second": statistics.median(rates), "seconds": statistics.median(totals), "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=sorted(MODELS), default="0.5b")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    model = MODELS[options.size]
    folder = Path(os.environ.get("BOOCODE_LOCAL_MODEL_DIR") or Path("~/.boocode/models").expanduser())
    path = fetch(model, folder, progress=print).path
    threads = os.cpu_count() or 1
    context = 4096

    from llama_cpp import Llama

    direct = Llama(model_path=str(path), n_ctx=context, n_threads=threads, verbose=False)

    def count_tokens(text: str) -> int:
        return len(direct.tokenize(text.encode(), add_bos=False))

    def run_direct() -> tuple[float, str]:
        first, parts = 0.0, []
        for chunk in direct.create_chat_completion(messages=PROMPT, max_tokens=options.tokens, temperature=0.0,
                                                   stream=True):
            piece = chunk["choices"][0]["delta"].get("content") or ""
            if piece and not first:
                first = time.monotonic()
            parts.append(piece)
        return first, "".join(parts)

    baseline = measure(run_direct, options.repeats, count_tokens)

    server = LocalModelServer(path, free_port(), context=context, threads=threads)
    server.start()
    try:
        client = ModelClient(Provider(name="local", base_url=server.base_url, model="local", temperature=0.0),
                             max_attempts=1)

        def run_ours() -> tuple[float, str]:
            first = [0.0]

            def on_delta(delta: dict) -> None:
                if delta.get("text") and not first[0]:
                    first[0] = time.monotonic()

            result = client.complete(PROMPT, [], on_delta=on_delta, options={"max_tokens": options.tokens})
            return first[0], result.text

        ours = measure(run_ours, options.repeats, count_tokens)
    finally:
        server.stop()

    print(f"model: {model.title}, {threads} threads, up to {options.tokens} tokens, median of {options.repeats}")
    print(f"llama-cpp-python direct : {baseline['tokens_per_second']:6.1f} tokens/s generation, "
          f"{baseline['seconds']:.2f} s end to end ({baseline['tokens']} tokens)")
    print(f"our server path         : {ours['tokens_per_second']:6.1f} tokens/s generation, "
          f"{ours['seconds']:.2f} s end to end ({ours['tokens']} tokens)")
    speed_ratio = ours['tokens_per_second'] / baseline['tokens_per_second']
    print(f"ratio (ours / direct)   : {speed_ratio:.3f} generation speed, "
          f"{ours['seconds'] / baseline['seconds']:.3f} end-to-end time")


if __name__ == "__main__":
    main()
