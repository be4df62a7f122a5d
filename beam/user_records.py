"""Per-user record building: dedup, split, histories, implicit/explicit examples.

Pure functions over one user's events, so the logic is tested without Beam
and the Beam DoFns stay thin.
"""

from __future__ import annotations

import zlib
from typing import Iterable, Mapping, Sequence

from beam.follows import derive_follows, derive_source_topic
from beam.records import Event
from trainer import features
from trainer.config import DataConfig


def stable_shard(key: str, num_shards: int) -> int:
    """Process-independent shard of a key (Python's `hash` is salted)."""
    return zlib.crc32(key.encode("utf-8")) % num_shards


def order_and_dedup(events: Iterable[Event]) -> tuple[list[Event], list[Event]]:
    """SPEC §6.1: stable sort by (timestamp, position); repeated items keep the first.

    Returns:
      (kept, duplicates), both in input order of the sort.
    """
    ordered = sorted(events, key=lambda e: (e.timestamp, e.file_index, e.line))
    seen: set[str] = set()
    kept, dups = [], []
    for event in ordered:
        (dups if event.item_id in seen else kept).append(event)
        seen.add(event.item_id)
    return kept, dups


def _item_condition(user_id: str, item_id: str, topics: Sequence[str], seed: int) -> str:
    """The paper's weaker association: a topic sampled from the item's own topics,
    seeded by (seed, user, item) so reruns are identical."""
    if not topics:
        return ""
    return topics[zlib.crc32(f"{seed}|{user_id}|{item_id}".encode()) % len(topics)]


def build_user_records(
    user_id: str,
    events: Sequence[Event],
    follows: Sequence[str],
    cutoff: float,
    items: Mapping[str, tuple[tuple[str, ...], bool]],
    opts: DataConfig,
) -> dict:
    """Builds every record of one user.

    Args:
      user_id: the user.
      events: the user's de-duplicated events in SPEC §6 order.
      follows: followed topics from the follows input (may be empty).
      cutoff: T; train = timestamp < T.
      items: item_id -> (topics, features_valid).
      opts: the data config (history length, association, follow rules).

    Returns:
      dict with serialized examples per output (`features.EXAMPLE_OUTPUTS`),
      `train_items` (item ids of training-period events), `follows`, and
      `counts` (train/eval events, events without enough history).
    """
    if opts.derive_follows:
        follows = derive_follows(
            [items[e.item_id][0] for e in events if e.timestamp < cutoff and not e.negative],
            opts.follow_min_share,
            opts.max_follows,
        )
    follows = list(follows)
    out: dict = {name: [] for name in features.EXAMPLE_OUTPUTS}
    counts = {"train_events": 0, "eval_events": 0, "events_below_min_history": 0}
    pieces = [features.bytes_piece(e.item_id) for e in events]
    hist_neg = [int(e.negative) for e in events]
    hist_valid = features.history_validity(hist_neg, [items[e.item_id][1] for e in events])
    train_items = []
    for position, event in enumerate(events):
        is_train = event.timestamp < cutoff
        counts["train_events" if is_train else "eval_events"] += 1
        if is_train:
            train_items.append(event.item_id)
        if position < opts.min_history:
            counts["events_below_min_history"] += 1
            continue
        start = max(0, position - opts.history_length)
        topics = items[event.item_id][0]
        source = event.source_topic
        if not source and opts.derive_source_topic:
            source = derive_source_topic(topics, follows)
        if is_train and opts.explicit_association == "item":
            condition = _item_condition(user_id, event.item_id, topics, opts.synthetic.seed)
        else:
            condition = source
        args = dict(
            user_id=user_id,
            target_item_id=event.item_id,
            target_timestamp=event.timestamp,
            target_negative=event.negative,
            history_item_ids=b"".join(pieces[start:position]),
            history_negative=hist_neg[start:position],
            history_valid=hist_valid[start:position],
            followed_topics=follows,
        )
        implicit = features.TRAIN_IMPLICIT if is_train else features.EVAL_IMPLICIT
        out[implicit].append(features.encode_example(**args))
        if condition:
            explicit = features.TRAIN_EXPLICIT if is_train else features.EVAL_EXPLICIT
            out[explicit].append(features.encode_example(condition_topic=condition, **args))
    out["train_items"] = train_items
    out["follows"] = follows
    out["counts"] = counts
    return out
