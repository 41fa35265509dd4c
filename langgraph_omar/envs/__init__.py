"""Social environments behind one interface (`environment.Environment`) and one registry (`registry`).

- `negotiation/`: buyer/seller bargaining and Deal-or-No-Deal item splits (judge-free).
- `sotopia/`: SOTOPIA's social scenarios, scored by an LLM judge.
- `werewolf/`: the social-deduction game, roster and rules from a config file.

Subpackages are imported on demand (`load_environment("werewolf")`): this package imports nothing, so loading
one environment never pulls in another's dependencies. docs/environments.md documents the interface.
"""
