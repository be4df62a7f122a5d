"""The built-in synthetic Pinterest-like world (SPEC §5), as a Beam pipeline.

A topic taxonomy with Zipf popularity (head = top 10% of topics, torso = next
30%, tail = the rest); items with 1-3 topics, a "pretrained" content vector
near their topics' centres, categorical features, and a share with missing
features; users in segments core / casual / new with several latent
interests (Dirichlet weights: one dominant, a torso and tail), followed
topics that include low-weight and *dormant* long-term interests that barely
show in recent behaviour, 15 days of session-structured engagements with
negative actions, and explicit-retriever engagements that log `source_topic`.

Everything is a pure function of `(seed, user index)` or `(seed, item
index)`, so output is identical for any shard count or runner. The ground
truth (segment, interests with weights and tiers, dormant topics) is written
to `truth-*.jsonl` for coverage metrics.
"""

from __future__ import annotations

import dataclasses
import json

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from beam.shard_writer import write_text
from trainer.config import SyntheticConfig

SEGMENTS = ("core", "casual", "new")
SEGMENT_SHARES = (0.25, 0.5, 0.25)
POSITIVE_ACTIONS = ("save", "click", "closeup")
NEGATIVE_ACTION = "hide"
FORMATS = ("image", "video", "idea")
LANGUAGES = ("en", "de", "fr", "es", "ja")
DAY = 86400


def topic_name(t: int) -> str:
    return f"topic_{t:04d}"


def item_name(i: int) -> str:
    return f"pin_{i:08d}"


def user_name(u: int) -> str:
    return f"user_{u:08d}"


@dataclasses.dataclass
class World:
    """Topics and items, rebuilt identically from the seed in every worker."""

    topic_pop: np.ndarray  # [T] popularity, sums to 1
    topic_tier: list[str]  # head / torso / tail
    centres: np.ndarray  # [T, D]
    item_topics: list[tuple[int, ...]]
    item_content: np.ndarray  # [N, D]
    item_missing: np.ndarray  # [N] bool
    item_format: np.ndarray  # [N] int
    item_language: np.ndarray  # [N] int
    topic_items: list[np.ndarray]  # items whose primary topic is t
    topic_item_cdf: list[np.ndarray]  # Zipf popularity inside the topic


def build_world(cfg: SyntheticConfig) -> World:
    rng = np.random.default_rng([cfg.seed, 0])
    T, N, D = cfg.num_topics, cfg.num_items, cfg.content_dim
    if T < 3 or N < T:
        raise ValueError(f"synthetic: need num_topics >= 3 and num_items >= num_topics, got {T}, {N}")
    pop = 1.0 / np.arange(1, T + 1) ** 1.0
    pop /= pop.sum()
    tiers = ["head" if r < max(1, round(0.1 * T)) else "torso" if r < round(0.4 * T) else "tail"
             for r in range(T)]
    centres = rng.normal(size=(T, D))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # Every topic gets at least a few items; the rest follow popularity^0.5.
    primary = np.concatenate([np.arange(T), rng.choice(T, size=N - T, p=_norm(pop**0.5))])
    rng.shuffle(primary)
    n_extra = rng.choice(3, size=N, p=[0.55, 0.3, 0.15])
    item_topics = []
    content = np.empty((N, D))
    noise = rng.normal(size=(N, D)) * 0.35
    for i in range(N):
        extra = rng.choice(T, size=n_extra[i], replace=False, p=pop) if n_extra[i] else []
        topics = (int(primary[i]),) + tuple(int(t) for t in extra if t != primary[i])
        item_topics.append(topics)
        vec = centres[topics[0]] + 0.3 * centres[list(topics[1:])].sum(axis=0) + noise[i]
        content[i] = vec / np.linalg.norm(vec)
    topic_format = rng.dirichlet(np.ones(len(FORMATS)), size=T)
    fmt = np.array([rng.choice(len(FORMATS), p=topic_format[primary[i]]) for i in range(N)])
    lang = rng.choice(len(LANGUAGES), size=N, p=[0.6, 0.1, 0.1, 0.1, 0.1])
    missing = rng.random(N) < cfg.missing_feature_share
    topic_items, cdfs = [], []
    for t in range(T):
        members = np.flatnonzero(primary == t)
        members = members[rng.permutation(len(members))]
        weights = _norm(1.0 / np.arange(1, len(members) + 1) ** 0.8)
        topic_items.append(members)
        cdfs.append(np.cumsum(weights))
    return World(pop, tiers, centres, item_topics, content, missing, fmt, lang, topic_items, cdfs)


