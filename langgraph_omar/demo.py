"""The main job behind `make demo`: self-play negotiation on the default model, traced and exported."""

from __future__ import annotations

from pathlib import Path

from langgraph_omar.chat_model import ChatPolicy
from langgraph_omar.envs import negotiation
from langgraph_omar.rollout import run_episodes
from langgraph_omar.trajectory import Episode
from langgraph_omar.trajectory_io import write_episodes


def show(episode: Episode) -> None:
    print(f"--- episode {episode.episode_id} (rewards {episode.rewards})")
    for turn in episode.turns:
        print(f"[{turn.role}] {turn.text.strip()}")


def run_demo(out: Path, episodes: int = 8, seed: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = ChatPolicy(temperature=0.7, max_tokens=48)
    graph = negotiation.build_graph(model=model)
    seeds = range(seed, seed + episodes)
    inputs = [negotiation.sample_input(s) for s in seeds]
    metadata = [{"seed": s, "scenario_id": f"negotiation-{s}"} for s in seeds]
    print(f"self-play: {episodes} negotiation episodes in parallel on {model.model_name}")
    played, summary = run_episodes(graph, inputs, metadata)
    for episode in played[:2]:
        show(episode)
    trajectories = out / "trajectories.jsonl"
    write_episodes(trajectories, played, append=False)
    print(summary.line())
    print(f"trajectories: {trajectories}")
