"""How the candidates of several user embeddings become one list (SPEC §2.5).

One ANN query per user embedding; implicit embeddings get budgets
proportional to their importance (paper §3.4: sum_i b_ij, "prevents
over-fetching candidates from torso and tail interests"), explicit ones
equal budgets; the per-embedding lists are merged round-robin with
de-duplication (`round_robin`, the paper's policy). `score_merge` is the
alternative the quality issue measures: per-embedding lists merged by score
with a small per-embedding floor. NumPy only (no other stage), shared by
offline evaluation (`served` HR) and the retrieval service, so the number
reported offline is the policy served.

Both run per request in the service (K ~ 12 lists of up to a few thousand
candidates, 15 ms p90 for the whole request), so they are vectorised: the
round-robin merge walks in Python only the candidates de-duplication can
skip, or, when most of the lists are shared, each list once in turn order
(`round_robin_sources`); `benchmarks/merge.py` times them.
"""

from __future__ import annotations

import heapq
import itertools

import numpy as np

POLICIES = ("round_robin", "score")
DEFAULT_FLOOR = 10  # `score` policy: candidates each embedding is guaranteed
# `round_robin_sources` replays the repeated candidates with a heap while
# fewer than 1/WALK_SHARE of those read are repeated, else walks every list
# in turn (`python -m benchmarks.merge`, p50: `parallel` lists 2.6 -> 0.9 ms,
# `heavy` 0.65 ms either way; `realistic` keeps the heap, 0.26 vs 0.88 ms).
WALK_SHARE = 4


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
    """Merges one user's ranked lists (the offline `served` HR definition).

    Args:
      lists: `[K, depth]` candidate ids per embedding, best first (< 0 = none).
      budget: `[K]` how many *new* candidates each embedding may contribute.
      total: the merged list's length limit.

    Returns:
      The merged candidates: round r takes, from each embedding in order of
      decreasing budget (ties: lower index) whose budget is not spent, its
      best candidate not already taken; an embedding that runs out of
      candidates leaves its remaining budget unused. A thin wrapper over
      `round_robin_sources`, so the two cannot diverge.
    """
    return round_robin_sources(lists, budget, total)[0].tolist()