def _norm(x: np.ndarray) -> np.ndarray:
    return x / x.sum()


def _pick_item(world: World, topic: int, rng: np.random.Generator) -> int:
    cdf = world.topic_item_cdf[topic]
    return int(world.topic_items[topic][min(np.searchsorted(cdf, rng.random()), len(cdf) - 1)])


def simulate_user(cfg: SyntheticConfig, world: World, u: int) -> tuple[list[tuple], dict]:
    """One user's events `(ts, item, action, source_topic)` and ground truth."""
    rng = np.random.default_rng([cfg.seed, 1, u])
    T = len(world.topic_pop)
    segment = SEGMENTS[rng.choice(3, p=SEGMENT_SHARES)]
    low, high = {"core": (4, 8), "casual": (2, 4), "new": (1, 3)}[segment]
    k = min(int(rng.integers(low, high + 1)), T - 1)
    interests = rng.choice(T, size=k, replace=False, p=_norm(world.topic_pop**0.7))
    weights = np.sort(rng.dirichlet(np.ones(k)))[::-1]
    # Followed topics lean to the user's lower-weight interests, plus maybe a
    # dormant long-term interest absent from recent behaviour.
    n_follow = int(rng.integers(1, min(k, 4) + 1))
    follows = [int(t) for t in rng.choice(interests, size=n_follow, replace=False,
                                          p=_norm(1.0 / weights))]
    dormant = []
    if rng.random() < 0.5:
        others = np.setdiff1d(np.arange(T), interests)
        dormant = [int(rng.choice(others, p=_norm(world.topic_pop[others])))]
        follows += dormant
    rate = {"core": cfg.events_per_day_core, "casual": cfg.events_per_day_casual,
            "new": cfg.events_per_day_new}[segment]
    first_day = int(rng.integers(cfg.days - 5, cfg.days)) if segment == "new" else 0
    events = []
    seen: set[int] = set()
    for day in range(first_day, cfg.days):
        n = int(rng.poisson(rate))
        if not n:
            continue
        sessions = np.array_split(np.arange(n), int(rng.integers(1, 4)))
        for session in sessions:
            if not len(session):
                continue
            focus = interests[rng.choice(k, p=weights)]
            ts = cfg.start_timestamp + day * DAY + int(rng.integers(0, DAY - 3600))
            for _ in session:
                ts += int(rng.integers(20, 240))
                draw = rng.random()
                source = ""
                if draw < cfg.negative_share:
                    topic, action = int(rng.choice(T, p=world.topic_pop)), NEGATIVE_ACTION
                elif draw < cfg.negative_share + cfg.explicit_share:
                    topic = follows[int(rng.integers(len(follows)))]
                    source, action = topic_name(topic), POSITIVE_ACTIONS[int(rng.integers(3))]
                else:
                    topic = focus if rng.random() < 0.8 else interests[rng.choice(k, p=weights)]
                    action = POSITIVE_ACTIONS[int(rng.integers(3))]
                # Users rarely re-engage the same pin: redraw a few times.
                for _ in range(4):
                    item = _pick_item(world, int(topic), rng)
                    if item not in seen:
                        break
                seen.add(item)
                events.append((min(ts, cfg.start_timestamp + (day + 1) * DAY - 1), item, action, source))
    truth = {
        "user_id": user_name(u),
        "segment": segment,
        "interests": [{"topic": topic_name(int(t)), "weight": round(float(w), 4),
                       "tier": world.topic_tier[int(t)]} for t, w in zip(interests, weights)],
        "dormant": [topic_name(t) for t in dormant],
        "follows": [topic_name(t) for t in follows],
    }
    return events, truth


