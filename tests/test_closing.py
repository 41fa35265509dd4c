"""Budget-aware closing of constrained output (serving/closing.py): near its token cap a constrained row closes
what is open, so a schema-valid object comes back whenever the cap leaves room for the shortest one; the
record says `closed_early`; the recorded log-probabilities stay the unmasked ones; rows far from their cap do
no work."""

from __future__ import annotations

import json

import torch
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from pydantic import BaseModel, Field

from langgraph_omar import ChatPolicy
from langgraph_omar.rl.config import DegenerateSettings
from langgraph_omar.rl.degenerate import degenerate_reason, mark_degenerate
from langgraph_omar.rollout import run_episodes
from langgraph_omar.serving.closing import WINDOW, BudgetCloser, JsonLex, VocabPieces, lex
from langgraph_omar.serving.constraints import Constraint
from langgraph_omar.serving.decoding import DecodeRequest, decode_batch
from langgraph_omar.serving.sampling import SamplingParams
from langgraph_omar.trajectory import Turn

NOTE = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "n": {"type": "integer"},
        "extra": {"type": "string"},
    },
    "required": ["name", "tags", "n"],
    "additionalProperties": False,
}


class Note(BaseModel):
    name: str
    tags: list[str] = Field(max_length=3)
    n: int


def loads(text: str) -> dict:
    """The tiny random model writes control characters inside strings; xgrammar's JSON grammar allows them
    and so do LangChain's parsers (strict=False)."""
    return json.loads(text, strict=False)


def prompt(policy, text: str = "hi") -> list[int]:
    return policy.render([{"role": "user", "content": text}], 64)[0]


def test_the_json_lexer_follows_strings_and_escapes():
    assert lex(JsonLex(), b'{"a": "b') == JsonLex(in_string=True, escaped=False)
    assert lex(JsonLex(), b'{"a": "b\\') == JsonLex(in_string=True, escaped=True)
    assert lex(JsonLex(), b'{"a": "b\\"') == JsonLex(in_string=True, escaped=False)  # an escaped quote
    assert lex(JsonLex(), b'{"a": "b\\""') == JsonLex()
    assert lex(JsonLex(), '{"é": "\\\\"'.encode()) == JsonLex()  # an escaped backslash, then the quote


def test_vocabulary_pieces_cut_a_text_by_longest_match():
    pieces = VocabPieces([b"a", b"ab", b"abc", b"c", b"<s>", b""], excluded={4})
    assert pieces.tokens(b"abcab") == [2, 1]
    assert pieces.tokens(b"ca") == [3, 0]
    assert pieces.tokens(b"<s>") is None  # excluded, and no piece covers "<"


def test_the_plan_closes_the_string_then_the_containers_with_required_keys_filled(policy):
    grammar = policy.grammars.row(Constraint.json_schema(NOTE))
    decode = policy.tokenizer.decode
    assert decode(grammar.closing()) == '{"name": "", "tags": [], "n": 0}'  # the shortest valid object
    for token in policy.grammars.pieces.tokens(b'{"name": "Bo'):
        grammar.advance(token)
    steps = grammar.steps
    assert decode(grammar.closing()) == '", "tags": [], "n": 0}'
    (quote,) = policy.grammars.pieces.tokens(b'"')
    assert decode(grammar.closing(after=quote)) == ', "tags": [], "n": 0}'
    assert grammar.steps == steps and decode(grammar.closing()) == '", "tags": [], "n": 0}'  # state kept
    split = policy.grammars.row(Constraint.json_schema(NOTE))  # a token that stops inside a UTF-8 character
    for token in policy.grammars.pieces.tokens('{"name": "é'.encode()[:-1]):
        split.advance(token)
    plan = split.closing() or []
    assert b"".join(policy.grammars.pieces.decoded[t] for t in plan) == b'\x80", "tags": [], "n": 0}'
    tagged = policy.grammars.row(
        Constraint.json_schema(NOTE, prefix="<tool_call>\n", suffix="\n</tool_call>")
    )
    assert decode(tagged.closing()) == '<tool_call>\n{"name": "", "tags": [], "n": 0}\n</tool_call>'


def test_at_the_shortest_objects_length_every_row_completes_and_one_token_less_none(policy):
    shortest = len(policy.grammars.row(Constraint.json_schema(NOTE)).closing() or [])

    def decode(cap: int):
        requests = [
            DecodeRequest(
                prompt(policy),
                SamplingParams(temperature=1.0, max_new_tokens=cap, seed=seed),
                grammar=policy.grammars.row(Constraint.json_schema(NOTE)),
            )
            for seed in range(6)
        ]
        return decode_batch(policy.model, policy.tokenizer, requests, policy.eos_ids), requests

    results, requests = decode(shortest)
    assert all(request.grammar.completed for request in requests)
    assert all(set(loads(r.text)) >= {"name", "tags", "n"} and r.closed_early for r in results)
    results, requests = decode(shortest - 1)  # no room for any valid object: the rows are not steered
    assert not any(request.grammar.completed for request in requests)
    assert not any(r.closed_early for r in results)


def test_a_structured_call_at_a_small_cap_returns_a_valid_object_closed_early(policy):
    # the shortest Note, {"name": "", "tags": [], "n": 0}, takes 21 of the tiny tokenizer's tokens
    for seed in range(6):
        llm = ChatPolicy(model="tiny", max_tokens=24, temperature=1.0, seed=seed)
        out = llm.with_structured_output(Note, include_raw=True).invoke("write a note")
        assert out["parsing_error"] is None and isinstance(out["parsed"], Note), out["raw"].content
        assert out["raw"].response_metadata.get("closed_early") is True