def round_robin_sources(lists: np.ndarray, budget: np.ndarray,
                        total: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`round_robin`, with the embedding and list position behind each candidate.

    De-duplication makes the merge sequential, but only a candidate whose id
    occurs more than once among the list prefixes it reads (or padding) can
    ever be skipped. Those alone are replayed in slot order (`_walk`); every
    other candidate is taken when its embedding reaches it, so a row takes
    its first `budget + skipped` positions less the skipped ones, and the
    rows are interleaved with NumPy (`_interleave`). Each row is read to
    twice its budget (+16) first, further only if it runs out there.

    Args:
      lists: `[K, depth]` int candidate ids per embedding, best first (< 0 = none).
      budget: `[K]` int, how many new candidates each embedding may contribute.
      total: the merged list's length limit.

    Returns:
      `(items, source, position)`, each `[n]` with `n <= total`, in merge
      order: int64 ids, int32 embedding index, int32 index within that
      embedding's list (`lists[source, position] == items`).

    Raises:
      ValueError: `lists` is not `[K, depth]` or `budget` not `[K]`.
    """
    lists, budget = _check(lists, budget)
    total = max(int(total), 0)
    order = np.argsort(-budget, kind="stable")  # turns within a round: ties to the lower index
    share = np.minimum(budget[order], total)
    live = int(np.count_nonzero(share > 0))
    rows, share = order[:live].tolist(), share[:live].tolist()
    depth = lists.shape[1]
    need = [min(depth, 2 * b + 16) for b in share]
    while rows and total:
        cat = np.concatenate([lists[j, :n] for j, n in zip(rows, need)])
        offsets = list(itertools.accumulate(need, initial=0))
        repeated = _repeated(cat)
        if len(repeated) * WALK_SHARE > len(cat):  # mostly shared lists: one pass in turn order is cheaper
            return _take_in_turn(lists, np.asarray(rows), share, need, total)
        skips, skipped = _walk(cat, offsets, repeated, share)
        short = [n < depth and n - s < b for n, s, b in zip(need, skipped, share)]
        if not any(short):
            return _interleave(cat, offsets, rows, share, skips, skipped, total)
        need = [min(depth, 4 * n) if s else n for n, s in zip(need, short)]
    return np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32)


def score_merge(lists: np.ndarray, scores: np.ndarray, budget: np.ndarray, total: int,
                floor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-embedding lists merged by score, with a small per-embedding floor.

    The alternative to `round_robin` that the quality issue measures: rather
    than every embedding filling its budget, the best-scored candidates win,
    but each embedding keeps a small floor so small interests still appear.
    First every embedding contributes up to `min(floor, budget_j)` of its best
    candidates not yet taken (`round_robin_sources` with those budgets, so
    ties in the clipped budget go to the lower index); then the remaining
    slots up to `total` go to the highest-scoring candidates not yet taken
    across all lists, budgets ignored. A candidate in several lists counts
    under the list that scored it highest (ties: lower embedding index, then
    lower position), and the fill is ordered by that score, descending, with
    the same ties.

    Args:
      lists: `[K, depth]` int candidate ids per embedding, best first (< 0 = none).
      scores: `[K, depth]` float scores of `lists`, compared as float32 (NaN counts as -inf).
      budget: `[K]` int budgets (`budgets`).
      total: the merged list's length limit.
      floor: candidates each embedding is guaranteed (up to its budget, as
        long as it has untaken candidates and `total` leaves room).

    Returns:
      `(items, source, position)` as in `round_robin_sources`: the floor part
      in round-robin order, then the fill by descending score.

    Raises:
      ValueError: a negative `floor`, or shapes that do not match.
    """
    if int(floor) < 0:
        raise ValueError(f"floor={floor!r}; allowed: an integer >= 0")
    lists, budget = _check(lists, budget)
    scores = np.asarray(scores, np.float32)
    if scores.shape != lists.shape:
        raise ValueError(f"scores has shape {scores.shape}; allowed: the shape of lists, {lists.shape}")
    first = round_robin_sources(lists, np.minimum(np.maximum(budget, 0), int(floor)), total)
    left = max(int(total), 0) - len(first[0])
    if left <= 0:
        return first
    fill = _best_scored(lists, scores, first[0], left)
    return tuple(np.concatenate([a, b]) for a, b in zip(first, fill))


def merge(policy: str, lists: np.ndarray, scores: np.ndarray | None, budget: np.ndarray, total: int,
          floor: int = DEFAULT_FLOOR) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One request's merge under a named policy (the service's entry point).

    Args:
      policy: one of `POLICIES`: `round_robin` (paper) or `score`.
      lists: `[K, depth]` int candidate ids, best first (< 0 = none).
      scores: `[K, depth]` float scores of `lists` (unused by `round_robin`).
      budget: `[K]` int budgets (`budgets`).
      total: the merged list's length limit.
      floor: `score` only: candidates each embedding is guaranteed.

    Returns:
      `(items, source, position)` as in `round_robin_sources`.

    Raises:
      ValueError: an unknown `policy`, or what the policy raises.
    """
    if policy == "round_robin":
        return round_robin_sources(lists, budget, total)
    if policy == "score":
        return score_merge(lists, scores, budget, total, floor)
    raise ValueError(f"policy={policy!r}; allowed: {', '.join(POLICIES)}")


def _check(lists, budget) -> tuple[np.ndarray, np.ndarray]:
    """`lists` as a C-contiguous `[K, depth]` int64 array, `budget` as `[K]` int64."""
    lists = np.ascontiguousarray(lists, np.int64)
    budget = np.asarray(budget).astype(np.int64)
    if lists.ndim != 2:
        raise ValueError(f"lists has shape {lists.shape}; allowed: [K, depth]")
    if budget.shape != (len(lists),):
        raise ValueError(f"budget has shape {budget.shape}; allowed: [K] = ({len(lists)},)")
    return lists, budget


def _grouped(ids: np.ndarray, tags: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorts `(id, tag)` pairs by id, then tag.

    Packs both into one int64 and sorts values (several times faster than
    an argsort) when the ids leave room, else a stable argsort.

    Args:
      ids: `[n]` int64.
      tags: `[n]` int64 in `[0, limit)`, ascending.
      limit: bound on `tags`.

    Returns:
      `(ids, tags)`, both `[n]`, reordered.
    """
    bits = max(int(limit) - 1, 1).bit_length()
    room = 1 << (62 - bits)
    if len(ids) and not -room < int(ids.min()) <= int(ids.max()) < room:
        order = np.argsort(ids, kind="stable")
        return ids[order], tags[order]
    packed = np.sort((ids << bits) | tags)
    return packed >> bits, packed & ((1 << bits) - 1)


