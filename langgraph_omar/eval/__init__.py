"""Evaluation: the arena protocol (`arena`: the tested adapter against an opponent, seat by seat, on the same
scenario seeds), its statistics (`stats`: paired intervals) and the report (`report`: JSON, PNG plots, HTML)."""
