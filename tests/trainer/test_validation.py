"""The validation carve: every record when it holds at most the cap (the
very stream `iter_records` gives), else a seeded uniform sample, checked
against a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from mer_testing import tiny_example
from trainer import data, features
from trainer.evaluation import iter_records
from trainer.layers._keras import tf
from trainer.validation import sample_positions, validation_records, validation_set, validation_split

@pytest.fixture(scope="module")
def carve(tmp_path_factory):
    """3 shards, 120 records; user n's timestamp is (n * 37) % 100; the
    carve is the last 30 % by time: timestamps 70..99."""
    out = tmp_path_factory.mktemp("carve")
    user = 0
    for shard, count in enumerate((50, 30, 40)):
        with tf.io.TFRecordWriter(str(out / f"implicit-{shard:05d}-of-00003{features.TFRECORD_SUFFIX}")) as writer:
            for _ in range(count):
                writer.write(tiny_example(user, (user * 37) % 100))
                user += 1
    timestamps = np.array([(n * 37) % 100 for n in range(user)])
    split = validation_split(timestamps, 0.3)
    # The carve in file order (the shards hold users in order).
    in_carve = [f"u{n}" for n in range(user) if timestamps[n] >= split["cutoff"]]
    return str(out / f"implicit-*{features.TFRECORD_SUFFIX}"), split, in_carve


def _users(batches) -> list[str]:
    return [u.decode() for b in batches for u in b[features.USER_ID].tolist()]


@pytest.mark.parametrize("cap", [36, 1000])
def test_a_carve_within_the_cap_is_scored_whole_exactly_as_before(carve, cap):
    pattern, split, in_carve = carve
    assert split["validation_records"] == len(in_carve) == 36
    got = list(validation_records(pattern, split, cap, seed=3, batch_size=8, history_length=4))
    before = list(iter_records(pattern, 8, 4, time_range=split["validation_range"], limit=cap))
    assert len(got) == len(before)
    for mine, theirs in zip(got, before):  # bit for bit, batch for batch
        assert mine.keys() == theirs.keys()
        assert all(np.array_equal(mine[k], theirs[k]) for k in mine)
    assert _users(got) == in_carve
    assert validation_set(split, cap, 3) == {"records": 36, "carve_records": 36, "selection": "all", "seed": None,
                                             "time_range": list(split["validation_range"])}


def test_a_carve_over_the_cap_is_a_seeded_uniform_sample(carve):
    pattern, split, in_carve = carve
    got = _users(validation_records(pattern, split, 10, seed=3, batch_size=4, history_length=4))
    # NumPy reference: 10 of the 36 positions, drawn without replacement, kept in file order.
    want = [in_carve[p] for p in np.sort(np.random.default_rng(3).choice(36, 10, replace=False))]
    assert got == want and len(set(got)) == 10
    assert got != in_carve[:10]  # not the first records in file order
    assert _users(validation_records(pattern, split, 10, seed=3, batch_size=4, history_length=4)) == got
    assert _users(validation_records(pattern, split, 10, seed=4, batch_size=4, history_length=4)) != got
    assert validation_set(split, 10, 3) == {"records": 10, "carve_records": 36, "selection": "seeded random sample",
                                            "seed": 3, "time_range": list(split["validation_range"])}


def test_sample_positions_and_keep_positions():
    assert sample_positions(5, 5, 0) is None
    positions = sample_positions(1000, 50, 7)
    assert len(set(positions.tolist())) == 50 and np.all(np.diff(positions) > 0) and positions.max() < 1000
    ds = tf.data.Dataset.range(10)
    assert list(data.keep_positions(ds, np.array([0, 3, 9])).as_numpy_iterator()) == [0, 3, 9]
    assert list(data.keep_positions(ds, np.array([], np.int64)).as_numpy_iterator()) == []
    assert validation_set(validation_split(np.arange(10), 0), 5, 0) is None