def _starts(values: np.ndarray) -> np.ndarray:
    """`[n + 1]` bool: True where a run of equal `values` starts, and at n."""
    new = np.ones(len(values) + 1, bool)
    np.not_equal(values[1:], values[:-1], out=new[1:-1])
    return new


def _repeated(cat: np.ndarray) -> np.ndarray:
    """Positions, ascending, of the entries of `cat` (`[n]` int64) whose id
    occurs more than once or is padding (< 0)."""
    ids, where = _grouped(cat, np.arange(len(cat)), len(cat))
    new = _starts(ids)
    hot = ~(new[:-1] & new[1:])
    hot[: np.searchsorted(ids, 0)] = True
    return np.sort(where[hot])


def _walk(cat: np.ndarray, offsets: list[int], repeated: np.ndarray,
          share: list[int]) -> tuple[np.ndarray, list[int]]:
    """Replays the merge over the candidates it can skip.

    A row examines its position p in round p - (candidates it skipped
    before p), in its turn, and skips it iff the id was taken in an earlier
    slot (or is padding). A heap of (round, turn) keys visits the
    `repeated` candidates in that order; the others are always taken, so
    they only move their row on.

    Args:
      cat: `[n]` int64, the rows' prefixes concatenated in turn order.
      offsets: `K + 1` ints, where each row starts in `cat`.
      repeated: positions in `cat` (`_repeated`).
      share: `K` budgets in turn order.

    Returns:
      `(skips, skipped)`: `[s]` positions in `cat` of the candidates the
      merge examines and skips, and `K` counts of them per row.
    """
    k = len(share)
    where, ids = repeated.tolist(), np.maximum(cat[repeated], -1).tolist()
    bounds = np.searchsorted(repeated, offsets).tolist()
    cursor, end = bounds[:-1], bounds[1:]
    shift = offsets[:-1]  # row start + skipped so far: round = position - shift
    heap = [(where[cursor[t]] - shift[t]) * k + t for t in range(k)
            if cursor[t] < end[t] and where[cursor[t]] - shift[t] < share[t]]
    heapq.heapify(heap)
    taken = {-1}  # padding is never taken
    skips = []
    while heap:
        t = heap[0] % k
        e = cursor[t]
        if ids[e] in taken:
            shift[t] += 1
            skips.append(where[e])
        else:
            taken.add(ids[e])
        cursor[t] = e = e + 1
        if e < end[t] and where[e] - shift[t] < share[t]:
            heapq.heapreplace(heap, (where[e] - shift[t]) * k + t)
        else:
            heapq.heappop(heap)
    return np.asarray(skips, np.int64), [s - o for s, o in zip(shift, offsets)]


