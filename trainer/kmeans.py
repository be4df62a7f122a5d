"""Offline k-means for PinnerFormer-subsequence concepts (NumPy, seeded)."""

from __future__ import annotations

import numpy as np


def kmeans(points: np.ndarray, k: int, iterations: int = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding on L2-normalised points.

    Args:
      points: `[N, d]`.
    Returns:
      (centroids `[k, d]`, assignment `[N]` int32).
    """
    rng = np.random.default_rng(seed)
    x = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-9)
    k = min(k, len(x))
    centroids = [x[rng.integers(len(x))]]
    dist = np.full(len(x), np.inf)
    sq = (x**2).sum(1)
    for _ in range(1, k):
        dist = np.minimum(dist, np.maximum(sq - 2 * x @ centroids[-1] + centroids[-1] @ centroids[-1], 0))
        total = dist.sum()
        centroids.append(x[rng.choice(len(x), p=dist / total)] if total > 0 else x[rng.integers(len(x))])
    c = np.stack(centroids)
    assign = np.zeros(len(x), np.int32)
    for _ in range(iterations):
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; no [N, k, d] intermediate.
        assign = ((c**2).sum(1)[None, :] - 2 * x @ c.T).argmin(1).astype(np.int32)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(0)
    return c, assign


def item_concepts(table, k: int, seed: int = 0) -> np.ndarray:
    """Concept id per item-table row (row 0 = unknown gets concept 0).

    Uses the content vectors, or topic multi-hot vectors when items have no
    content (MovieLens), standing in for the paper's PinSage embeddings.
    """
    if table.content.shape[1]:
        vectors = table.content[1:]
    else:
        vectors = np.zeros((len(table.ids), len(table.topics) + 1), np.float32)
        rows = np.repeat(np.arange(len(table.ids)), table.topic_ids.shape[1])
        vectors[rows, table.topic_ids[1:].reshape(-1)] = 1.0
        vectors[:, 0] = 0.0
        vectors[vectors.sum(1) == 0, 0] = 1.0
    _, assign = kmeans(vectors.astype(np.float64), k, seed=seed)
    return np.concatenate([[0], assign]).astype(np.int32)
