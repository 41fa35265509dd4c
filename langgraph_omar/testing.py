"""Tiny models for tests: a few-thousand-parameter Llama with a tokenizer trained on the spot.

Nothing is downloaded. Users can test their own graphs the same way:
`SharedPolicy.register(tiny_policy("tiny"))`, then `ChatPolicy(model="tiny")`.
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from langgraph_omar.serving.engine import SharedPolicy

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "Hello there, how are you today? I would like to buy the bike for one hundred dollars.",
    "OFFER 120. ACCEPT. REJECT. WALK AWAY. VOTE alice. KILL bob. INSPECT carol. PASS. SAVE. POISON dave.",
    'The quick brown fox jumps over the lazy dog 0123456789 {"name": "x", "age": 3} yes no maybe',
    "system user assistant seller buyer werewolf villager seer witch doctor guard day night",
]


@functools.cache
def tiny_tokenizer(vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML special tokens, trained on a few sentences (deterministic)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model(seed: int = 0, hidden_size: int = 32, layers: int = 2, context: int = 512) -> LlamaForCausalLM:
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def tiny_policy(name: str = "tiny", seed: int = 0, register: bool = True, **kwargs: object) -> SharedPolicy:
    """A SharedPolicy over a fresh tiny model, registered under `name` so `ChatPolicy(model=name)` uses it."""
    policy = SharedPolicy(name, tiny_model(seed), tiny_tokenizer(), **kwargs)  # type: ignore[arg-type]
    if register:
        SharedPolicy.register(policy)
    return policy