def _take_in_turn(lists: np.ndarray, rows: np.ndarray, share: list[int], need: list[int],
                  total: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`round_robin_sources` by the definition: round after round, each row
    in turn (`rows`, budgets `share`) takes its next candidate not yet
    taken. Cost: one step per candidate read, a set of taken ids; each row
    is read into Python to its first `need` positions, further as it runs out."""
    sub = np.maximum(lists[rows], -1)
    depth = sub.shape[1]
    flat = [sub[t, :n].tolist() for t, n in enumerate(need)]
    taken = {-1}  # padding is never taken
    left, cursor = list(share), [0] * len(rows)
    turns = list(range(len(rows)))
    source, position = [], []
    while turns and len(source) < total:
        again = []
        for t in turns:
            row, c = flat[t], cursor[t]
            while True:
                end = len(row)
                while c < end and row[c] in taken:
                    c += 1
                if c < end or end == depth:
                    break
                row.extend(sub[t, end:min(depth, 2 * end)].tolist())  # read on
            if c == end:
                continue  # ran out: its remaining budget stays unused
            taken.add(row[c])
            source.append(t)
            position.append(c)
            cursor[t] = c + 1
            left[t] -= 1
            if len(source) == total:
                break
            if left[t]:
                again.append(t)
        turns = again
    source, position = np.asarray(source, np.int64), np.asarray(position, np.int64)
    return lists[rows[source], position], rows[source].astype(np.int32), position.astype(np.int32)


def _interleave(cat: np.ndarray, offsets: list[int], rows: list[int], share: list[int], skips: np.ndarray,
                skipped: list[int], total: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lays the rows' taken candidates out in slot order (round, then turn), cut at `total`.

    Row t takes its first `share[t] + skipped[t]` positions less the
    skipped ones; a `[K, rounds]` grid read column by column interleaves them.
    """
    k = len(rows)
    length = [b - a for a, b in zip(offsets, offsets[1:])]
    count = [min(n - s, b) for n, s, b in zip(length, skipped, share)]
    reach = [a + min(n, b + s) for a, n, b, s in zip(offsets, length, share, skipped)]
    take = np.arange(len(cat)) < np.repeat(reach, length)
    take[skips] = False
    grid = np.full((k, max(count)), -1, np.int64)
    grid[np.arange(grid.shape[1]) < np.asarray(count)[:, None]] = np.flatnonzero(take)
    flat = grid.T.ravel()
    slot = np.flatnonzero(flat >= 0)[:total]
    chosen, turn = flat[slot], slot % k
    return cat[chosen], np.asarray(rows, np.int32)[turn], (chosen - np.asarray(offsets)[turn]).astype(np.int32)


def _best_scored(lists: np.ndarray, scores: np.ndarray, taken: np.ndarray,
                 count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to `count` ids not in `taken`, best score first, each under its best entry.

    Orders the entries by (score descending, row, position); an id's first
    entry in that order is its best. Only the best few entries are ordered
    (all that score at least the `wanted`-th best, so ties stay whole),
    `wanted` growing until they hold `count` new ids.

    Args:
      lists: `[K, depth]` int64 ids (< 0 = none).
      scores: `[K, depth]` float32.
      taken: `[t]` int64 ids already merged.
      count: how many to return.

    Returns:
      `(items, source, position)` as in `round_robin_sources`.
    """
    depth = lists.shape[1]
    ids = lists.ravel()
    cost, none = -scores.ravel(), ids < 0
    cost[none] = np.nan  # np.partition puts NaN last
    valid = len(ids) - int(np.count_nonzero(none))
    wanted = min(valid, 2 * (count + len(taken)) + 64)
    while True:
        bound = np.partition(cost, wanted - 1)[wanted - 1] if 0 < wanted < valid else np.inf
        # At +inf (-inf or NaN scores, which tie) or NaN: order every entry.
        where = np.flatnonzero(cost <= bound) if bound < np.inf else np.flatnonzero(~none)
        fresh, where = _first_seen(ids, scores.ravel(), where, taken)
        if len(fresh) >= count or len(where) == valid:
            break
        wanted = min(valid, 4 * wanted)
    where = where[fresh[:count]]
    rows = where // depth
    return ids[where], rows.astype(np.int32), (where - rows * depth).astype(np.int32)


def _first_seen(ids: np.ndarray, scores: np.ndarray, where: np.ndarray,
                taken: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orders entries `where` by (score descending, flat index) and finds each
    id's first entry among them.

    Args:
      ids, scores: `[K * depth]` the flattened lists and scores.
      where: `[m]` flat indices, ascending.
      taken: `[t]` ids to leave out.

    Returns:
      `(fresh, where)`: `where` reordered, and `fresh`, ascending indices
      into it of the first entry of each id not in `taken`.
    """
    bits = max(len(ids) - 1, 1).bit_length()
    where = np.sort((_descending(scores[where]) << bits) | where) & ((1 << bits) - 1)
    seen = np.concatenate([taken, ids[where]])
    seen, tags = _grouped(seen, np.arange(len(seen)), len(seen))
    first = tags[_starts(seen)[:-1]]  # each id's best entry; `taken` ones come first
    return np.sort(first[first >= len(taken)]) - len(taken), where


def _descending(scores: np.ndarray) -> np.ndarray:
    """`[n]` int64 in `[0, 2**32)` that sorts ascending as `scores` (`[n]`
    float32) sort descending: the float bits made order-preserving, with
    NaN as -inf and -0.0 as 0.0."""
    scores = np.where(np.isnan(scores), np.float32(-np.inf), scores) + np.float32(0.0)
    bits = scores.view(np.int32).astype(np.int64)
    return (1 << 31) - 1 - np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
