"""How the candidates of several user embeddings become one list (SPEC §2.5).

One ANN query per user embedding; implicit embeddings get budgets
proportional to their importance (paper §3.4: sum_i b_ij, "prevents
over-fetching candidates from torso and tail interests"), explicit ones
equal budgets; the per-embedding lists are merged round-robin with
de-duplication. Pure NumPy, shared by offline evaluation (`served` HR) and
the retrieval service, so the number reported offline is the policy served.
"""

from __future__ import annotations

import numpy as np


def budgets(importance: np.ndarray, mask: np.ndarray, total: int) -> np.ndarray:
    """Integer budgets per embedding that sum to `total` for every user.

    Args:
      importance: `[B, K]` non-negative weights (equal weights = equal budgets).
      mask: `[B, K]` bool, False = the embedding does not exist (budget 0).
      total: candidates per user.

    Returns:
      `[B, K]` int64, largest-remainder apportionment of `total` by
      `importance` over the unmasked embeddings (ties to the lower index); a
      user whose unmasked importances are all zero gets equal shares; a user
      with no unmasked embedding gets all zeros.
    """
    importance = np.where(mask, np.maximum(np.asarray(importance, np.float64), 0.0), 0.0)
    flat = mask & (importance.sum(axis=1, keepdims=True) <= 0)
    weights = np.where(flat, 1.0, importance)
    norm = weights.sum(axis=1, keepdims=True)
    share = np.divide(weights * total, norm, out=np.zeros_like(weights), where=norm > 0)
    base = np.floor(share).astype(np.int64)
    left = np.where(norm[:, 0] > 0, total - base.sum(axis=1), 0)
    remainder = np.where(mask, share - base, -1.0)
    order = np.argsort(-remainder, axis=1, kind="stable")
    extra = np.zeros_like(base)
    rows = np.arange(len(base))[:, None]
    extra[rows, order] = np.arange(base.shape[1])[None, :] < left[:, None]
    return base + extra


def round_robin(lists: np.ndarray, budget: np.ndarray, total: int) -> list[int]:
    """Merges one user's ranked lists.

    Args:
      lists: `[K, depth]` candidate ids per embedding, best first (-1 = none).
      budget: `[K]` how many *new* candidates each embedding may contribute.
      total: the merged list's length limit.

    Returns:
      The merged candidates: round r takes, from each embedding in order of
      decreasing budget (ties: lower index) whose budget is not spent, its
      best candidate not already taken; an embedding that runs out of
      candidates leaves its remaining budget unused.
    """
    order = sorted(range(len(budget)), key=lambda j: (-budget[j], j))
    cursor = [0] * len(budget)
    spent = [0] * len(budget)
    taken: set[int] = set()
    merged: list[int] = []
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
            spent[j] += 1
            if len(merged) == total:
                break
            if spent[j] < budget[j]:
                still.append(j)
        active = still
    return merged
