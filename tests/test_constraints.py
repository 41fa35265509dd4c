"""Grammar-constrained decoding on a tiny model: per-row grammars inside one batch, unconstrained rows untouched,
the recorded log-probabilities (unmasked, what the trainer recomputes; masked ones kept), the trainer's
`logprob_mismatch` on constrained turns, and the schema caps."""

from __future__ import annotations

import json

import pytest
import torch
from test_trainer import config, trainer_for

from langgraph_omar.errors import OmarError
from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.batch import build_batch
from langgraph_omar.serving import decoding
from langgraph_omar.serving.constraints import (
    ARRAY_ITEMS,
    NUMBER_BOUND,
    STRING_CHARS,
    Constraint,
    bound_schema,
)
from langgraph_omar.serving.decoding import DecodeRequest, decode_batch
from langgraph_omar.serving.sampling import SamplingParams
from langgraph_omar.trajectory import Episode, Turn

SCORE = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": -5, "maximum": 5},
        "mood": {"enum": ["calm", "angry"]},
        "sure": {"type": "boolean"},
    },
    "required": ["score", "mood", "sure"],
    "additionalProperties": False,
}
TAGS = {
    "type": "object",
    "properties": {"tags": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 3}},
    "required": ["tags"],
    "additionalProperties": False,
}


def valid_score(value: dict) -> bool:
    return (
        set(value) == {"score", "mood", "sure"}
        and isinstance(value["score"], int)
        and -5 <= value["score"] <= 5
        and value["mood"] in ("calm", "angry")
        and isinstance(value["sure"], bool)
    )


def prompt(policy, text: str) -> list[int]:
    return policy.render([{"role": "user", "content": text}], 64)[0]


def test_each_row_follows_its_own_grammar_and_free_rows_are_untouched(policy):
    params = [SamplingParams(temperature=1.0, max_new_tokens=64, seed=s) for s in range(4)]
    free = DecodeRequest(prompt(policy, "hello"), params[0])
    batch = [
        free,
        DecodeRequest(
            prompt(policy, "score it"), params[1], grammar=policy.grammars.row(Constraint.json_schema(SCORE))
        ),
        DecodeRequest(
            prompt(policy, "tag it"), params[2], grammar=policy.grammars.row(Constraint.json_schema(TAGS))
        ),
        DecodeRequest(
            prompt(policy, "hello"), params[3], grammar=policy.grammars.row(Constraint.json_object())
        ),
    ]
    results = decode_batch(policy.model, policy.tokenizer, batch, policy.eos_ids)
    assert valid_score(json.loads(results[1].text)) and results[1].finish_reason == "stop"
    tags = json.loads(results[2].text)["tags"]
    assert len(tags) <= 3 and set(tags) <= {"x", "y"}
    # any JSON object: the random tiny model may still be inside a key at max_new_tokens; what it wrote is a
    # prefix the grammar accepts
    check = policy.grammars.row(Constraint.json_object())
    for token in results[3].completion_ids:
        check.advance(token)
    assert results[3].text.startswith("{") and (results[3].finish_reason == "length") != check.completed
    alone = decode_batch(
        policy.model, policy.tokenizer, [DecodeRequest(free.prompt_ids, params[0])], policy.eos_ids
    )
    assert results[0].completion_ids == alone[0].completion_ids and results[0].masked_logprobs is None


