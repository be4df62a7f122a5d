"""benchmarks/segments.py: the per-segment paired analysis of cached runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import segments
from trainer import features
from trainer.evaluation import iter_records


def test_topic_entropy_and_target_topic_class():
    a, b, ab = frozenset({b"a"}), frozenset({b"b"}), frozenset({b"a", b"b"})
    assert segments.topic_entropy([a, b]) == pytest.approx(math.log(2))
    assert segments.topic_entropy([a, a, a]) == 0.0
    assert segments.topic_entropy([ab]) == pytest.approx(math.log(2))  # mass split over its topics
    assert segments.topic_entropy([]) == 0.0
    history = [a, a, b]
    assert segments.target_topic_class(history, a) == "top"
    assert segments.target_topic_class(history, b) == "minor"
    assert segments.target_topic_class(history, frozenset({b"c"})) == "new"
    assert segments.target_topic_class(history, frozenset({b"b", b"a"})) == "top"
    assert segments.target_topic_class([a, b], b) == "top"  # ties count as top


def test_segments_pair_each_row_with_the_baseline_on_the_same_records(world, tmp_path):
    """Cached hits of two models, written the way quality/served cache
    them: each segment's HR and paired difference equal a direct count."""
    work = tmp_path / "work"
    (work / "synthetic").mkdir(parents=True)
    (work / "synthetic" / "prepared-source").symlink_to(world)
    records = sum(len(b[features.USER_ID]) for b in iter_records(
        f"{world}/{features.EVAL_IMPLICIT}-*{features.TFRECORD_SUFFIX}"))
    rng = np.random.default_rng(0)
    ranks = {"single": [rng.integers(1, 200, records).astype(float) for _ in range(2)],
             "dcm": [rng.integers(1, 200, records).astype(float) for _ in range(2)]}
    served = [rng.random(records) < 0.3 for _ in range(2)]
    ease = rng.integers(1, 200, records).astype(float)  # a deterministic reference: one run, seed 0
    (work / "synthetic" / "runs" / "ease" / "seed0").mkdir(parents=True)
    np.savez(work / "synthetic" / "runs" / "ease" / "seed0" / "ranks.npz", ranks=ease)
    for name, runs in ranks.items():
        for seed, r in enumerate(runs):
            path = work / "synthetic" / "runs" / name / f"seed{seed}"
            path.mkdir(parents=True)
            np.savez(path / "ranks.npz", ranks=r)
            if name == "dcm":
                np.savez(path / "served-score.npz", k50=served[seed], k100=served[seed])
    out = tmp_path / "segments.json"
    assert segments.main(["--work", str(work), "--datasets", "synthetic", "--rows", "dcm,dcm:score,mind,ease",
                          "--seeds", "0,1", "--out", str(out), "--docs", str(tmp_path / "segments.md")]) == 0
    report = json.loads(out.read_text())["datasets"]["synthetic"]
    assert report["records"] == records and report["missing"] == ["mind"]
    single = np.mean([r <= 50 for r in ranks["single"]], axis=0)
    dcm = np.mean([r <= 50 for r in ranks["dcm"]], axis=0)
    score = np.mean(served, axis=0)
    length = (np.concatenate([b[features.HISTORY_ITEM_IDS] != b"" for b in iter_records(
        f"{world}/{features.EVAL_IMPLICIT}-*{features.TFRECORD_SUFFIX}")], axis=0)).sum(axis=1)
    for cell in report["tables"]["history length"]:
        lo, _, hi = cell["segment"].partition("-")
        sel = (length >= int(lo.rstrip("+"))) & (length <= (int(hi) if hi else 10**9))
        assert cell["records"] == sel.sum() > 0
        assert cell["hr"]["single"] == pytest.approx(single[sel].mean())
        assert cell["paired"]["dcm"]["mean"] == pytest.approx(dcm[sel].mean() - single[sel].mean())
        assert cell["paired"]["dcm:score"]["mean"] == pytest.approx(score[sel].mean() - single[sel].mean())
        assert cell["paired"]["ease"]["mean"] == pytest.approx((ease <= 50)[sel].mean() - single[sel].mean())
        lo_ci, hi_ci = cell["paired"]["dcm"]["ci95"]
        assert lo_ci <= cell["paired"]["dcm"]["mean"] <= hi_ci
    # Every segmenter partitions all records; the target-topic classes follow the corpus topics.
    for table in report["tables"].values():
        assert sum(c["records"] for c in table) == records
    assert {c["segment"] for c in report["tables"]["target topic"]} <= {"top", "minor", "new"}
    assert "| segment | records | single HR@50 | dcm HR@50 |" in (tmp_path / "segments.md").read_text()


def test_segments_refuses_hits_of_other_records(world, tmp_path):
    work = tmp_path / "work"
    (work / "synthetic").mkdir(parents=True)
    (work / "synthetic" / "prepared-source").symlink_to(world)
    for name in ("single", "dcm"):
        path = work / "synthetic" / "runs" / name / "seed0"
        path.mkdir(parents=True)
        np.savez(path / "ranks.npz", ranks=np.ones(3))
    with pytest.raises(SystemExit, match="3 cached hits"):
        segments.main(["--work", str(work), "--datasets", "synthetic", "--rows", "dcm", "--seeds", "0",
                       "--out", str(tmp_path / "s.json"), "--docs", str(tmp_path / "s.md")])
