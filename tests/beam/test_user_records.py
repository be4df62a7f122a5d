"""Per-user record logic without Beam: ordering, dedup, histories, association."""

import pytest

from beam.follows import derive_follows, derive_source_topic
from beam.records import BadRow, Event, parse_timestamp
from beam.user_records import build_user_records, order_and_dedup
from trainer.config import DataConfig
from trainer import features


def ev(item, ts, line, negative=False, source="", file_index=0):
    return Event("u", item, ts, negative, source, file_index, line)


def test_stable_order_same_second_keeps_file_position_and_first_repeat():
    events = [ev("b", 10, 3), ev("a", 10, 2), ev("a", 5, 9, file_index=1), ev("c", 10, 1, file_index=1)]
    kept, dups = order_and_dedup(events)
    # a@5 first; then same-second events in (file, line) order: a(0,2) dup, b(0,3), c(1,1).
    assert [e.item_id for e in kept] == ["a", "b", "c"]
    assert [(e.item_id, e.line) for e in dups] == [("a", 2)]


ITEMS = {"a": (("t1",), True), "b": (("t2", "t1"), True), "c": (("t3",), False), "d": (("t2",), True)}


def _parse(serialized):
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example.FromString(serialized)
    f = ex.features.feature
    return {
        "target": f[features.TARGET_ITEM_ID].bytes_list.value[0].decode(),
        "history": [v.decode() for v in f[features.HISTORY_ITEM_IDS].bytes_list.value],
        "valid": list(f[features.HISTORY_VALID].int64_list.value),
        "condition": f[features.CONDITION_TOPIC].bytes_list.value[0].decode(),
    }


def test_history_is_truncated_to_L_most_recent_and_split_by_cutoff():
    events = [ev("a", 1, 1), ev("b", 2, 2, negative=True), ev("c", 3, 3), ev("d", 4, 4)]
    out = build_user_records("u", events, [], 4, ITEMS, DataConfig(history_length=2))
    train = [_parse(r) for r in out[features.TRAIN_IMPLICIT]]
    evals = [_parse(r) for r in out[features.EVAL_IMPLICIT]]
    assert [(r["target"], r["history"]) for r in train] == [("b", ["a"]), ("c", ["a", "b"])]
    assert [(r["target"], r["history"], r["valid"]) for r in evals] == [("d", ["b", "c"], [0, 0])]
    assert out["counts"] == {"train_events": 3, "eval_events": 1, "events_below_min_history": 1}
    assert out["train_items"] == ["a", "b", "c"]


def test_explicit_association_source_vs_item():
    events = [ev("a", 1, 1), ev("b", 2, 2, source="t1"), ev("d", 3, 3)]
    source = build_user_records("u", events, [], 10, ITEMS, DataConfig())
    assert [_parse(r)["condition"] for r in source[features.TRAIN_EXPLICIT]] == ["t1"]
    item = build_user_records("u", events, [], 10, ITEMS, DataConfig(explicit_association="item"))
    conditions = [(_parse(r)["target"], _parse(r)["condition"]) for r in item[features.TRAIN_EXPLICIT]]
    assert [t for t, _ in conditions] == ["b", "d"]
    assert all(c in ITEMS[t][0] for t, c in conditions)


def test_derived_follows_use_training_period_only():
    # Training: a (t1), b (t2|t1) -> t1 = 1.5, t2 = 0.5. Eval: d (t2) must not count.
    events = [ev("a", 1, 1), ev("b", 2, 2), ev("d", 20, 3)]
    opts = DataConfig(derive_follows=True, derive_source_topic=True, follow_min_share=0.3)
    out = build_user_records("u", events, [], 10, ITEMS, opts)
    assert out["follows"] == ["t1"]
    # The eval target d carries only t2, which is not followed: no explicit record.
    assert out[features.EVAL_EXPLICIT] == []
    assert len(out[features.EVAL_IMPLICIT]) == 1