def test_an_unconstrained_batch_never_builds_a_mask(policy, monkeypatch):
    def no_masks(*args, **kwargs):
        raise AssertionError("an unconstrained batch built a token mask")

    monkeypatch.setattr(decoding, "allowed_tokens", no_masks)
    requests = [
        DecodeRequest(prompt(policy, t), SamplingParams(max_new_tokens=4, seed=1)) for t in ("a", "b")
    ]
    assert len(decode_batch(policy.model, policy.tokenizer, requests, policy.eos_ids)) == 2


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_recorded_logprobs_are_the_unmasked_ones_and_the_masked_ones_are_kept(policy, temperature):
    ids = prompt(policy, "score it")
    params = SamplingParams(temperature=temperature, max_new_tokens=64, seed=3)
    record = policy.generate(ids, params, constraint=Constraint.json_schema(SCORE))
    assert valid_score(json.loads(record.text))
    assert record.extra["constraint"] == "json_schema"
    # Recompute from the weights: log_softmax(logits / T) at each completion position, no mask.
    sequence = torch.tensor([ids + record.completion_ids])
    with torch.no_grad():
        logits = policy.model(sequence).logits[0, len(ids) - 1 : -1].float()
    scale = temperature if temperature > 0 else 1.0
    unmasked = torch.log_softmax(logits / scale, -1).gather(-1, torch.tensor(record.completion_ids)[:, None])[
        :, 0
    ]
    assert torch.allclose(torch.tensor(record.logprobs), unmasked, atol=1e-4)
    masked = torch.tensor(record.extra["masked_logprobs"])
    assert (masked >= unmasked - 1e-4).all()  # masked = unmasked - log Z with Z <= 1
    assert (masked > -1e-6).any() and (unmasked < -1e-3).all()  # forced tokens: certain under the mask only


def test_the_trainer_recomputes_constrained_turns_without_mismatch():
    trainer = trainer_for(config())
    policy = trainer.policy
    episodes = []
    for e in range(4):
        turns, rewards = [], {}
        for r, role in enumerate(("a", "b")):
            params = SamplingParams(temperature=0.7, max_new_tokens=40, seed=10 * e + r)
            record = policy.generate(
                prompt(policy, f"score {e}"),
                params,
                adapter="policy",
                constraint=Constraint.json_schema(SCORE),
            )
            assert valid_score(json.loads(record.text))
            turns.append(
                Turn(
                    role,
                    role,
                    record.text,
                    record.prompt_ids,
                    record.completion_ids,
                    record.logprobs,
                    temperature=record.temperature,
                    finish_reason=record.finish_reason,
                )  # fmt: skip
            )
            rewards[role] = float(json.loads(record.text)["score"])
        episodes.append(Episode(f"e{e}", turns, rewards, metadata={"group_id": f"g{e // 2}"}))
    batch = build_batch(episodes, trainer.config.advantage, EmaBaseline(), 0)
    assert batch is not None
    metrics = trainer.update(batch, episodes)
    assert metrics["logprob_mismatch_tokens"] > 0
    assert metrics["logprob_mismatch"] < (2e-2 if policy.device.type == "cuda" else 1e-4)


def test_a_schema_the_grammar_cannot_take_fails_the_call_at_once(policy):
    with pytest.raises(OmarError, match="cannot constrain decoding"):
        policy.submit(prompt(policy, "x"), SamplingParams(), constraint=Constraint.regex("(unclosed"))


def test_open_ended_values_are_capped_and_bounded_ones_kept():
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "x": {"type": ["number", "null"], "maximum": 3},
            "s": {"type": "string"},
            "e": {"type": "string", "enum": ["a"]},
            "l": {"type": "array", "items": {"type": "string", "maxLength": 4}},
        },
        "$defs": {"Inner": {"type": "object", "properties": {"k": {"type": "integer", "minimum": 0}}}},
    }
    bounded = bound_schema(schema)
    props = bounded["properties"]
    assert props["n"] == {"type": "integer", "minimum": -NUMBER_BOUND, "maximum": NUMBER_BOUND}
    assert props["x"] == {"type": ["number", "null"], "maximum": 3, "minimum": -NUMBER_BOUND}
    assert props["s"] == {"type": "string", "maxLength": STRING_CHARS}
    assert props["e"] == schema["properties"]["e"]
    assert props["l"] == {
        "type": "array",
        "items": {"type": "string", "maxLength": 4},
        "maxItems": ARRAY_ITEMS,
    }
    assert bounded["$defs"]["Inner"]["properties"]["k"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": NUMBER_BOUND,
    }
    assert json.loads(Constraint.json_schema(schema, bounded=False).body) == schema
