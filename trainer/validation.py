"""The validation carve: which *training* records validate, and which of
them are scored (the training job's early stopping and tuning metric, the
baselines' tuning). The eval split is never read here."""

from __future__ import annotations

from typing import Iterator

import numpy as np


def validation_split(timestamps, fraction: float) -> dict:
    """Time ranges of the training and validation records.

    The cutoff is `numpy.quantile(timestamps, 1 - fraction)`; records at or
    after it validate. Returns counts and `[lo, hi)` ranges.

    Raises:
      ValueError: the fraction leaves no training or no validation record.
    """
    if not len(timestamps):
        raise ValueError("training data: no records")
    lo, hi = int(timestamps.min()), int(timestamps.max()) + 1
    if fraction <= 0:
        return {"train_range": None, "validation_range": None, "train_records": int(len(timestamps)),
                "validation_records": 0, "cutoff": None}
    if not 0 < fraction < 1:
        raise ValueError(f"train.validation_fraction={fraction}: expected 0 <= value < 1")
    cutoff = int(np.ceil(np.quantile(timestamps, 1 - fraction)))
    n_val = int((timestamps >= cutoff).sum())
    n_train = int(len(timestamps) - n_val)
    if not n_val or not n_train:
        raise ValueError(f"train.validation_fraction={fraction} leaves {n_train} training and {n_val} "
                         f"validation records out of {len(timestamps)}; pick another fraction or 0")
    return {"train_range": (lo, cutoff), "validation_range": (cutoff, hi), "train_records": n_train,
            "validation_records": n_val, "cutoff": cutoff}


def sample_positions(count: int, max_records: int, seed: int) -> np.ndarray | None:
    """Sorted positions of a seeded uniform sample (without replacement) of
    `max_records` of `count` records; None when `count <= max_records`
    (every record is scored)."""
    if count <= max_records:
        return None
    return np.sort(np.random.default_rng(seed).choice(count, max_records, replace=False))


def validation_set(split: dict, max_records: int, seed: int) -> dict:
    """What the scored validation set is (for training.json).

    Returns: `records` scored, `carve_records` in the carve, `selection`
    (`all` or `seeded random sample`), `seed` (None for `all`) and the
    carve's `time_range` `[lo, hi)`; None without a carve.
    """
    if split["validation_range"] is None:
        return None
    count = split["validation_records"]
    sampled = count > max_records
    return {"records": min(count, max_records), "carve_records": count,
            "selection": "seeded random sample" if sampled else "all", "seed": seed if sampled else None,
            "time_range": list(split["validation_range"])}


def validation_records(pattern: str, split: dict, max_records: int, seed: int, batch_size: int = 256,
                       history_length: int = 50) -> Iterator[dict]:
    """Batches (NumPy, as `trainer.evaluation.iter_records`) of the scored
    validation records, in file order.

    Every record of the carve when it holds at most `max_records` (exactly
    the stream `iter_records` gives); else a seeded uniform random sample of
    `max_records` of them (`sample_positions`), the same every epoch and
    every run with that seed. Why a sample: the first records in file order
    are one corner of the carve (on logs whose timestamps are positions,
    the shards' first users), unlike the eval split.
    """
    from trainer.data import build_dataset
    from trainer.evaluation import iter_records

    positions = sample_positions(split["validation_records"], max_records, seed)
    if positions is None:
        yield from iter_records(pattern, batch_size, history_length, time_range=split["validation_range"],
                                limit=max_records)
        return
    ds = build_dataset(pattern, batch_size, history_length, shuffle=False, drop_remainder=False,
                       time_range=split["validation_range"], positions=positions)
    for batch in ds:
        yield {k: v.numpy() for k, v in batch.items()}
