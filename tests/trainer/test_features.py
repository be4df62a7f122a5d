"""The hand-written Example encoder equals protobuf's deterministic bytes."""

import pytest
from tensorflow.core.example import example_pb2

from trainer import features


def _reference_example(feats: dict) -> bytes:
    ex = example_pb2.Example()
    for key, (kind, values) in feats.items():
        f = ex.features.feature[key]
        if kind == "bytes":
            f.bytes_list.value.extend(v.encode() for v in values)
        elif kind == "int64":
            f.int64_list.value.extend(values)
        else:
            f.float_list.value.extend(values)
    return ex.SerializeToString(deterministic=True)


@pytest.mark.parametrize(
    "history, negative",
    [(["a", "bb", "ü" * 70], [0, 1, 0]), ([], []), (["x"] * 200, [1] * 200)],
)
def test_encode_example_matches_protobuf(history, negative):
    valid = [1 - n for n in negative]
    got = features.encode_example("u" * 130, "item", 1_700_000_000, True, history, negative, valid,
                                  "topic", ["t1", "t2"])
    want = _reference_example({
        features.USER_ID: ("bytes", ["u" * 130]),
        features.TARGET_ITEM_ID: ("bytes", ["item"]),
        features.TARGET_TIMESTAMP: ("int64", [1_700_000_000]),
        features.TARGET_NEGATIVE: ("int64", [1]),
        features.HISTORY_ITEM_IDS: ("bytes", history),
        features.HISTORY_NEGATIVE: ("int64", negative),
        features.HISTORY_VALID: ("int64", valid),
        features.CONDITION_TOPIC: ("bytes", ["topic"]),
        features.FOLLOWED_TOPICS: ("bytes", ["t1", "t2"]),
    })
    assert got == want
    pre_joined = b"".join(features.bytes_piece(h) for h in history)
    assert features.encode_example("u" * 130, "item", 1_700_000_000, True, pre_joined, negative, valid,
                                   "topic", ["t1", "t2"]) == want


def test_encode_item_matches_protobuf_with_negative_and_large_ints():
    got = features.encode_item("i", ["t"], [0.5, -1.25], {"format": "img"}, False, 300)
    want = _reference_example({
        features.ITEM_ID: ("bytes", ["i"]), features.ITEM_TOPICS: ("bytes", ["t"]),
        features.ITEM_CONTENT: ("float", [0.5, -1.25]), "cat_format": ("bytes", ["img"]),
        features.ITEM_FEATURES_VALID: ("int64", [0]), features.ITEM_TRAIN_COUNT: ("int64", [300]),
        features.ITEM_IN_CORPUS: ("int64", [1]),
    })
    assert got == want
    negative = features.encode_features({"k": features.int64_feature([-5, 0, 2**40])})
    assert negative == _reference_example({"k": ("int64", [-5, 0, 2**40])})


def test_history_validity():
    assert features.history_validity([0, 1, 0, 1], [1, 1, 0, 0]) == [1, 0, 0, 0]
