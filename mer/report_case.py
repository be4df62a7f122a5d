"""The report's model computations: one user's interests (Figure 5) and
what each of their embeddings retrieves (Figure 6).

The clustering comes from the trained Keras model (`load_trained`): the
routing of the interest module is not a serving output. The retrieval comes
from what is served: the exported user-tower SavedModels (loaded as TF
Serving loads them, `serving_default`) and the ScaNN indexes of the export
base.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

import numpy as np

from common import contract

log = logging.getLogger("mer.report")

# Interest modules whose routing assigns history items to clusters.
CLUSTERING_KINDS = ("dcm", "mind")


@dataclasses.dataclass
class Clusters:
    """One user's history as the interest module clusters it.

    Attributes:
      points: `[L, dim]` the history items in the routing space (S e_i).
      assign: `[L]` the item's cluster, -1 when it is not routed (invalid
        features or a negative action).
      capsules: `[K, dim]` the centroids (interest capsules).
      active: `[K]` bool, clusters the model kept.
      importance: `[K]` routing mass per cluster.
    """

    points: np.ndarray
    assign: np.ndarray
    capsules: np.ndarray
    active: np.ndarray
    importance: np.ndarray


def _history_batch(requests: list[dict], length: int) -> dict:
    import tensorflow as tf

    from trainer import features

    ids = np.full((len(requests), length), b"", object)
    negative = np.zeros((len(requests), length), np.int64)
    for r, request in enumerate(requests):
        history = request["history"][-length:]
        ids[r, :len(history)] = [h.encode() for h in history]
        negative[r, :len(history)] = request["negative"][-length:]
    return {features.HISTORY_ITEM_IDS: tf.constant(ids), features.HISTORY_NEGATIVE: tf.constant(negative)}


def interest_clusters(model, history_length: int, requests: list[dict]) -> list[Clusters]:
    """Runs the interest module of a DCM / MIND model on each request's
    history, exactly as the user tower does (`_history` then the module).
    Requests must hold at most `history_length` engagements (the rows of
    the result follow `request["history"]`)."""
    inputs = _history_batch(requests, history_length)
    hist = model._history(inputs)  # the tower's own item representations: no second copy of that code
    out = model.interests({"items": hist["items"], "valid": hist["valid"], "mask": hist["mask"],
                           "item_index": hist["index"]}, training=False)
    points = model.interests.bilinear(hist["items"]).numpy()
    routing, mask = out["routing"].numpy(), hist["mask"].numpy()
    result = []
    for r, request in enumerate(requests):
        n = min(len(request["history"]), history_length)
        weights = routing[r, :n]
        assign = np.where((weights.sum(axis=1) > 0) & mask[r, :n], weights.argmax(axis=1), -1)
        result.append(Clusters(points[r, :n], assign, out["capsules"].numpy()[r], out["mask"].numpy()[r],
                               out["importance"].numpy()[r]))
    return result


def pick_user(requests: list[dict], clusters: list[Clusters], user: str | None) -> int:
    """The case-study record: `user`'s first record if given, else the one
    with the most interests of at least two items (ties: the earlier one), a
    user who follows topics so that both retrievers answer.

    Raises:
      ValueError: `user` has no eval record among `requests`.
    """
    if user is not None:
        for i, request in enumerate(requests):
            if request["user"] == user:
                return i
        raise ValueError(f"--user {user}: no eval record of this user among the first {len(requests)} "
                         "(the report reads the prepared data's eval split)")
    def richness(i: int) -> tuple:
        sizes = np.bincount(clusters[i].assign[clusters[i].assign >= 0], minlength=len(clusters[i].active))
        return (bool(requests[i]["topics"]), int((sizes >= 2).sum()), -i)

    return max(range(len(requests)), key=richness)


def project_2d(clusters: Clusters) -> tuple[np.ndarray, np.ndarray]:
    """PCA of the history's routing-space points to 2-D (SVD, no extra
    dependency). A capsule is squashed (its norm is not on the items'
    scale), so its direction is drawn at the mean norm of its members.

    Returns: `(points [L, 2], centroids [K, 2])`.
    """
    points = clusters.points
    centre = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
    axes = vt[:2].T if vt.shape[0] >= 2 else np.pad(vt.T, ((0, 0), (0, 2 - vt.shape[0])))
    centroids = np.zeros((len(clusters.capsules), points.shape[1]), np.float32)
    norms = np.linalg.norm(points, axis=1)
    for k, capsule in enumerate(clusters.capsules):
        members = clusters.assign == k
        length = np.linalg.norm(capsule)
        if members.any() and length > 0:
            centroids[k] = capsule / length * norms[members].mean()
    return (points - centre) @ axes, (centroids - centre) @ axes


class Towers:
    """The exported user towers and item indexes of an export base, loaded
    as the serving stack loads them (latest version of each)."""

    def __init__(self, base: str):
        import tensorflow as tf

        from common.item_index import load_index

        self.signatures, self.indexes = {}, {}
        for retriever in contract.RETRIEVERS:
            model = contract.USER_MODEL[retriever]
            path = contract.join(base, model, str(contract.latest_model_version(base, model)))
            log.info("loading %s", path)
            self.signatures[retriever] = tf.saved_model.load(path).signatures[contract.SIGNATURE]
            index_root = contract.join(base, contract.INDEX_DIR, retriever)
            version = contract.versions(index_root, contract.INDEX_BUILD)
            if not version:
                raise FileNotFoundError(f"{index_root}: no index (run `mer build-index`)")
            self.indexes[retriever] = load_index(contract.join(index_root, str(version[-1])))

    def embed(self, retriever: str, request: dict, topics: list[str] | None = None) -> dict:
        """The user tower's outputs for one request (NumPy, batch row 0)."""
        import tensorflow as tf

        inputs = {contract.HISTORY_ITEM_IDS: tf.constant([request["history"] or [""]]),
                  contract.HISTORY_NEGATIVE: tf.constant([request["negative"] or [0]], tf.int64)}
        if retriever == contract.EXPLICIT:
            inputs[contract.TOPICS] = tf.constant([topics])
        return {k: v.numpy()[0] for k, v in self.signatures[retriever](**inputs).items()}

    def top_items(self, retriever: str, vector: np.ndarray, exclude: set[str], k: int,
                  topic: str | None = None) -> list[dict]:
        """The `k` best items for one embedding, the history excluded; an
        explicit embedding keeps only items carrying its topic (the serving
        post-filter), searched deep enough to find them."""
        index = self.indexes[retriever]
        depth = index.num_items if topic else min(index.num_items, k + len(exclude))
        rows, scores = index.search(np.asarray(vector, np.float32), depth)
        out = []
        for row, score in zip(rows[0], scores[0]):
            if row < 0:
                break
            item, topics = index.item_ids[row], index.topics[row]
            if item in exclude or (topic and topic not in topics):
                continue
            out.append({"item": item, "topics": topics, "score": float(score)})
            if len(out) == k:
                break
        return out

    def topics_of(self, items: list[str]) -> dict[str, list[str]]:
        index = self.indexes[contract.IMPLICIT]
        known = dict(zip(index.item_ids, index.topics))
        return {item: known.get(item, []) for item in items}


