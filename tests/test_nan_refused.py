"""NaN is refused wherever a number enters: sampling temperatures (the engine, ChatPolicy, the dev server's
settings) and trajectory files (the reader refuses what the writer refuses); duplicate ids are read with a
warning."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from langgraph_omar.chat_model import ChatPolicy
from langgraph_omar.dev_server import serving_settings
from langgraph_omar.errors import OmarError
from langgraph_omar.serving.sampling import SamplingParams
from langgraph_omar.trajectory import Episode, TrajectoryFileError, read_episodes, write_episodes
from langgraph_omar.trajectory.validation import DuplicateEpisodeWarning


@pytest.mark.parametrize("temperature", [math.nan, math.inf, -1.0])
def test_sampling_params_refuse_a_temperature_that_is_not_a_finite_number_at_least_0(
    temperature: float,
) -> None:
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        SamplingParams(temperature=temperature)


def test_chat_policy_refuses_a_nan_temperature(policy: Any) -> None:
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0, got nan"):
        ChatPolicy(model="tiny", temperature=math.nan, max_tokens=4).invoke("hello")


@pytest.mark.parametrize(
    ("config", "environ", "problem"),
    [
        ({"temperature": "nan"}, {}, "configurable 'temperature': temperature must be a finite number >= 0"),
        (
            {"temperature": float("nan")},
            {},
            "configurable 'temperature': temperature must be a finite number",
        ),
        ({}, {"OMAR_TEMPERATURE": "inf"}, "OMAR_TEMPERATURE: temperature must be a finite number >= 0"),
        ({"max_tokens": 0}, {}, "configurable 'max_tokens': max_tokens must be >= 1"),
    ],
)
def test_dev_server_settings_refuse_nan_and_nonsense(
    config: dict[str, Any], environ: dict[str, str], problem: str
) -> None:
    with pytest.raises(OmarError, match=problem):
        serving_settings({"configurable": config}, environ)


def _rewrite_first_reward(path: Path, value: float) -> None:
    if path.suffix == ".jsonl":
        data = json.loads(path.read_text())
        data["rewards"][0]["value"] = value  # schema 2: rewards are [{role, value}] in both formats
        path.write_text(json.dumps(data) + "\n")  # Python writes NaN as the bare word NaN
    else:
        rows = pq.read_table(path).to_pylist()
        rows[0]["rewards"][0]["value"] = value
        pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_the_reader_refuses_a_non_finite_reward_the_writer_refuses(
    tmp_path: Path, suffix: str, value: float
) -> None:
    path = tmp_path / f"e{suffix}"
    with pytest.raises(ValueError, match="non-finite"):
        write_episodes(path, [Episode("e", rewards={"a": value})])
    write_episodes(path, [Episode("e", rewards={"a": 1.0})])
    _rewrite_first_reward(path, value)
    with pytest.raises(TrajectoryFileError, match="line 1|row 1"):
        read_episodes(path)


def test_nan_anywhere_in_a_jsonl_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    write_episodes(path, [Episode("e", reward_dimensions={"a": {"goal": 1.0}})])
    path.write_text(path.read_text().replace('"value":1.0', '"value":NaN'))
    with pytest.raises(TrajectoryFileError, match="line 1: not valid JSON \\(NaN is not a JSON number"):
        read_episodes(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_duplicate_episode_ids_are_read_back_with_a_warning(tmp_path: Path, suffix: str) -> None:
    first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    write_episodes(first, [Episode("x", rewards={"a": 1.0}), Episode("y")])
    write_episodes(second, [Episode("x", rewards={"a": 2.0})])
    joined = tmp_path / f"joined{suffix}"
    if suffix == ".jsonl":
        joined.write_bytes(first.read_bytes() + second.read_bytes())  # files joined by hand
    else:
        pq.write_table(pa.concat_tables([pq.read_table(first), pq.read_table(second)]), joined)
    with pytest.warns(DuplicateEpisodeWarning, match="episode id 'x' appears again \\(episodes 1 and 3"):
        episodes = read_episodes(joined)
    assert [(e.episode_id, e.rewards) for e in episodes] == [("x", {"a": 1.0}), ("y", {}), ("x", {"a": 2.0})]
