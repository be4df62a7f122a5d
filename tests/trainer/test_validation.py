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


@pytest.fixture(scope="module")
def per_user(tmp_path_factory):
    """2 shards; user u<k> (k = 0..7) has k + 1 records at timestamps
    10 k .. 10 k + k, written interleaved; u5's last two records share a
    timestamp (a tie at the cutoff)."""
    out = tmp_path_factory.mktemp("per_user")
    rows = [(k, 10 * k + min(j, 4) if k == 5 else 10 * k + j) for j in range(8) for k in range(8) if j <= k]
    half = len(rows) // 2
    for shard, part in enumerate((rows[:half], rows[half:])):
        with tf.io.TFRecordWriter(str(out / f"implicit-{shard:05d}-of-00002{features.TFRECORD_SUFFIX}")) as writer:
            for user, ts in part:
                writer.write(tiny_example(user, ts))
    return str(out / f"implicit-*{features.TFRECORD_SUFFIX}"), rows


def _reference_carve(rows, last: int) -> list:
    """(user, ts) of each user's records at or after its `last`-th latest
    timestamp, for users with more than `last` records; sorted."""
    out = []
    for user in {u for u, _ in rows}:
        stamps = sorted(ts for u, ts in rows if u == user)
        if len(stamps) > last:
            out += [(f"u{user}", ts) for ts in stamps if ts >= stamps[-last]]
    return sorted(out)


@pytest.mark.parametrize("last", [1, 2])
def test_a_per_user_carve_is_each_users_last_training_records(per_user, last):
    from trainer.data import target_columns, target_counts
    from trainer.validation import per_user_carve

    pattern, rows = per_user
    columns = target_columns(pattern, with_users=True)
    split = per_user_carve(columns.stamps, columns.users, last)
    want = _reference_carve(rows, last)
    got = [(u.decode(), int(t)) for b in validation_records(pattern, split, 1000, seed=0, batch_size=4,
                                                              history_length=1)
           for u, t in zip(b[features.USER_ID], b[features.TARGET_TIMESTAMP])]
    assert sorted(got) == want and len(got) == split["validation_records"]
    assert want.count(("u5", 54)) == 2  # a tie at the cutoff: both validate
    # The training side is the rest, in the tf.data filter and in NumPy alike.
    trained = [(u.decode(), int(t)) for b in iter_records(pattern, 4, 1, time_range=split["train_range"])
               for u, t in zip(b[features.USER_ID], b[features.TARGET_TIMESTAMP])]
    assert sorted(trained + got) == sorted((f"u{u}", ts) for u, ts in rows)
    assert len(trained) == split["train_records"] == target_counts(columns, split["train_range"])[1].sum()
    assert ("u0", 0) in trained  # one record: nothing to carve, it trains
    assert validation_set(split, 1000, 0) == {"records": len(got), "carve_records": len(got), "selection": "all",
                                              "seed": None, "per_user_last": last,
                                              "users": 7 if last == 1 else 6}


def test_a_per_user_carve_never_takes_all_of_a_users_records():
    from trainer.validation import per_user_carve

    # a: 3 records at one timestamp (the tie would carve all 3): not carved;
    # b: its last of 2 records carved.
    stamps = np.array([5, 5, 5, 1, 2])
    users = np.array([b"a", b"a", b"a", b"b", b"b"], object)
    split = per_user_carve(stamps, users, 1)
    assert split["validation_records"] == 1 and split["train_records"] == 4 and split["carve_users"] == 1
    np.testing.assert_array_equal(split["validation_range"].mask(stamps, users), [0, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="no user has more than data.split.per_user_eval=2"):
        per_user_carve(np.array([1, 2, 1]), np.array([b"a", b"a", b"b"], object), 2)
    with pytest.raises(ValueError, match="no user has more than data.split.per_user_eval=1"):
        per_user_carve(stamps[:3], users[:3], 1)


def test_the_carve_follows_the_split_mode_unless_told():
    from trainer.config import load_config
    from trainer.validation import UserCutoffs, carve_split

    stamps = np.array([1, 2, 3, 1, 2], np.int64)
    users = np.array([b"a", b"a", b"a", b"b", b"b"], object)
    per_user = load_config(None, ["data.split.mode=per_user"])
    assert isinstance(carve_split(per_user, stamps, users)["validation_range"], UserCutoffs)
    assert carve_split(per_user, stamps, users)["validation_records"] == 2  # a at 3, b at 2
    assert carve_split(load_config(None, []), stamps)["validation_range"] == (3, 4)
    forced = load_config(None, ["train.validation_carve=per_user"])
    assert carve_split(forced, stamps, users)["validation_records"] == 2
    assert carve_split(load_config(None, ["data.split.mode=per_user", "train.validation_carve=time"]),
                       stamps)["validation_range"] == (3, 4)
    assert carve_split(load_config(None, ["data.split.mode=per_user", "train.validation_fraction=0"]),
                       stamps, users)["validation_range"] is None
    with pytest.raises(ValueError, match="train.validation_carve"):
        load_config(None, ["train.validation_carve=users"])
