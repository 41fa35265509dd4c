"""How far `omar train --from FILE --algo sft` moves the model toward an expert's text, with given flags.

    python benchmarks/sft_from_files.py [--model smollm2-135m-instruct] [-- extra omar train flags]

Six recorded episodes of a coaching chat, as a hosted expert would leave them (source "model": text and
messages, no token ids): a learner asks a different question each turn and the coach answers every time with
the same two sentences. `omar train --from traces.jsonl --algo sft --roles coach --out RUN` runs in this
process with the extra flags (none: the defaults a new user gets), then the mean token log-probability of the
coach's replies (each rendered with the policy's chat template after its recorded messages) is read with the
adapter disabled and enabled. Last line: `logprob_gain: X.XX` (nats per token, adapter - base).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from langgraph_omar.cli import main
from langgraph_omar.rl.from_files import render_text_turn
from langgraph_omar.rl.selfplay import ADAPTER
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.trajectory import Episode, Turn, write_episodes

REPLY = "Slow down and breathe out as you push. Keep your back flat against the bench."
QUESTIONS = [
    "How many sets should I do today?",
    "My shoulder feels tight, what now?",
    "Is it fine to train every day?",
    "Should I add more weight?",
    "What do I eat after training?",
    "How long should I rest between sets?",
    "Can I skip the warm-up?",
    "Why do my arms shake on the last rep?",
    "Do I need a spotter?",
]


def expert_episodes(count: int = 6, turns: int = 3) -> list[Episode]:
    """`count` episodes of `turns` learner questions, each answered by the coach with REPLY."""
    episodes = []
    for e in range(count):
        chat = [{"role": "system", "content": "You are a strength coach. Answer the learner briefly."}]
        recorded = []
        for t in range(turns):
            question = QUESTIONS[(e + 2 * t) % len(QUESTIONS)]
            recorded.append(Turn("learner", "learner", question, [], [], [], source="model", messages=[]))
            chat = [*chat, {"role": "user", "content": question}]
            recorded.append(Turn("coach", "coach", REPLY, [], [], [], source="model", messages=list(chat)))
            chat = [*chat, {"role": "assistant", "content": REPLY}]
        episodes.append(Episode(f"coach-{e}", recorded, metadata={"scenario_id": f"coach-{e}"}))
    return episodes


@torch.no_grad()
def mean_logprob(policy: SharedPolicy, episodes: list[Episode], adapter: bool) -> float:
    """Mean log-probability per token of the coach's completions (chat-template ids) after their prompts."""
    model = policy.model
    total, tokens = 0.0, 0
    for turn in (t for e in episodes for t in e.turns if t.role == "coach"):
        prompt, completion = render_text_turn(policy, turn.messages, turn.text)
        ids = torch.tensor([prompt + completion], device=policy.device)
        if adapter:
            logits = model(ids).logits
        else:
            with model.disable_adapter():
                logits = model(ids).logits
        logprobs = torch.log_softmax(logits[0, len(prompt) - 1 : -1].float(), -1)
        total += float(logprobs.gather(-1, ids[0, len(prompt) :, None]).sum())
        tokens += len(completion)
    return total / tokens


def run(model: str, flags: list[str]) -> float:
    episodes = expert_episodes()
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "traces.jsonl", Path(tmp) / "run"
        write_episodes(path, episodes)
        argv = ["train", "--from", str(path), "--algo", "sft", "--roles", "coach", "--out", str(out)]
        started = time.perf_counter()
        assert main([*argv, "--model", model, "--no-progress", *flags]) == 0
        seconds = time.perf_counter() - started
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    policy = SharedPolicy.get(model)
    policy.model.set_adapter(ADAPTER)
    policy.model.eval()
    base, tuned = mean_logprob(policy, episodes, False), mean_logprob(policy, episodes, True)
    print(f"flags: {' '.join(flags) or '(defaults)'}")
    print(f"iterations {len(records)}, optimizer steps {records[-1]['optimizer_steps']:.0f}, {seconds:.0f} s")
    print(f"mean token logprob of the coach's replies: base {base:.3f}, adapter {tuned:.3f}")
    print(f"logprob_gain: {tuned - base:.2f}")
    return tuned - base


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("flags", nargs="*", help="extra `omar train` flags (after --)")
    args = parser.parse_args()
    run(args.model, args.flags)
