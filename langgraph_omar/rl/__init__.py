"""Reinforcement learning: advantages, losses and log-probabilities (pure functions), trainer and loop."""
