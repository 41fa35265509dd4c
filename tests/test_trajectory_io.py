"""Trajectory files: round trips, idempotent appends, crash safety (a real kill -9), corrupt input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import fields
from pathlib import Path

import pytest

from langgraph_omar.trajectory import (
    PARQUET_SCHEMA,
    SCHEMA_VERSION,
    Episode,
    TornLineWarning,
    TrajectoryFileError,
    Turn,
    iter_episodes,
    read_episodes,
    to_trl_conversations,
    to_trl_records,
    write_episodes,
)
from langgraph_omar.trajectory.record import episode_record
from langgraph_omar.trajectory.validation import _VALUE_CHECKS

REPO = Path(__file__).parents[1]
DATA = Path(__file__).parent / "data"
FORMATS = ["episodes.jsonl", "episodes.parquet"]


def make_turn(role: str, n_completion: int = 3, **extra: object) -> Turn:
    return Turn(
        role=role,
        node=f"{role}_node",
        text=f"{role} says héllo ✓",
        prompt_ids=[1, 2, 3, 4],
        completion_ids=list(range(10, 10 + n_completion)),
        logprobs=[-0.25 * (k + 1) for k in range(n_completion)],
        messages=[{"role": "user", "content": f"{role}, your turn"}],
        **extra,  # type: ignore[arg-type]
    )


def make_episode(episode_id: str, **extra: object) -> Episode:
    return Episode(
        episode_id=episode_id,
        turns=[
            make_turn("buyer", step=1, metadata={"observation": "private", "n": 1}),
            make_turn("seller", n_completion=2, step=2, adapter="lora-a", adapter_version=3, reward=0.5),
            make_turn("buyer", n_completion=0, step=3, degenerate="empty", fallback="pass"),
            Turn(
                role="seller",
                node="seller_node",
                text="A hosted model's reply",
                prompt_ids=[],
                completion_ids=[],
                logprobs=[],
                step=4,
                source="model",
                model="gpt-x",
                messages=[{"role": "system", "content": "You sell."}, {"role": "user", "content": "Hi"}],
                metadata={"tool_calls": []},
            ),
            Turn(
                "buyer",
                "buyer_node",
                "a person's move",
                [],
                [],
                [],
                step=5,
                source="human",
                messages=[{"role": "user", "content": "Your move."}],
            ),
        ],
        rewards={"buyer": 1.0, "seller": -0.5},
        reward_dimensions={"buyer": {"goal": 7.0, "believability": 8.5}, "seller": {"goal": 2.0}},
        metadata={"scenario_id": "s1", "group_id": "g0", "seed": 7, "tags": ["a", "b"]},
        **extra,  # type: ignore[arg-type]
    )


def jsonl_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_raw_jsonl(path: Path, records: list[object], tail: str = "\n") -> None:
    path.write_text("\n".join(json.dumps(r) for r in records) + tail, encoding="utf-8")


# ------------------------------------------------------------------------------------ round trips, appends


@pytest.mark.parametrize("name", FORMATS)
def test_round_trip_keeps_every_field(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    episodes = [make_episode("e1"), make_episode("e2", status="failed", error="judge timed out")]
    assert write_episodes(path, episodes) == 2
    assert read_episodes(path) == episodes
    assert list(iter_episodes(path)) == episodes


def test_jsonl_line_starts_with_version_and_id(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_episodes(path, [make_episode("e1")])
    line = path.read_text(encoding="utf-8")
    assert line.startswith('{"schema_version":3,"episode_id":"e1",')
    assert line.endswith("\n") and line.count("\n") == 1
    assert list(json.loads(line))[-1] == "turns"
    assert json.loads(line) == episode_record(make_episode("e1"))


def test_jsonl_lines_and_parquet_rows_are_the_same_records(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    episodes = [make_episode("a"), make_episode("b", status="failed", error="x")]
    write_episodes(tmp_path / "e.jsonl", episodes)
    write_episodes(tmp_path / "e.parquet", episodes)
    rows = pq.read_table(tmp_path / "e.parquet").to_pylist()
    assert jsonl_lines(tmp_path / "e.jsonl") == rows  # same keys, same shapes, same values
    assert rows[0]["rewards"] == [{"role": "buyer", "value": 1.0}, {"role": "seller", "value": -0.5}]
    assert rows[0]["reward_dimensions"][0] == {"role": "buyer", "name": "goal", "value": 7.0}
    assert json.loads(rows[0]["metadata"]) == episodes[0].metadata
    assert rows[0]["turns"][3]["messages"][1] == {"role": "user", "content": "Hi"}


def test_parquet_to_jsonl_to_parquet_gives_identical_episodes(tmp_path: Path) -> None:
    episodes = [make_episode("a"), make_episode("b", status="failed", error="x")]
    write_episodes(tmp_path / "first.parquet", episodes)
    write_episodes(tmp_path / "middle.jsonl", read_episodes(tmp_path / "first.parquet"))
    write_episodes(tmp_path / "last.parquet", read_episodes(tmp_path / "middle.jsonl"))
    assert read_episodes(tmp_path / "middle.jsonl") == episodes
    assert read_episodes(tmp_path / "last.parquet") == episodes
    assert (tmp_path / "first.parquet").read_bytes() == (tmp_path / "last.parquet").read_bytes()


@pytest.mark.parametrize("name", ["trajectory_v1.jsonl", "trajectory_v1.parquet"])
def test_version_1_files_are_read_and_upgraded(tmp_path: Path, name: str) -> None:
    # Files written by schema version 1 (tests/data, made with the version 1 writer from the first three turns
    # of make_episode and metadata["model"] = "tiny"): every turn was the policy's own.
    episodes = read_episodes(DATA / name)
    expected = [make_episode("v1-a"), make_episode("v1-b", status="failed", error="judge timed out")]
    for episode in expected:
        del episode.turns[3:]
        for turn in episode.turns:
            turn.model = "tiny" if episode.episode_id == "v1-a" else None
            turn.messages = []
    expected[0].metadata["model"] = "tiny"
    assert episodes == expected
    assert all(e.schema_version == SCHEMA_VERSION for e in episodes)
    copy = tmp_path / name
    copy.write_bytes((DATA / name).read_bytes())
    assert write_episodes(copy, [make_episode("v2")]) == 1  # appending to a version 1 file
    assert read_episodes(copy) == [*expected, make_episode("v2")]


@pytest.mark.parametrize("name", FORMATS)
def test_rerun_appends_only_missing_episodes(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_episodes(path, [make_episode("a"), make_episode("b")]) == 2
    # "b" is in the file already: only "c" is written.
    assert write_episodes(path, [make_episode("b"), make_episode("c")]) == 1
    assert write_episodes(path, [make_episode("a"), make_episode("c")]) == 0
    assert [ep.episode_id for ep in read_episodes(path)] == ["a", "b", "c"]


def test_appends_by_another_writer_and_rewrites_in_place_are_noticed(tmp_path: Path) -> None:
    # This process remembers how far it read the file; what others did to the file must still count.
    path = tmp_path / "t.jsonl"
    write_episodes(path, [make_episode("a"), make_episode("b")])
    with open(path, "ab") as other_writer:
        other_writer.write(json.dumps(episode_record(make_episode("c"))).encode() + b"\n")
    assert write_episodes(path, [make_episode("c"), make_episode("d")]) == 1  # "c" is there already

    with open(path, "r+b") as in_place:  # same inode, new content, longer than what was read
        in_place.truncate(0)
        in_place.write(
            b"\n".join(json.dumps(episode_record(make_episode(i))).encode() for i in "wxyzv") + b"\n"
        )
    assert write_episodes(path, [make_episode("a"), make_episode("w")]) == 1  # "a" is gone, "w" is there
    assert [ep.episode_id for ep in read_episodes(path)] == ["w", "x", "y", "z", "v", "a"]


@pytest.mark.parametrize("name", FORMATS)
def test_append_false_replaces_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_episodes(path, [make_episode("a"), make_episode("b")])
    assert write_episodes(path, [make_episode("z")], append=False) == 1
    assert [ep.episode_id for ep in read_episodes(path)] == ["z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, f".{name}.lock"])  # no temp files left


@pytest.mark.parametrize("name", FORMATS)
def test_writer_refuses_bad_episodes_and_leaves_the_file_alone(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_episodes(path, [make_episode("a")])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="episode id 'b' appears twice"):
        write_episodes(path, [make_episode("b"), make_episode("b")])
    nan_episode = make_episode("n")
    nan_episode.rewards["buyer"] = float("nan")
    with pytest.raises(ValueError, match=r"episode 'n': non-finite value in rewards"):
        write_episodes(path, [nan_episode])
    bad_logprob = make_episode("l")
    bad_logprob.turns[1].logprobs[0] = float("-inf")
    with pytest.raises(ValueError, match=r"episode 'l': non-finite value in turn 1 logprobs"):
        write_episodes(path, [bad_logprob])
    unserializable = make_episode("u")
    unserializable.metadata["model"] = object()
    with pytest.raises(ValueError, match="episode 'u'.*cannot be written as JSON"):
        write_episodes(path, [unserializable])
    assert path.read_bytes() == before


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown trajectory format; expected a path ending in"):
        write_episodes(tmp_path / "episodes.csv", [make_episode("a")])


def test_parquet_schema_covers_the_dataclasses() -> None:
    # A new field in trajectory.py must get a Parquet column and a value check, or files silently drop it.
    assert set(PARQUET_SCHEMA.names) == {f.name for f in fields(Episode)}
    turn_struct = PARQUET_SCHEMA.field("turns").type.value_type
    assert {turn_struct.field(i).name for i in range(turn_struct.num_fields)} == {
        f.name for f in fields(Turn)
    }
    for f in [*fields(Episode), *fields(Turn)]:
        assert str(f.type) in _VALUE_CHECKS, f.name


# ----------------------------------------------------------------------------------------------- datasets


@pytest.mark.parametrize(("name", "builder"), [("e.jsonl", "json"), ("e.parquet", "parquet")])
def test_datasets_loads_both_formats(tmp_path: Path, name: str, builder: str) -> None:
    datasets = pytest.importorskip("datasets")
    path = tmp_path / name
    write_episodes(path, [make_episode("a"), make_episode("b")])
    ds = datasets.load_dataset(
        builder, data_files=str(path), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert ds.num_rows == 2
    assert ds[1]["episode_id"] == "b"
    assert ds[0]["rewards"] == [{"role": "buyer", "value": 1.0}, {"role": "seller", "value": -0.5}]
    first_turn = ds[0]["turns"][0]
    if isinstance(ds[0]["turns"], dict):  # older datasets versions present list<struct> as a dict of lists
        first_turn = {k: v[0] for k, v in ds[0]["turns"].items()}
    assert first_turn["completion_ids"] == [10, 11, 12]
    assert first_turn["logprobs"] == [-0.25, -0.5, -0.75]


def test_datasets_loads_both_formats_into_the_same_rows(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    episodes = [make_episode("a"), make_episode("b", status="failed", error="x")]
    loaded = []
    for name, builder in (("e.jsonl", "json"), ("e.parquet", "parquet")):
        write_episodes(tmp_path / name, episodes)
        ds = datasets.load_dataset(
            builder, data_files=str(tmp_path / name), split="train", cache_dir=str(tmp_path / "cache")
        )
        loaded.append(ds.to_list())
    assert loaded[0] == loaded[1]


# ---------------------------------------------------------------------------------------------- torn lines


def test_torn_last_line_is_skipped_with_a_warning_then_repaired_by_the_next_writer(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_episodes(path, [make_episode("a"), make_episode("b"), make_episode("c")])
    data = path.read_bytes()
    third_line_start = data.index(b'{"schema_version":3,"episode_id":"c"')
    path.write_bytes(data[: third_line_start + 50])  # a writer killed 50 bytes into line 3
    with pytest.warns(
        TornLineWarning, match=r"t\.jsonl line 3: skipped 1 torn last line \(50 bytes.*after 2 complete"
    ):
        assert [ep.episode_id for ep in read_episodes(path)] == ["a", "b"]
    with pytest.warns(TornLineWarning, match=r"removed a torn last line \(50 bytes\)"):
        # "c" never landed whole, so the re-run writes it again.
        assert write_episodes(path, [make_episode("c"), make_episode("d")]) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [ep.episode_id for ep in read_episodes(path)] == ["a", "b", "c", "d"]


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_raw_jsonl(path, [episode_record(make_episode("a"))], tail="")  # e.g. written by an editor
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [ep.episode_id for ep in read_episodes(path)] == ["a"]
        assert write_episodes(path, [make_episode("b")]) == 1
        assert [ep.episode_id for ep in read_episodes(path)] == ["a", "b"]


WRITER_FACTORY = """
from langgraph_omar.trajectory import Episode, Turn