def _per_user(per_user_eval=1, **kwargs) -> DataConfig:
    from trainer.config import SplitConfig

    return DataConfig(split=SplitConfig(mode="per_user", per_user_eval=per_user_eval), **kwargs)


def test_per_user_split_holds_out_each_users_last_events():
    # Timestamps are positions; the order is SPEC §6's (timestamp, file, line), not the list's.
    events = [ev("a", 1, 1), ev("b", 2, 2), ev("c", 3, 3, negative=True), ev("d", 4, 4)]
    out = build_user_records("u", events, [], None, ITEMS, _per_user(2))
    train = [_parse(r) for r in out[features.TRAIN_IMPLICIT]]
    evals = [_parse(r) for r in out[features.EVAL_IMPLICIT]]
    assert [(r["target"], r["history"]) for r in train] == [("b", ["a"])]
    # The negative c is an eval target, and invalid in d's history, which
    # holds every earlier event (the other eval event included).
    assert [(r["target"], r["history"], r["valid"]) for r in evals] == [("c", ["a", "b"], [1, 1]),
                                                                          ("d", ["a", "b", "c"], [1, 1, 0])]
    assert out["counts"] == {"train_events": 2, "eval_events": 2, "events_below_min_history": 1,
                             "users_train_only": 0}
    assert out["train_items"] == ["a", "b"]


@pytest.mark.parametrize("n_events, n_eval, min_history, eval_records", [
    (1, 1, 1, 0),  # 1 < 1 + 1: trains only (and has no record at all)
    (2, 1, 1, 1),
    (3, 2, 2, 0),  # 3 < 2 + 2: the first held-out event would have 1 earlier event; the user trains only
    (4, 2, 2, 2),
])
def test_per_user_split_rule_for_short_users(n_events, n_eval, min_history, eval_records):
    """A user with fewer than per_user_eval + min_history events trains on
    every event and has no eval record; otherwise exactly per_user_eval."""
    events = [ev(item, t, t) for t, item in enumerate("abcd"[:n_events], start=1)]
    out = build_user_records("u", events, [], None, ITEMS, _per_user(n_eval, min_history=min_history))
    assert len(out[features.EVAL_IMPLICIT]) == eval_records
    assert out["counts"]["eval_events"] == eval_records
    assert out["counts"]["users_train_only"] == int(eval_records == 0)
    assert len(out["train_items"]) == n_events - eval_records


def test_per_user_split_derives_follows_from_training_events_only():
    # Training: a (t1), b (t2|t1); held out: d (t2) must not count, whatever its timestamp.
    events = [ev("a", 1, 1), ev("b", 2, 2), ev("d", 3, 3)]
    opts = _per_user(derive_follows=True, follow_min_share=0.3)
    assert build_user_records("u", events, [], None, ITEMS, opts)["follows"] == ["t1"]


def test_derive_follows_rule():
    assert derive_follows([("x",), ("x", "y"), ("z",)], 0.3, 5) == ["x", "z"]
    assert derive_follows([("x",), ("y",), ("z",), ("w",)], 0.3, 5) == ["w"]  # all below: top one
    assert derive_follows([], 0.3, 5) == []
    assert derive_source_topic(("y", "x"), ["x", "y"]) == "x"
    assert derive_source_topic(("q",), ["x"]) == ""


@pytest.mark.parametrize(
    "value, expected",
    [(100, 100), ("100", 100), ("100.9", 100), ("1970-01-01T00:01:40Z", 100),
     ("1970-01-01T00:01:40", 100), ("1970-01-01T01:01:40+01:00", 100)],
)
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("value, reason", [("soon", "bad_timestamp"), ("", "missing_field"), (True, "bad_timestamp")])
def test_parse_timestamp_errors(value, reason):
    with pytest.raises(BadRow) as err:
        parse_timestamp(value)
    assert err.value.reason == reason
