"""Rollout throughput: 32 concurrent two-role conversations through the shared engine vs one call at a time.

Both sides run the SAME graph (same prompts, same sampling settings, same weights); only the chat model
differs: `ChatPolicy` (batched shared engine, episodes run with `abatch`) against langchain-huggingface's
`ChatHuggingFace` over a transformers pipeline, called one at a time (the path a user would pick today).
The baseline's rate does not depend on how many conversations wait, so by default it runs a subset of them
(`--baseline-conversations`, 0 skips it) to keep the benchmark short; both rates are generated tokens per second.
The shared engine also runs the same graph with every reply constrained to a JSON schema (`{"say": <string>}`,
decoded under a grammar, see `langgraph_omar.serving.constraints`), so the cost of the token masks shows as
tokens/s with and without constraints, side by side. The engine's rate is also printed as a share of this
machine's matrix limit, measured in the same run: the generated tokens/s a decoding step would reach at
`--conversations` rows if it were nothing but the model's matrix products (every linear layer's weight times a
(rows, in_features) input, plain `torch.nn.functional.linear`). Last line: `speedup: X.XX`.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import torch
from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline
from transformers import pipeline

from langgraph_omar import ChatPolicy, SharedPolicy
from langgraph_omar.conversation import Role, build_conversation_graph
from langgraph_omar.serving.models import DEFAULT_MODEL

SAY_SCHEMA = {
    "type": "object",
    "properties": {"say": {"type": "string", "maxLength": 400}},
    "required": ["say"],
    "additionalProperties": False,
}
PERSONAS = {
    "seller": "You are Sam, selling a used bicycle. You want a high price.",
    "buyer": "You are Alex, who wants to buy a used bicycle cheaply.",
}


def conversation_graph(model, turns: int):
    roles = [
        Role(name, persona=persona, model=model, turn_prompt="Your turn.")
        for name, persona in PERSONAS.items()
    ]
    return build_conversation_graph(roles, max_turns=turns)


def count_tokens(outputs, tokenizer) -> int:
    return sum(
        len(tokenizer(u["text"], add_special_tokens=False)["input_ids"])
        for o in outputs
        for u in o["transcript"]
    )


def run_batched(graph, inputs, engine, label: str) -> float:
    """Run every conversation at once through the shared engine; print and return generated tokens/s."""
    asyncio.run(graph.abatch(inputs[:2]))  # warm-up (and the grammar's compilation, for a constrained model)
    start = time.perf_counter()
    outputs = asyncio.run(graph.abatch(inputs, {"max_concurrency": len(inputs)}))
    seconds = time.perf_counter() - start
    tokens = count_tokens(outputs, engine.tokenizer)
    print(f"{label:32}{tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tokens/s")
    return tokens / seconds


def matrix_limit(model, rows: int, repeats: int = 5) -> float:
    """Tokens/s of a one-token step at `rows` rows made of the model's matrix products alone: every
    `torch.nn.Linear` weight (W (out, in)) applied to a (rows, in) input, best of `repeats` passes."""
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    param = weights[0]
    inputs = {
        w.shape[1]: torch.randn(rows, w.shape[1], dtype=param.dtype, device=param.device) for w in weights
    }
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first pass warms up
            start = time.perf_counter()
            for w in weights:
                torch.nn.functional.linear(inputs[w.shape[1]], w)
            if param.device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return rows / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=32)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--baseline-conversations", type=int, default=4)
    parser.add_argument("--device", default=None)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="embedded name or model directory")
    args = parser.parse_args()

    engine = SharedPolicy.get(args.model, args.device)
    inputs = [{} for _ in range(args.conversations)]
    print(
        f"device {engine.device}, dtype {next(engine.model.parameters()).dtype}, {args.conversations} "
        f"conversations x {args.turns} turns, max_tokens {args.max_tokens}, temperature {args.temperature}"
    )

    ours = ChatPolicy(
        model=args.model, device=args.device, temperature=args.temperature, max_tokens=args.max_tokens
    )
    ours_rate = run_batched(conversation_graph(ours, args.turns), inputs, engine, "shared engine (batched):")
    constrained = ours.bind(response_format=SAY_SCHEMA)
    constrained_rate = run_batched(
        conversation_graph(constrained, args.turns), inputs, engine, "  same, JSON-constrained:"
    )
    print(f"constrained / unconstrained tokens/s: {constrained_rate / ours_rate:.2f}")
    limit = matrix_limit(engine.model, args.conversations)
    print(
        f"matrix limit at {args.conversations} rows: {limit:.1f} tokens/s; the engine runs at "
        f"{ours_rate / limit:.0%} of it"
    )
    if args.baseline_conversations <= 0:
        return

    generator = pipeline(
        "text-generation",
        model=engine.model,
        tokenizer=engine.tokenizer,
        max_new_tokens=args.max_tokens,
        do_sample=args.temperature > 0,
        temperature=args.temperature,
        return_full_text=False,
    )
    baseline = ChatHuggingFace(llm=HuggingFacePipeline(pipeline=generator), tokenizer=engine.tokenizer)
    graph = conversation_graph(baseline, args.turns)
    graph.invoke({})  # warm-up
    start = time.perf_counter()
    outputs = [graph.invoke({}) for _ in range(args.baseline_conversations)]
    base_seconds = time.perf_counter() - start
    base_tokens = count_tokens(outputs, engine.tokenizer)
    base_rate = base_tokens / base_seconds
    print(
        f"ChatHuggingFace (one at a time): {base_tokens} tokens in {base_seconds:.1f} s = {base_rate:.1f} tokens/s"
    )
    if torch.cuda.is_available():
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"speedup: {ours_rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
