"""benchmarks/served.py scores the records it says: the eval split, or the
validation carve of the training data (what picks a merge policy)."""

from __future__ import annotations

import json

import numpy as np

from benchmarks import served
from trainer import features
from trainer.config import load_config
from trainer.data import target_timestamps
from trainer.evaluation import iter_records
from trainer.validation import validation_records, validation_split


def _count(batches) -> int:
    return sum(len(b[features.USER_ID]) for b in batches)


def test_served_scores_the_eval_split_or_the_validation_carve(world, trained, tmp_path):
    work = tmp_path / "work" / "synthetic"
    (work / "runs" / "dcm" / "seed0").mkdir(parents=True)
    (work / "prepared-source").symlink_to(world)
    (work / "runs" / "dcm" / "seed0" / "model").symlink_to(trained["dcm"])
    # The SPEC §6 column's cached ranks (as benchmarks/quality.py saves them).
    np.savez(work / "runs" / "dcm" / "seed0" / "ranks.npz", ranks=np.ones(3), segments=np.array(["1-4"] * 3),
             diversity=np.ones(3))
    cfg = load_config("synthetic-small")
    pattern = f"{world}/{features.TRAIN_IMPLICIT}-*{features.TFRECORD_SUFFIX}"
    carve = validation_split(target_timestamps(pattern), cfg.train.validation_fraction)
    want = {"validation": _count(validation_records(pattern, carve, cfg.train.validation_max_records,
                                                    cfg.train.seed, 256, cfg.data.history_length)),
            "eval": _count(iter_records(f"{world}/{features.EVAL_IMPLICIT}-*{features.TFRECORD_SUFFIX}"))}
    assert want["validation"] != want["eval"]
    for split, tag in (("validation", "served-score-validation.npz"), ("eval", "served-score.npz")):
        out = tmp_path / f"{split}.json"
        assert served.main(["--work", str(tmp_path / "work"), "--datasets", "synthetic", "--variants", "dcm",
                            "--policies", "score", "--explicit=", "--seeds", "0", "--ks", "50", "--split", split,
                            "--baseline", "single", "--out", str(out), "--docs", str(tmp_path / f"{split}.md")]) == 0
        hits = np.load(work / "runs" / "dcm" / "seed0" / tag)["k50"]
        assert len(hits) == want[split]
        row = json.loads(out.read_text())["datasets"]["synthetic"]["rows"]["dcm (score)"]
        assert row["served"]["50"]["mean"] == float(hits.mean())
        assert ("max" in row) == (split == "eval")  # SPEC §6 ranks exist for the eval split only
    assert "validation carve" in (tmp_path / "validation.md").read_text()