def make_big_episode(i):
    # ~60 kB per line, so that a kill often lands inside a write
    turns = [
        Turn(role=role, node=role, text="word " * 400, prompt_ids=list(range(i, i + 2500)),
             completion_ids=list(range(300)), logprobs=[-(k % 7) / 8 for k in range(300)], step=k)
        for k, role in enumerate(["buyer", "seller", "buyer", "seller"])
    ]
    return Episode(f"ep-{i:04d}", turns=turns, rewards={"buyer": 1.0, "seller": -1.0}, metadata={"i": i})
"""

# The package __init__ imports torch (seconds); the writers need only two modules, so they get a bare package.
BARE_PACKAGE = f"""
import sys, types
package = types.ModuleType("langgraph_omar")
package.__path__ = [{str(REPO / "langgraph_omar")!r}]
sys.modules["langgraph_omar"] = package
"""
WRITER_SCRIPT = f"""
{BARE_PACKAGE}
{WRITER_FACTORY}
from langgraph_omar.trajectory import write_episodes
path, total = sys.argv[1], int(sys.argv[2])
for i in range(total):
    write_episodes(path, [make_big_episode(i)])  # one call per episode, as a rollout loop does
"""


@pytest.mark.subprocess
def test_kill_9_mid_export_leaves_whole_episodes_and_rerun_completes(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    total = 200
    command = [sys.executable, "-c", WRITER_SCRIPT, str(path), str(total)]
    writer = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120  # a hang guard, not a timing assertion
    while writer.poll() is None and (not path.exists() or path.stat().st_size < 1_000_000):
        assert time.monotonic() < deadline, "writer produced no output"
        time.sleep(0.005)
    time.sleep(0.05)  # let the writer get somewhere into its next call
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert writer.returncode in (0, -signal.SIGKILL), writer.stderr.read().decode() if writer.stderr else ""

    namespace: dict = {}
    exec(WRITER_FACTORY, namespace)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TornLineWarning)
        survivors = read_episodes(path)  # a corrupt or partial episode would raise here
    assert len(caught) <= 1  # at most the one line being written when the kill came
    assert 0 < len(survivors) <= total
    for episode in survivors:  # every episode whole, byte for byte what was written
        assert episode == namespace["make_big_episode"](int(episode.episode_id[3:]))
    ids = [ep.episode_id for ep in survivors]
    assert ids == [f"ep-{i:04d}" for i in range(len(ids))]

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, check=False)
    assert rerun.returncode == 0, rerun.stderr.decode()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        final = read_episodes(path)
    final_ids = [ep.episode_id for ep in final]
    assert len(final_ids) == total and len(set(final_ids)) == total
    assert final[-1] == namespace["make_big_episode"](total - 1)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


ONE_BIG_WRITE_SCRIPT = f"""
{BARE_PACKAGE}
from langgraph_omar.trajectory import Episode, Turn
from langgraph_omar.trajectory import write_episodes
def episode(name, text):
    return Episode(name, turns=[Turn("a", "a", text, [1], [2], [-0.1])], rewards={{"a": 1.0}})