def topic_shares(topic_lists: list[list[str]]) -> dict[str, float]:
    """topic -> share of the items carrying it."""
    counts = Counter(t for topics in topic_lists for t in set(topics))
    return {t: n / max(1, len(topic_lists)) for t, n in counts.items()}


def case_study(towers: Towers, request: dict, clusters: Clusters, num_explicit: int, top: int) -> dict:
    """Figure 6 for one eval record: the history grouped by interest and,
    per user embedding (implicit slot k = interest k; explicit = one per
    followed topic), its top items with their topics.

    Returns: dict `implicit` (rows: interest, importance, history items,
    retrieved items), `explicit` (rows: topic, retrieved items), `unrouted`
    (history items no interest took), `target`.
    """
    history = request["history"]
    topics_of = towers.topics_of(history)
    exclude = set(history)
    implicit = towers.embed(contract.IMPLICIT, request)
    rows = []
    for k in np.flatnonzero(implicit[contract.MASK]):
        members = [history[i] for i in np.flatnonzero(clusters.assign == k)]
        rows.append({"interest": int(k), "importance": float(implicit[contract.IMPORTANCE][k]),
                     "history": [{"item": i, "topics": topics_of[i]} for i in members],
                     "retrieved": towers.top_items(contract.IMPLICIT, implicit[contract.EMBEDDINGS][k], exclude,
                                                   top)})
    rows.sort(key=lambda row: -row["importance"])
    followed = request["topics"][:num_explicit]
    explicit_rows = []
    if followed:
        explicit = towers.embed(contract.EXPLICIT, request, followed)
        for j, topic in enumerate(followed):
            if explicit[contract.MASK][j]:
                explicit_rows.append({"topic": topic, "retrieved": towers.top_items(
                    contract.EXPLICIT, explicit[contract.EMBEDDINGS][j], exclude, top, topic)})
    unrouted = [{"item": history[i], "topics": topics_of[history[i]]} for i in np.flatnonzero(clusters.assign < 0)]
    return {"implicit": rows, "explicit": explicit_rows, "unrouted": unrouted, "target": request["target"],
            "history_topics": topic_shares([topics_of[i] for i in history])}
