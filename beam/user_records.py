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


def train_flags(events: Sequence[Event], cutoff: float | None, opts: DataConfig) -> list[bool]:
    """Which of one user's events (SPEC §6 order) are training events.

    Temporal modes (`quantile`, `timestamp`): timestamp < T. `per_user`
    (T unused): all but the last `split.per_user_eval` (N); a user with fewer
    than N + `min_history` events trains on every event instead, because its
    first held-out event would have too little history for a record: so every
    eval user has exactly N eval records, each with at least `min_history`
    earlier events, and no event is held out without being evaluated.
    """
    if opts.split.mode != "per_user":
        return [e.timestamp < cutoff for e in events]
    held_out = opts.split.per_user_eval
    if len(events) < held_out + opts.min_history:
        return [True] * len(events)
    return [True] * (len(events) - held_out) + [False] * held_out


def build_user_records(
    user_id: str,
    events: Sequence[Event],
    follows: Sequence[str],
    cutoff: float | None,
    items: Mapping[str, tuple[tuple[str, ...], bool]],
    opts: DataConfig,
) -> dict:
    """Builds every record of one user.

    Args:
      user_id: the user.
      events: the user's de-duplicated events in SPEC §6 order.
      follows: followed topics from the follows input (may be empty).
      cutoff: T; train = timestamp < T (None and unused for the `per_user`
        split, see `train_flags`).
      items: item_id -> (topics, features_valid).
      opts: the data config (split, history length, association, follow rules).

    Returns:
      dict with serialized examples per output (`features.EXAMPLE_OUTPUTS`),
      `train_items` (item ids of training-period events), `follows`, and
      `counts` (train/eval events, events without enough history; with the
      `per_user` split, `users_train_only`: 1 for a user with events but too
      few to hold any out).
    """
    is_train_event = train_flags(events, cutoff, opts)
    if opts.derive_follows:
        follows = derive_follows(
            [items[e.item_id][0] for e, train in zip(events, is_train_event) if train and not e.negative],
            opts.follow_min_share,
            opts.max_follows,
        )
    follows = list(follows)
    out: dict = {name: [] for name in features.EXAMPLE_OUTPUTS}
    counts = {"train_events": 0, "eval_events": 0, "events_below_min_history": 0}
    if opts.split.mode == "per_user":
        counts["users_train_only"] = int(bool(events) and all(is_train_event))
    pieces = [features.bytes_piece(e.item_id) for e in events]
    hist_neg = [int(e.negative) for e in events]
    hist_valid = features.history_validity(hist_neg, [items[e.item_id][1] for e in events])
    train_items = []
    for position, event in enumerate(events):
        is_train = is_train_event[position]
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