write_episodes(sys.argv[1], [episode("small", "x")])
big = episode("big", "y" * 40_000_000)
print("writing", flush=True)
write_episodes(sys.argv[1], [big])
"""


@pytest.mark.subprocess
def test_kill_9_inside_one_large_write(tmp_path: Path) -> None:
    # Killed while the kernel copies a 40 MB line, the writer usually leaves a torn line: a real one, not a
    # simulated truncation. Whether the kill lands inside the write is up to the scheduler, so both outcomes
    # are checked: either "big" is whole, or it is reported as torn and the next writer removes it.
    path = tmp_path / "big.jsonl"
    writer = subprocess.Popen(
        [sys.executable, "-c", ONE_BIG_WRITE_SCRIPT, str(path)], cwd=REPO, stdout=subprocess.PIPE
    )
    assert writer.stdout is not None
    assert writer.stdout.readline() == b"writing\n"
    size_before = path.stat().st_size
    deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
    while writer.poll() is None and path.stat().st_size == size_before:
        assert time.monotonic() < deadline, "writer never started the big write"
        time.sleep(0.0005)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TornLineWarning)
        ids = [ep.episode_id for ep in read_episodes(path)]
    torn = [w for w in caught if issubclass(w.category, TornLineWarning)]
    assert (ids, len(torn)) in ((["small"], 1), (["small", "big"], 0))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always", TornLineWarning)
        write_episodes(path, [Episode("after", rewards={"a": 0.0})])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [ep.episode_id for ep in read_episodes(path)] == [*ids, "after"]


# ------------------------------------------------------------------------------------------ corrupt input


def test_bad_json_in_the_middle_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "trajectories.jsonl"
    good = json.dumps(episode_record(make_episode("a")))
    path.write_text(f"{good}\n{good[:40]}\n{good}\n", encoding="utf-8")  # line 2 cut, then more lines
    with pytest.raises(TrajectoryFileError, match=r"trajectories\.jsonl line 2: not valid JSON \("):
        read_episodes(path)
    with pytest.raises(TrajectoryFileError, match=r"line 2: not valid JSON .*refusing to append"):
        write_episodes(path, [make_episode("b")])


def test_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_raw_jsonl(path, [episode_record(make_episode("a")), [1, 2]])
    with pytest.raises(TrajectoryFileError, match=r"t\.jsonl line 2: expected a JSON object, got list"):
        read_episodes(path)


def test_wrong_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    record = episode_record(make_episode("a")) | {"schema_version": SCHEMA_VERSION + 1}
    write_raw_jsonl(path, [record])
    with pytest.raises(
        TrajectoryFileError,
        match=r"t\.jsonl line 1: schema_version 4 is not supported \(.*reads schema_version 1, 2 and 3\)",
    ):
        read_episodes(path)
    del record["schema_version"]
    write_raw_jsonl(path, [record])
    with pytest.raises(TrajectoryFileError, match=r"line 1: missing key 'schema_version'"):
        read_episodes(path)


def test_unknown_and_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    good = episode_record(make_episode("a"))
    write_raw_jsonl(path, [good, good | {"episode_id": "b", "reward": 1.0}])
    with pytest.raises(TrajectoryFileError, match=r"t\.jsonl line 2: unknown episode keys \['reward'\]"):
        read_episodes(path)

    turn_extra = json.loads(json.dumps(good))
    turn_extra["turns"][1]["tokens"] = []
    write_raw_jsonl(path, [turn_extra])
    with pytest.raises(TrajectoryFileError, match=r"line 1: turn 1: unknown keys \['tokens'\]"):
        read_episodes(path)

    missing = json.loads(json.dumps(good))
    del missing["turns"][2]["logprobs"]
    write_raw_jsonl(path, [good, missing])
    with pytest.raises(TrajectoryFileError, match=r"line 2: turn 2: missing key 'logprobs'"):
        read_episodes(path)


def test_logprobs_length_and_types_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    record = json.loads(json.dumps(episode_record(make_episode("a"))))
    record["turns"][0]["logprobs"] = [-0.1]  # 1 logprob for 3 completion ids
    write_raw_jsonl(path, [record])
    with pytest.raises(TrajectoryFileError, match=r"line 1: turn 0: 1 logprobs for 3 completion ids"):
        read_episodes(path)

    record = json.loads(json.dumps(episode_record(make_episode("a"))))
    record["turns"][1]["completion_ids"] = ["10", "11"]
    write_raw_jsonl(path, [record])
    with pytest.raises(
        TrajectoryFileError, match=r"turn 1: key 'completion_ids' should be list\[int\], got list"
    ):
        read_episodes(path)

    record = episode_record(make_episode("a")) | {"rewards": [{"role": "buyer", "value": "high"}]}
    write_raw_jsonl(path, [record])
    with pytest.raises(TrajectoryFileError, match=r"line 1: key 'rewards' should be dict\[str, float\]"):
        read_episodes(path)

    record = episode_record(make_episode("a")) | {"rewards": {"buyer": 1.0}}  # version 1's shape
    write_raw_jsonl(path, [record])
    with pytest.raises(
        TrajectoryFileError, match=r"line 1: key 'rewards' should be a list of \{role, value\}"
    ):
        read_episodes(path)

    record = episode_record(make_episode("a")) | {"metadata": "{not json"}
    write_raw_jsonl(path, [record])
    with pytest.raises(TrajectoryFileError, match=r"line 1: key 'metadata' is not valid JSON"):
        read_episodes(path)

    record = json.loads(json.dumps(episode_record(make_episode("a"))))
    record["turns"][3]["logprobs"] = [-0.5]
    record["turns"][3]["completion_ids"] = [7]
    write_raw_jsonl(path, [record])
    with pytest.raises(TrajectoryFileError, match=r"line 1: .*a 'model' turn carries no token ids"):
        read_episodes(path)


def test_parquet_corrupt_and_foreign_files(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet")
    with pytest.raises(TrajectoryFileError, match=r"garbage\.parquet: not a readable Parquet file"):
        read_episodes(garbage)
    with pytest.raises(TrajectoryFileError, match="not a readable Parquet file"):
        write_episodes(garbage, [make_episode("a")])

    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"episode_id": ["a"], "score": [1.0]}), foreign)
    with pytest.raises(
        TrajectoryFileError, match=r"foreign\.parquet: not a trajectory file: missing columns"
    ):
        read_episodes(foreign)

    newer = tmp_path / "newer.parquet"
    write_episodes(newer, [make_episode("a"), make_episode("b")])
    table = pq.read_table(newer)
    table = table.set_column(0, "schema_version", pa.array([3, 4], pa.int64()))
    pq.write_table(table, newer)
    with pytest.raises(TrajectoryFileError, match=r"newer\.parquet row 2: schema_version 4 is not supported"):
        read_episodes(newer)


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="no such trajectory file"):
        read_episodes("/nonexistent/dir/t.jsonl")


# -------------------------------------------------------------------------------------------------- TRL


def test_to_trl_records_one_per_turn_with_role_reward() -> None:
    episodes = [make_episode("a"), make_episode("f", status="failed"), make_episode("b")]
    records = to_trl_records(episodes)
    # 3 policy turns in each of the 2 "ok" episodes (the hosted model's and the person's have no token ids);
    # the failed episode is left out.
    assert len(records) == 6
    assert records[1] == {
        "prompt_ids": [1, 2, 3, 4],
        "completion_ids": [10, 11],
        "logprobs": [-0.25, -0.5],
        "episode_id": "a",
        "role": "seller",
        "agent": "seller",
        "reward": -0.5,
    }
    assert [r["reward"] for r in records[:3]] == [1.0, -0.5, 1.0]
    assert len(to_trl_records(episodes, include_failed=True)) == 9

    buyer_only = to_trl_records(episodes, roles="buyer")
    assert len(buyer_only) == 4 and {r["role"] for r in buyer_only} == {"buyer"}
    assert to_trl_records(episodes, roles=["seller"])[0]["episode_id"] == "a"

    records[0]["prompt_ids"].append(99)  # records are copies, not views of the episode
    assert episodes[0].turns[0].prompt_ids == [1, 2, 3, 4]


def test_to_trl_records_missing_reward_is_an_error() -> None:
    episode = make_episode("a")
    del episode.rewards["seller"]
    with pytest.raises(
        ValueError, match=r"episode 'a': no terminal reward for role 'seller' \(rewards are for"
    ):
        to_trl_records([episode])
    assert len(to_trl_records([episode], roles=["buyer"])) == 2


def test_to_trl_conversations_one_chat_per_turn_of_every_source() -> None:
    episodes = [make_episode("a"), make_episode("f", status="failed")]
    records = to_trl_conversations(episodes, roles="seller")
    assert [r["source"] for r in records] == ["policy", "model"]
    assert records[1] == {
        "messages": [
            {"role": "system", "content": "You sell."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "A hosted model's reply"},
        ],
        "episode_id": "a",
        "role": "seller",
        "agent": "seller",
        "source": "model",
        "model": "gpt-x",
        "reward": -0.5,
    }
    split = to_trl_conversations(episodes, roles=["buyer"], prompt_completion=True, include_failed=True)
    assert len(split) == 6
    assert split[-1]["prompt"] == [{"role": "user", "content": "Your move."}]
    assert split[0]["prompt"] == [{"role": "user", "content": "buyer, your turn"}]
    assert split[0]["completion"] == [{"role": "assistant", "content": "buyer says héllo ✓"}]
    del episodes[0].rewards["seller"]
    assert to_trl_conversations(episodes, roles="seller")[0]["reward"] is None
    episodes[0].turns[0].messages = []
    with pytest.raises(ValueError, match=r"episode 'a' turn 0: no recorded messages"):
        to_trl_conversations(episodes)


# ---------------------------------------------------------------------------------------- agents and roles


def two_agent_episode(episode_id: str) -> Episode:
    """Two werewolves (one role, two agents) and a seer; each werewolf has its own terminal reward."""
    return Episode(
        episode_id=episode_id,
        turns=[
            make_turn("werewolf", agent="Ada"),
            make_turn("werewolf", agent="Bo", n_completion=2),
            make_turn("seer"),
            make_turn("werewolf", agent="Ada", n_completion=1),
        ],
        rewards={"werewolf": 0.45, "seer": -1.0},
        agent_rewards={"Ada": 1.0, "Bo": -0.1},
    )


def test_a_turns_agent_defaults_to_its_role() -> None:
    assert make_turn("seer").agent == "seer"
    assert make_turn("werewolf", agent="Ada").agent == "Ada"
    episode = two_agent_episode("e")
    assert episode.agents == ["Ada", "Bo", "seer"]
    assert [episode.reward_of(t) for t in episode.turns] == [1.0, -0.1, -1.0, 1.0]  # own entry, else role's
    del episode.agent_rewards["Bo"]
    assert episode.reward_of(episode.turns[1]) == 0.45
    del episode.rewards["werewolf"]
    assert episode.reward_of(episode.turns[1]) is None


@pytest.mark.parametrize("name", FORMATS)
def test_agents_and_agent_rewards_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    episodes = [two_agent_episode("a"), make_episode("b")]
    write_episodes(path, episodes)
    assert read_episodes(path) == episodes
    assert [t.agent for t in read_episodes(path)[0].turns] == ["Ada", "Bo", "seer", "Ada"]


def test_agents_are_in_the_records_of_both_formats(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    write_episodes(tmp_path / "e.jsonl", [two_agent_episode("a")])
    write_episodes(tmp_path / "e.parquet", [two_agent_episode("a")])
    rows = pq.read_table(tmp_path / "e.parquet").to_pylist()
    assert jsonl_lines(tmp_path / "e.jsonl") == rows
    assert rows[0]["agent_rewards"] == [{"agent": "Ada", "value": 1.0}, {"agent": "Bo", "value": -0.1}]
    assert [(t["role"], t["agent"]) for t in rows[0]["turns"]][:2] == [
        ("werewolf", "Ada"),
        ("werewolf", "Bo"),
    ]


@pytest.mark.parametrize("name", ["trajectory_v2.jsonl", "trajectory_v2.parquet"])
def test_version_2_files_are_read_with_each_agent_its_role(tmp_path: Path, name: str) -> None:
    # Written by the schema version 2 writer from make_episode("v2-a") and a failed make_episode("v2-b").
    episodes = read_episodes(DATA / name)
    expected = [make_episode("v2-a"), make_episode("v2-b", status="failed", error="judge timed out")]
    assert episodes == expected
    assert all(t.agent == t.role for e in episodes for t in e.turns)
    assert all(e.agent_rewards == {} and e.schema_version == SCHEMA_VERSION for e in episodes)
    copy = tmp_path / name
    copy.write_bytes((DATA / name).read_bytes())
    assert write_episodes(copy, [two_agent_episode("v3")]) == 1  # appending to a version 2 file
    assert read_episodes(copy) == [*expected, two_agent_episode("v3")]


def test_to_trl_records_give_each_turn_its_agents_reward() -> None:
    records = to_trl_records([two_agent_episode("a")])
    assert [(r["role"], r["agent"], r["reward"]) for r in records] == [
        ("werewolf", "Ada", 1.0),
        ("werewolf", "Bo", -0.1),
        ("seer", "seer", -1.0),
        ("werewolf", "Ada", 1.0),
    ]