def _shard_range(total: int, shard: int, num_shards: int) -> range:
    return range(shard * total // num_shards, (shard + 1) * total // num_shards)


def _shard_file(raw_dir: str, name: str, shard: int, num_shards: int, ext: str) -> str:
    return FileSystems.join(raw_dir, f"{name}-{shard:05d}-of-{num_shards:05d}.{ext}")


class _WorldShardWriter(beam.DoFn):
    """Rebuilds the world once per worker (cheaper than a large side input)."""

    def __init__(self, cfg: SyntheticConfig, raw_dir: str):
        self._cfg = cfg
        self._raw_dir = raw_dir
        self._world = None

    def setup(self):
        self._world = build_world(self._cfg)


class WriteUsers(_WorldShardWriter):
    """Simulates the users of one shard; writes events, follows and truth."""

    def process(self, shard: int):
        cfg, n = self._cfg, self._cfg.num_shards
        rows, follows, truths = [], [], []
        for u in _shard_range(cfg.num_users, shard, n):
            events, truth = simulate_user(cfg, self._world, u)
            name = truth["user_id"]
            rows.extend((ts, name, item_name(i), a, s) for ts, i, a, s in events)
            follows.extend(f"{name},{t}\n" for t in truth["follows"])
            truths.append(json.dumps(truth, sort_keys=True) + "\n")
        rows.sort()
        write_text(_shard_file(self._raw_dir, "events", shard, n, "csv"),
                   "user_id,item_id,timestamp,action,source_topic\n"
                   + "".join(f"{u},{i},{ts},{a},{s}\n" for ts, u, i, a, s in rows))
        write_text(_shard_file(self._raw_dir, "follows", shard, n, "csv"),
                   "user_id,topic\n" + "".join(follows))
        write_text(_shard_file(self._raw_dir, "truth", shard, n, "jsonl"), "".join(truths))
        yield "events", len(rows)


class WriteItems(_WorldShardWriter):
    """Writes one shard of the item file (`content` is space-separated floats)."""

    def process(self, shard: int):
        world = self._world
        n = self._cfg.num_shards
        lines = ["item_id,topics,content,format,language\n"]
        for i in _shard_range(self._cfg.num_items, shard, n):
            topics = "|".join(topic_name(t) for t in world.item_topics[i])
            if world.item_missing[i]:
                content, fmt = "", ""
            else:
                content = " ".join(f"{v:.5f}" for v in world.item_content[i])
                fmt = FORMATS[world.item_format[i]]
            lines.append(f"{item_name(i)},{topics},{content},{fmt},{LANGUAGES[world.item_language[i]]}\n")
        write_text(_shard_file(self._raw_dir, "items", shard, n, "csv"), "".join(lines))
        yield "items", len(lines) - 1


def write_world_summary(cfg: SyntheticConfig, raw_dir: str) -> None:
    world = build_world(cfg)
    topics = [{"topic": topic_name(t), "popularity": round(float(p), 6), "tier": world.topic_tier[t]}
              for t, p in enumerate(world.topic_pop)]
    write_text(FileSystems.join(raw_dir, "world.json"),
               json.dumps({"config": dataclasses.asdict(cfg), "topics": topics}, indent=1) + "\n")


def build_pipeline(pipeline: beam.Pipeline, cfg: SyntheticConfig, raw_dir: str):
    """Adds the world-generation stages; returns a PCollection of counts."""
    shards = list(range(cfg.num_shards))
    users = (pipeline | "UserShards" >> beam.Create(shards) | "SpreadUsers" >> beam.Reshuffle()
             | "WriteUsers" >> beam.ParDo(WriteUsers(cfg, raw_dir)))
    items = (pipeline | "ItemShards" >> beam.Create(shards) | "SpreadItems" >> beam.Reshuffle()
             | "WriteItems" >> beam.ParDo(WriteItems(cfg, raw_dir)))
    return (users, items) | beam.Flatten() | beam.CombinePerKey(sum)
