"""NumPy references for the model's numerics (paper eq. 1-3, 5-9)."""

from __future__ import annotations

import numpy as np


def squash(v):
    sq = (v**2).sum(-1, keepdims=True)
    return sq / (1 + sq) * v / np.sqrt(sq + 1e-9)


def farthest_point_init(points, eligible, k, first):
    """Eq. 5-6 for one user: `points [L, d]`, `eligible [L]` -> (centroids [k, d], mask [k])."""
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    centroids, mask, chosen = [], [], []
    if eligible.any():
        chosen.append(first)
    for j in range(k):
        if j == 0:
            if not eligible.any():
                centroids.append(np.zeros(points.shape[1]))
                mask.append(False)
                continue
            centroids.append(points[first])
            mask.append(True)
            continue
        candidates = [i for i in range(len(points)) if eligible[i] and i not in chosen]
        if not candidates:
            centroids.append(np.zeros(points.shape[1]))
            mask.append(False)
            continue
        best = min(candidates, key=lambda i: max(unit[i] @ unit[c] for c in chosen))
        chosen.append(best)
        centroids.append(points[best])
        mask.append(True)
    return np.stack(centroids), np.array(mask)


def routing(points, capsules, cmask, routed, iterations, single_assignment):
    """Eq. 1-2 (soft) or eq. 7 (SAR) for one user; returns (capsules, b [L, k])."""
    b = np.zeros((len(points), len(capsules)))
    for _ in range(iterations):
        logits = points @ capsules.T  # [L, k]
        logits = np.where(cmask[None, :], logits, -1e9)
        e = np.exp(logits - logits.max(1, keepdims=True))
        b = e / e.sum(1, keepdims=True)
        if single_assignment:
            b = b * (logits == logits.max(1, keepdims=True))
        b = b * routed[:, None]
        capsules = squash(b.T @ points)
    return capsules * cmask[:, None], b


def mind_routing(points, initial_logits, routed, num_clusters, iterations, dynamic=True):
    """MIND's B2I routing for one user: b = initial logits, then per
    iteration w = softmax_j(b), c_j = squash(sum_i w_ij u_i) over routed
    items, b_ij += c_j . u_i; K' = max(1, min(K, floor(log2 n))) clusters.
    Returns (capsules [K, d] with the masked ones zero, mask [K])."""
    n = routed.sum()
    k_user = int(max(1, min(num_clusters, np.floor(np.log2(max(n, 1)))))) if dynamic else num_clusters
    cmask = (np.arange(num_clusters) < k_user) & (n > 0)
    b = initial_logits.copy()
    capsules = np.zeros((num_clusters, points.shape[1]))
    for _ in range(iterations):
        logits = np.where(cmask[None, :], b, -1e9)
        e = np.exp(logits - logits.max(1, keepdims=True))
        w = e / e.sum(1, keepdims=True) * routed[:, None]
        capsules = squash(w.T @ points)
        b = b + points @ capsules.T
    return capsules * cmask[:, None], cmask


def sampled_softmax_logq(query, candidates, probability, temperature=1.0):
    """Eq. 9 logits for in-batch negatives: s_ij / T - log p_j."""
    return query @ candidates.T / temperature - np.log(probability)[None, :]


def max_scored_loss(embeddings, mask, candidates, probability, ids, temperature, weights=None):
    """In-batch softmax loss with every candidate scored by the max over
    each user's valid embeddings (`association=max`): s_ij = max_k valid
    e_ik . c_j / T - log p_j, accidental hits (same id, off the diagonal)
    removed, summed cross-entropy of the diagonal, each row times its weight."""
    scores = np.einsum("bkd,nd->bkn", embeddings, candidates)
    scores = np.where(mask[:, :, None], scores, -np.inf).max(axis=1) / temperature
    scores = scores - np.log(np.clip(probability, 1e-6, 1.0))[None, :]
    same = ids[:, None] == ids[None, :]
    scores = np.where(same & ~np.eye(len(ids), dtype=bool), -np.inf, scores)
    top = scores.max(axis=1, keepdims=True)
    log_softmax = scores - top - np.log(np.exp(scores - top).sum(axis=1, keepdims=True))
    weights = np.ones(len(ids)) if weights is None else weights
    return float(-(np.diag(log_softmax) * weights).sum())


def similarity_excess(embeddings, mask, margin):
    """Per user: mean over pairs of distinct valid embeddings of max(0, cos - margin)."""
    out = np.zeros(len(embeddings))
    for b, (emb, m) in enumerate(zip(embeddings, mask)):
        unit = emb[m] / np.linalg.norm(emb[m], axis=1, keepdims=True)
        values = [max(0.0, float(unit[i] @ unit[j]) - margin)
                  for i in range(len(unit)) for j in range(len(unit)) if i != j]
        out[b] = np.mean(values) if values else 0.0
    return out


def hit_rate(user_embeddings, corpus, target, exclude, k):
    """SPEC §6.5 for one record: rank = 1 + #corpus items scoring strictly higher."""
    scores = (user_embeddings @ corpus.T).max(0)
    target_score = scores[target]
    higher = [i for i in range(len(corpus)) if scores[i] > target_score and i not in exclude]
    return float(1 + len(higher) <= k)


def round_robin(lists, budget, total):
    """The merge as first written, one candidate at a time: the definition
    `round_robin` must equal. Verbatim but for noting (embedding, position)
    of each merged candidate.

    Returns: (merged ids, [(embedding, position)]).
    """
    order = sorted(range(len(budget)), key=lambda j: (-budget[j], j))
    cursor = [0] * len(budget)
    spent = [0] * len(budget)
    taken: set[int] = set()
    merged: list[int] = []
    sources: list[tuple[int, int]] = []
    active = [j for j in order if budget[j] > 0]
    while active and len(merged) < total:
        still = []
        for j in active:
            row = lists[j]
            while cursor[j] < len(row) and (row[cursor[j]] < 0 or int(row[cursor[j]]) in taken):
                cursor[j] += 1
            if cursor[j] == len(row):
                continue
            item = int(row[cursor[j]])
            taken.add(item)
            merged.append(item)
            sources.append((j, cursor[j]))
            spent[j] += 1
            if len(merged) == total:
                break
            if spent[j] < budget[j]:
                still.append(j)
        active = still
    return merged, sources


def apportion(weights, total):
    """Largest-remainder integer shares of `total` by `weights` (ties: lower index)."""
    weights = np.asarray(weights, np.float64)
    share = weights * total / weights.sum()
    base = np.floor(share).astype(int)
    order = sorted(range(len(weights)), key=lambda j: (-(share[j] - base[j]), j))
    for j in order[: total - base.sum()]:
        base[j] += 1
    return base
