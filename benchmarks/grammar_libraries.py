"""Grammar libraries compared for per-row token masks inside a batch: xgrammar, llguidance, outlines-core.

For each library (those installed: `pip install xgrammar llguidance outlines-core`) and two schemas (the
SOTOPIA judge's 7 bounded integers; a tool call with a number, an enum, a boolean, a list and a string), on the
default model's tokenizer: the compile time, then microseconds per row and token for filling the mask and
advancing the matcher, for batch 1, 8 and 32, rows filled one by one ("seq") or through the library's threaded
batch API ("par"); random logits pick the tokens; best of 5. The results chose xgrammar (see
`langgraph_omar/serving/constraints.py`).
"""

import json
import sys
import time

import torch
from transformers import AutoTokenizer

from langgraph_omar.serving.models import DEFAULT_MODEL, resolve_model_path

TOK = AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))
V = 49152
EOS = TOK.eos_token_id

JUDGE = {
    "type": "object",
    "properties": {
        n: {"type": "integer", "minimum": lo, "maximum": hi}
        for n, lo, hi in [
            ("believability", 0, 10),
            ("relationship", -5, 5),
            ("knowledge", 0, 10),
            ("secret", -10, 0),
            ("social_rules", -10, 0),
            ("financial_and_material_benefits", -5, 5),
            ("goal", 0, 10),
        ]
    },
    "required": [
        "believability",
        "relationship",
        "knowledge",
        "secret",
        "social_rules",
        "financial_and_material_benefits",
        "goal",
    ],
    "additionalProperties": False,
}
TOOL = {
    "type": "object",
    "properties": {
        "name": {"const": "make_offer"},
        "arguments": {
            "type": "object",
            "properties": {
                "price": {"type": "number"},
                "currency": {"enum": ["USD", "EUR"]},
                "final": {"type": "boolean"},
                "items": {"type": "array", "items": {"type": "string"}},
                "note": {"type": "string"},
            },
            "required": ["price", "currency", "final", "items", "note"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
SEQ = False
SCHEMAS = {"judge": JUDGE, "tool": TOOL}


def bitmask_to_bool(mask: torch.Tensor) -> torch.Tensor:
    bits = (mask[:, :, None] >> torch.arange(32, dtype=torch.int32)) & 1
    return bits.reshape(mask.shape[0], -1)[:, :V].bool()


class XGR:
    name = "xgrammar"

    def __init__(self):
        import xgrammar as xgr

        self.xgr = xgr
        t = time.perf_counter()
        info = xgr.TokenizerInfo.from_huggingface(TOK, vocab_size=V)
        self.compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        self.setup = time.perf_counter() - t
        self.batch = xgr.BatchGrammarMatcher(max_threads=2)

    def compile(self, schema):
        return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)

    def matcher(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, matchers, bitmask):
        if len(matchers) == 1 or SEQ:
            for i, m in enumerate(matchers):
                m.fill_next_token_bitmask(bitmask, i)
        else:
            self.batch.batch_fill_next_token_bitmask(matchers, bitmask)

    def advance(self, m, tok):
        assert m.accept_token(tok)

    def done(self, m):
        return m.is_terminated()


class LLG:
    name = "llguidance"

    def __init__(self):
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg = llguidance
        t = time.perf_counter()
        self.tok = llguidance.hf.from_tokenizer(TOK, n_vocab=V)
        self.setup = time.perf_counter() - t
        self.executor = llguidance.LLExecutor(num_threads=2)

    def compile(self, schema):
        g = self.llg.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
        )
        return g

    def matcher(self, grammar):
        m = self.llg.LLMatcher(self.tok, grammar)
        assert not m.is_error(), m.get_error()
        return m

    def fill(self, matchers, bitmask):
        if len(matchers) == 1 or SEQ:
            for i, m in enumerate(matchers):
                self.llg.torch.fill_next_token_bitmask(m, bitmask, i)
        else:
            self.llg.torch.fill_next_token_bitmask_par(
                self.executor, [(m, i) for i, m in enumerate(matchers)], bitmask
            )

    def advance(self, m, tok):
        assert m.consume_token(tok), m.get_error()

    def done(self, m):
        return m.is_stopped()


def byte_level_vocab():
    """Each token's bytes (GPT-2's byte-to-unicode table, inverted): outlines-core takes a bytes vocabulary."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    dec = {chr(c): b for b, c in zip(bs, cs, strict=True)}
    out = {}
    for token, i in TOK.get_vocab().items():
        if i == EOS or token in TOK.all_special_tokens:
            continue
        try:
            out.setdefault(bytes(dec[c] for c in token), []).append(i)
        except KeyError:
            continue
    return out


class OC:
    name = "outlines-core"

    def __init__(self):
        import outlines_core as oc

        self.oc = oc
        t = time.perf_counter()
        self.vocab = oc.Vocabulary(EOS, byte_level_vocab())
        self.setup = time.perf_counter() - t

    def compile(self, schema):
        regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema), whitespace_pattern="")
        return self.oc.Index(regex, self.vocab)

    def matcher(self, index):
        return self.oc.Guide(index)

    def fill(self, matchers, bitmask):
        for i, g in enumerate(matchers):
            row = bitmask[i]
            g.write_mask_into(row.data_ptr(), row.numel(), 4)

    def advance(self, g, tok):
        g.advance(tok, return_tokens=False)

    def done(self, g):
        return g.is_finished()


def run(lib, compiled, batch, steps=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    matchers = [lib.matcher(compiled) for _ in range(batch)]
    active = list(range(batch))
    fill_t = adv_t = apply_t = 0.0
    n = 0
    for _ in range(steps):
        if not active:
            break
        bitmask = torch.full((len(active), (V + 31) // 32), -1, dtype=torch.int32)
        logits = torch.randn(len(active), V, generator=gen)
        t0 = time.perf_counter()
        lib.fill([matchers[i] for i in active], bitmask)
        t1 = time.perf_counter()
        allowed = bitmask_to_bool(bitmask)
        logits.masked_fill_(~allowed, float("-inf"))
        toks = logits.argmax(-1).tolist()
        t2 = time.perf_counter()
        keep = []
        for row, i in enumerate(active):
            lib.advance(matchers[i], toks[row])
            if toks[row] != EOS and not lib.done(matchers[i]):
                keep.append(i)
        t3 = time.perf_counter()
        fill_t += t1 - t0
        apply_t += t2 - t1
        adv_t += t3 - t2
        n += len(active)
        active = keep
    return fill_t, apply_t, adv_t, n


def main():
    libs = {"xgrammar": XGR, "llguidance": LLG, "outlines-core": OC}
    chosen = sys.argv[1:] or list(libs)
    for name in chosen:
        try:
            lib = libs[name]()
        except ImportError:
            print(f"{name}: not installed")
            continue
        print(f"{name}: tokenizer setup {lib.setup * 1000:.0f} ms")
        for sname, schema in SCHEMAS.items():
            t = time.perf_counter()
            compiled = lib.compile(schema)
            lib.matcher(compiled)
            ct = time.perf_counter() - t
            line = f"  {sname}: compile {ct * 1000:.0f} ms;"
            global SEQ
            for batch, SEQ in ((1, False), (8, True), (8, False), (32, True), (32, False)):
                best = None
                for rep in range(5):
                    f, a, d, n = run(lib, compiled, batch, seed=rep)
                    per = (f + d) / n * 1e6
                    best = min(best or per, per)
                line += f" B={batch}{'seq' if SEQ else 'par'}: {best:.0f};"
            print(line, flush=True)


if __name__ == "__main__":
    main()
