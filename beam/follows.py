"""Followed-topic and source-topic derivation for logs that have none.

MovieLens has no follows and no logged retriever source. The rule that stands
in for sign-up follows: a user's topic share is the genre mass of their
*training-period* non-negative engagements (an item with g genres gives 1/g
to each); followed topics are those with share >= `min_share`, highest first,
at most `max_follows`; a user whose shares are all below the bar follows their
top topic. Only training-period events are used, so nothing of the eval
period leaks. The derived `source_topic` of an event is the followed topic
the item carries with the highest share (none if the item carries none).
"""

from __future__ import annotations

import collections
from typing import Sequence


def derive_follows(
    item_topics: Sequence[Sequence[str]], min_share: float, max_follows: int
) -> list[str]:
    """Args: item_topics: topics of each training-period positive engagement."""
    mass: dict[str, float] = collections.defaultdict(float)
    for topics in item_topics:
        for topic in topics:
            mass[topic] += 1.0 / len(topics)
    total = sum(mass.values())
    if not total:
        return []
    ranked = sorted(mass.items(), key=lambda kv: (-kv[1], kv[0]))
    chosen = [t for t, m in ranked if m / total >= min_share][:max_follows]
    return chosen or [ranked[0][0]]


def derive_source_topic(item_topics: Sequence[str], follows: Sequence[str]) -> str:
    """The first followed topic (follows are ranked) that the item carries."""
    carried = set(item_topics)
    for topic in follows:
        if topic in carried:
            return topic
    return ""
