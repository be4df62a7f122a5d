"""The validation carve: which *training* records validate, and which of
them are scored (the training job's early stopping and tuning metric, the
baselines' tuning). The eval split is never read here.

Two carves, as the two kinds of eval split (`data.split.mode`):
- by time (`quantile` / `timestamp` splits): the last
  `train.validation_fraction` of the training records by target time, a
  `[lo, hi)` range of timestamps;
- per user (`per_user` split, logs whose timestamps are only positions):
  each user's last `data.split.per_user_eval` training records, as the
  eval split holds each user's last events (`UserCutoffs`).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

NO_CUTOFF = np.iinfo(np.int64).max


@dataclasses.dataclass(frozen=True, eq=False)
class UserCutoffs:
    """One side of a per-user carve: a record of user u validates iff its
    target_timestamp >= `cutoffs[u]`; users without a cutoff never do.

    Used wherever a `(lo, hi)` time range is (`trainer.data` filters,
    `target_counts`, `iter_records`).

    Attributes:
      users: `[U]` user ids (bytes), sorted, distinct.
      cutoffs: `[U]` int64 timestamps.
      validation: True = the carve's records, False = the other records.
      last: records per user carved (for the summary).
    """

    users: np.ndarray
    cutoffs: np.ndarray
    validation: bool
    last: int

    def mask(self, stamps: np.ndarray, users: np.ndarray) -> np.ndarray:
        """Which of the records `(target_timestamp, user_id)` this side keeps."""
        cut = np.full(len(users), NO_CUTOFF, np.int64)
        if len(self.users) and len(users):
            at = np.minimum(np.searchsorted(self.users, users), len(self.users) - 1)
            found = self.users[at] == users
            cut[found] = self.cutoffs[at[found]]
        carved = np.asarray(stamps) >= cut
        return carved if self.validation else ~carved


def in_range(time_range, stamps: np.ndarray, users: np.ndarray | None = None) -> np.ndarray:
    """Which records a split range keeps: `(lo, hi)` on the timestamps, or
    `UserCutoffs` (which needs the records' user ids)."""
    if isinstance(time_range, UserCutoffs):
        if users is None:
            raise ValueError("a per-user carve needs the records' user ids")
        return time_range.mask(stamps, users)
    return (stamps >= time_range[0]) & (stamps < time_range[1])


def per_user_carve(timestamps: np.ndarray, users: np.ndarray, last: int) -> dict:
    """Each user's last `last` training records (by target timestamp; ties
    at the cutoff all validate) validate, for users with more than `last`
    records of which one at least is older than the cutoff (the others
    train on all of theirs: a user never loses every training record to
    the carve). Same keys as `validation_split`.

    Raises:
      ValueError: no user has records to carve.
    """
    if not len(timestamps):
        raise ValueError("training data: no records")
    stamps = np.asarray(timestamps, np.int64)
    ids, code = np.unique(np.asarray(users, object), return_inverse=True)
    order = np.lexsort((stamps, code))
    count = np.bincount(code, minlength=len(ids))
    end = np.cumsum(count)
    ordered = stamps[order]
    carved = count > last
    cutoffs = ordered[end[carved] - last]
    keeps_one = ordered[(end - count)[carved]] < cutoffs  # else ties at the cutoff would take them all
    carved[np.flatnonzero(carved)[~keeps_one]] = False
    train = UserCutoffs(ids[carved], cutoffs[keeps_one], False, last)
    n_val = int((~train.mask(stamps, users)).sum())
    if not n_val:
        raise ValueError(f"per-user validation carve: no user has more than data.split.per_user_eval={last} "
                         f"training records before a later timestamp ({len(stamps)} records, {len(ids)} users); set "
                         f"train.validation_fraction=0 or train.validation_carve=time")
    return {"train_range": train, "validation_range": dataclasses.replace(train, validation=True),
            "train_records": int(len(stamps) - n_val), "validation_records": n_val, "cutoff": None,
            "carve_users": int(carved.sum())}


def carve_split(cfg, stamps: np.ndarray, users: np.ndarray | None = None) -> dict:
    """The training job's carve for config `cfg` (`train.validation_carve`:
    `auto` = per user with the `per_user` split, else by time).

    Args:
      stamps: every training record's target timestamp.
      users: their user ids (`trainer.data.target_columns(with_users=True)`);
        needed for a per-user carve only.
    """
    if carve_is_per_user(cfg):
        return per_user_carve(stamps, users, cfg.data.split.per_user_eval)
    return validation_split(stamps, cfg.train.validation_fraction)


def carve_is_per_user(cfg) -> bool:
    """Whether `cfg` carves per user (and so needs the records' user ids)."""
    mode = cfg.train.validation_carve
    return cfg.train.validation_fraction > 0 and (
        mode == "per_user" or (mode == "auto" and cfg.data.split.mode == "per_user"))


def training_carve(pattern: str, cfg) -> dict:
    """`carve_split` of the training records matching `pattern` (one read of
    their timestamps, and user ids when the carve is per user): what the
    training job carves, for the benchmarks and tools that tune on it."""
    from trainer.data import target_columns

    columns = target_columns(pattern, with_ids=False, with_users=carve_is_per_user(cfg))
    return carve_split(cfg, columns.stamps, columns.users)


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
    carve: its `time_range` `[lo, hi)`, or for a per-user carve
    `per_user_last` (records per user) and `users`; None without a carve.
    """
    carve = split["validation_range"]
    if carve is None:
        return None
    count = split["validation_records"]
    sampled = count > max_records
    out = {"records": min(count, max_records), "carve_records": count,
           "selection": "seeded random sample" if sampled else "all", "seed": seed if sampled else None}
    if isinstance(carve, UserCutoffs):
        return {**out, "per_user_last": carve.last, "users": len(carve.users)}
    return {**out, "time_range": list(carve)}


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