def test_closed_early_calls_record_unmasked_logprobs_and_zero_masked_ones_for_forced_tokens(policy):
    ids = prompt(policy, "note")
    params = SamplingParams(temperature=0.7, max_new_tokens=26, seed=1)
    record = policy.generate(ids, params, constraint=Constraint.json_schema(NOTE))
    assert record.extra["closed_early"] is True and set(loads(record.text)) >= {"name", "tags", "n"}
    # Recompute from the weights: log_softmax(logits / T) at each completion position, no mask.
    with torch.no_grad():
        logits = policy.model(torch.tensor([ids + record.completion_ids])).logits[0, len(ids) - 1 : -1]
    unmasked = torch.log_softmax(logits.float() / 0.7, -1)
    unmasked = unmasked.gather(-1, torch.tensor(record.completion_ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(record.logprobs), unmasked, atol=1e-4)
    masked = torch.tensor(record.extra["masked_logprobs"])
    assert (masked >= unmasked - 1e-4).all()
    assert ((masked == 0) & (unmasked < -1e-3)).any()  # a forced token: certain under the mask only


def test_an_unsteered_call_says_nothing_of_closing(policy):
    record = policy.generate(
        prompt(policy), SamplingParams(max_new_tokens=200, seed=0), constraint=Constraint.json_object()
    )
    assert "closed_early" not in record.extra and "closed_early" not in record.to_dict()["extra"]


class FakeGrammar:
    """A grammar whose plans are given: `plans[None]` from the current state, `plans[token]` after token."""

    def __init__(self, plans: dict[int | None, list[int] | None]) -> None:
        self.plans, self.steps, self.calls = plans, 0, 0

    def closing(self, after: int | None = None) -> list[int] | None:
        self.calls += 1
        return self.plans.get(after)


def test_rows_far_from_their_cap_recompute_their_plan_only_every_window_tokens():
    grammar = FakeGrammar({None: [1, 2, 3], 5: [1, 2, 3]})
    closer = BudgetCloser(grammar, stop_ids=[0])
    for step in range(2 * WINDOW):
        assert closer.choose(5, remaining=100 - step) == 5
        grammar.steps += 1
    assert grammar.calls == 2  # at the first step and WINDOW steps later
    near = len(grammar.plans[None]) + WINDOW
    grammar.calls = 0
    for step in range(4):
        assert closer.choose(5, remaining=near - step) == 5
        grammar.steps += 1
    assert grammar.calls == 4 + 1  # near: the plan after each sampled token (and one refresh on entering)
    assert not closer.closed_early


def test_a_grammar_the_search_cannot_close_is_tried_again_only_every_window_tokens():
    grammar = FakeGrammar({})  # no plan, from any state
    closer = BudgetCloser(grammar, stop_ids=[0])
    for step in range(2 * WINDOW):
        assert closer.choose(5, remaining=2 * WINDOW - step) == 5
        grammar.steps += 1
    assert grammar.calls == 2 and not closer.closed_early


def test_a_token_that_would_leave_no_room_to_close_is_replaced_by_the_plans_next_token():
    grammar = FakeGrammar({None: [1, 2, 3], 5: [4] * 5, 6: [3], 2: [3]})
    closer = BudgetCloser(grammar, stop_ids=[0])
    assert closer.choose(6, remaining=4) == 6 and not closer.closed_early  # its plan [3] fits in 3
    grammar.steps += 1
    assert closer.choose(5, remaining=3) == 3  # [4] * 5 does not fit in 2: the plan's next token instead
    assert closer.closed_early
    grammar.steps += 1
    assert closer.choose(0, remaining=2) == 0  # ending is always allowed
    complete = BudgetCloser(FakeGrammar({None: [], 5: None}), stop_ids=[0, 9])
    assert complete.choose(5, remaining=3) == 0  # complete already and the token would reopen it: stop
    late = BudgetCloser(FakeGrammar({None: [1, 2, 3], 5: None}), stop_ids=[0])
    assert late.choose(5, remaining=2) == 5 and not late.closed_early  # no room to close anyway


def test_rollouts_mark_closed_early_turns_count_them_and_treat_them_as_over_length(policy):
    structured = ChatPolicy(model="tiny", max_tokens=24, temperature=1.0).with_structured_output(
        Note, include_raw=True
    )

    def note(state: MessagesState):
        return {"messages": [structured.invoke(state["messages"])["raw"]]}

    builder = StateGraph(MessagesState)
    builder.add_node("note", note, metadata={"role": "writer"})
    builder.add_edge(START, "note")
    builder.add_edge("note", END)
    inputs = [{"messages": [HumanMessage("write a note")]}] * 2
    episodes, summary = run_episodes(builder.compile(), inputs, [{"sampling_seed": s} for s in range(2)])
    turns = [t for e in episodes for t in e.turns]
    assert all(t.metadata.get("closed_early") is True for t in turns)
    assert summary.closed_early == 2 and "closed early 2" in summary.line()
    assert mark_degenerate(episodes, DegenerateSettings())["degenerate_over_length"] == 2
    # one that closed with room to spare still ends "stop": closed early, it is the turn that would have been cut
    closed = Turn("writer", "note", "{}", [1], [2, 3], [-1.0, -1.0], finish_reason="stop")
    closed.metadata["closed_early"] = True
    assert degenerate_reason(closed, [], DegenerateSettings()) == "over_length"
