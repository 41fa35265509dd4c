"""Werewolf rule options: the `rules` object of a config file, as a validated dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def _choice(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {list(allowed)}, got {value!r}")


@dataclass(frozen=True)
class WerewolfRules:
    """Rule options of one Werewolf variant (the `rules` object of a config file)."""

    discussion_rounds: int = field(
        default=1, metadata={"help": "Public rounds per day; all speak once each."}
    )
    werewolf_discussion_rounds: int = field(
        default=1, metadata={"help": "Rounds of the werewolves' private chat before their kill (0 skips it)."}
    )
    werewolf_disagreement: str = field(
        default="random",
        metadata={
            "help": "The most-voted KILL target is attacked; a tie between targets goes to a seeded random one "
            "('random'), to the earliest-seated werewolf who voted ('first'), or to nobody ('no_kill')."
        },
    )
    exile: str = field(
        default="plurality",
        metadata={
            "help": "Who the day vote exiles: 'plurality' (the most-voted player; a tie follows vote_tie) or "
            "'majority' (the most-voted player only with votes from more than half of the living players, "
            "as in Werewolf Arena; otherwise nobody)."
        },
    )
    vote_tie: str = field(
        default="no_exile",
        metadata={
            "help": "Day vote tie under plurality exile: 'no_exile' (nobody leaves) or 'random' (seeded)."
        },
    )
    fallback: str = field(
        default="random",
        metadata={
            "help": "Illegal or unparsable action: 'random' (seeded random legal target) or 'abstain'. "
            "The witch always falls back to PASS so that a fallback never spends a potion."
        },
    )
    witch_can_self_save: bool = field(default=True, metadata={"help": "May the witch save herself?"})
    doctor_can_self_protect: bool = field(default=True, metadata={"help": "May the doctor protect himself?"})
    guard_can_self_protect: bool = field(default=True, metadata={"help": "May the guard protect himself?"})
    reveal_role_on_death: bool = field(default=False, metadata={"help": "Announce a dead player's role."})
    shuffle_roles: bool = field(
        default=False, metadata={"help": "Deal the roster's roles anew from the seed."}
    )
    max_rounds: int = field(default=10, metadata={"help": "Night+day cycles before the game is a draw."})
    max_speech_chars: int = field(default=600, metadata={"help": "Longer speeches are cut (and marked)."})
    win_reward: float = field(default=1.0, metadata={"help": "Reward of each player of the winning team."})
    loss_reward: float = field(default=-1.0, metadata={"help": "Reward of each player of the losing team."})
    draw_reward: float = field(default=0.0, metadata={"help": "Reward of everyone when max_rounds is hit."})
    elimination_discount: float = field(
        default=0.9, metadata={"help": "Factor in [0, 1] shrinking a winner's reward per round missed."}
    )
    behaviour_rewards: float = field(
        default=0.0,
        metadata={
            "help": "Size b of the behaviour-level rewards (MARO): each vote, kill, inspection, protection, save "
            "and poison gets +b or -b by its effect on the player's team (see werewolf.behaviour); 0: none."
        },
    )
    discount_scheme: str = field(
        default="exponential",
        metadata={"help": "'exponential' (d**n), 'linear' (max(0, 1-(1-d)*n)) or 'none'; n = rounds missed."},
    )

    def __post_init__(self) -> None:
        for name in ("discussion_rounds", "werewolf_discussion_rounds", "max_rounds", "max_speech_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
        if self.max_rounds < 1 or self.max_speech_chars < 1:
            raise ValueError("max_rounds and max_speech_chars: expected at least 1")
        _choice(self.werewolf_disagreement, ("random", "first", "no_kill"), "werewolf_disagreement")
        _choice(self.exile, ("plurality", "majority"), "exile")
        _choice(self.vote_tie, ("no_exile", "random"), "vote_tie")
        _choice(self.fallback, ("random", "abstain"), "fallback")
        _choice(self.discount_scheme, ("exponential", "linear", "none"), "discount_scheme")
        for name in ("witch_can_self_save", "doctor_can_self_protect", "guard_can_self_protect"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        for name in ("reveal_role_on_death", "shuffle_roles"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        for name in ("win_reward", "loss_reward", "draw_reward", "elimination_discount", "behaviour_rewards"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name}: expected a number, got {value!r}")
        if not (math.isfinite(self.behaviour_rewards) and self.behaviour_rewards >= 0):
            raise ValueError(f"behaviour_rewards: expected a number >= 0, got {self.behaviour_rewards}")
        if not 0.0 <= self.elimination_discount <= 1.0:
            raise ValueError(
                f"elimination_discount: expected a number in [0, 1], got {self.elimination_discount}"
            )
