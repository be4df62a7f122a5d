"""The synthetic world end to end: ground truth, no leakage, determinism."""

from __future__ import annotations

import csv
import glob
import json

import pytest

from beam import synthetic
from beam.run import IN_MEMORY, generate_synthetic, run_prepare
from mer_testing import read_examples
from trainer.config import load_config

TINY = ["data.synthetic.num_users=120", "data.synthetic.num_items=600", "data.synthetic.num_topics=20",
        "data.synthetic.num_shards=3", "data.num_shards=3"]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    cfg = load_config("synthetic-small", TINY)
    manifest = run_prepare(cfg, str(root / "a"), list(IN_MEMORY))
    return cfg, root, manifest


def _raw_events(raw_dir):
    """Raw rows with their SPEC §6 position `(timestamp, file index, line)`."""
    rows = []
    for file_index, path in enumerate(sorted(glob.glob(f"{raw_dir}/events-*.csv"))):
        with open(path) as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                row["position"] = (int(row["timestamp"]), file_index, line)
                rows.append(row)
    return rows


def test_world_has_ground_truth_segments_and_negatives(tiny_world):
    cfg, root, manifest = tiny_world
    truth = [json.loads(line) for p in glob.glob(f"{root}/a/raw/truth-*.jsonl") for line in open(p)]
    assert len(truth) == 120
    assert {t["segment"] for t in truth} == {"core", "casual", "new"}
    tiers = {i["tier"] for t in truth for i in t["interests"]}
    assert tiers == {"head", "torso", "tail"}
    core = [len(t["interests"]) for t in truth if t["segment"] == "core"]
    new = [len(t["interests"]) for t in truth if t["segment"] == "new"]
    assert min(core) > max(new) - 1 and sum(core) / len(core) > sum(new) / len(new)
    rows = _raw_events(f"{root}/a/raw")
    actions = {r["action"] for r in rows}
    assert synthetic.NEGATIVE_ACTION in actions
    assert any(r["source_topic"] for r in rows)
    # Followed topics that are not among the behavioural interests exist (dormant).
    assert any(t["dormant"] for t in truth)
    days = {(int(r["timestamp"]) - cfg.data.synthetic.start_timestamp) // synthetic.DAY for r in rows}
    assert days == set(range(15))
    assert manifest["tables"]["items_with_invalid_features"] > 0


def test_no_leakage_histories_strictly_earlier_and_eval_never_in_train(tiny_world):
    cfg, root, manifest = tiny_world
    cutoff = manifest["cutoff"]
    assert cutoff == cfg.data.split.timestamp  # synthetic: start of day 15
    first = {}  # (user, item) -> position of its first occurrence
    for r in sorted(_raw_events(f"{root}/a/raw"), key=lambda r: r["position"]):
        first.setdefault((r["user_id"], r["item_id"]), r["position"])
    for split in ("train", "eval"):
        for kind in ("implicit", "explicit"):
            rows = read_examples(f"{root}/a/{split}/{kind}-*")
            assert rows, f"{split}/{kind} is empty"
            for row in rows:
                user, target_ts = row["user_id"].decode(), int(row["target_timestamp"])
                assert (target_ts < cutoff) == (split == "train")
                target = first[(user, row["target_item_id"].decode())]
                assert target[0] == target_ts
                hist = [first[(user, i.decode())] for i in row["history_item_ids"]]
                # Strictly earlier in the SPEC §6 order, chronological, at most L.
                assert all(h < target for h in hist)
                assert hist == sorted(hist)
                assert len(hist) <= cfg.data.history_length
                if split == "train":
                    assert all(h[0] < cutoff for h in hist)
    counts = manifest["counts"]
    assert counts["examples/train/implicit"] == counts["train_events"] + counts["eval_events"] \
        - counts["events_below_min_history"] - counts["examples/eval/implicit"]


def _tfrecords(out):
    return {p[len(out):]: open(p, "rb").read() for p in sorted(glob.glob(f"{out}/**/*.tfrecord", recursive=True))}


@pytest.mark.slow
def test_same_seed_same_bytes_across_runners_and_raw_sharding(tiny_world, tmp_path):
    cfg, root, _ = tiny_world
    first = _tfrecords(f"{root}/a")
    assert len(first) == 4 * 3 + 1
    # Different raw shard count, and the multi-process DirectRunner with 2 workers.
    cfg2 = load_config("synthetic-small", TINY + ["data.synthetic.num_shards=5"])
    run_prepare(cfg2, str(tmp_path / "b"), ["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    second = _tfrecords(str(tmp_path / "b"))
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first), [k for k in first if first[k] != second[k]]


def test_different_seed_different_world(tiny_world, tmp_path):
    cfg, root, _ = tiny_world
    cfg2 = load_config("synthetic-small", TINY + ["data.synthetic.seed=1"])
    generate_synthetic(cfg2, str(tmp_path / "raw"), list(IN_MEMORY))
    assert _raw_events(f"{root}/a/raw") != _raw_events(tmp_path / "raw")
