"""Reference baselines any user could pick instead of a two-tower model.

Every baseline scores the same records over the same corpus as the model, through
`trainer.evaluation.evaluate_scorer` (SPEC §6), from the prepared artifacts:

* `Popularity`: training engagement counts.
* `CoOccurrence`: C[i, j] = times i and j stand within `window` positions of
  each other in one user's chronological training sequence; rows normalised
  to sum 1 (P); score(j) = sum of P[h, j] over the record's history items h,
  plus popularity / 1e9 as a tie-breaker.
* `ALS`: implicit-feedback ALS (the `implicit` package, a benchmark-only
  dependency: `pip install -e .[bench]`); a record's user vector is solved
  from its history alone (`recalculate_user`), hyperparameters picked on a
  validation split carved from the end of the training data (`tune_als`).
* `EASE`: closed-form item-item regression (Steck 2019, "Embarrassingly
  Shallow Autoencoders"): P = (XᵀX + λI)⁻¹ over the binary user × item
  training matrix X, B = I - P·diag(1/diag(P)) (so diag(B) = 0, an item never
  explains itself); score(j) = sum of B[h, j] over the record's history items
  h. λ picked on the validation carve (`tune_ease`). The dense items × items
  Gram matrix is refused above `max_items` (`EASE_MAX_ITEMS`).

Every baseline reads a record's whole history, negative engagements
included: they are engagements (SPEC §6.1), and only the model's towers mark
them invalid.

Training sequences are rebuilt from the training examples: example n's
history ends with event n-1 and its target is event n, so following
target-after-last-history links from the user's first example recovers the
exact SPEC §6 order (items are unique per user after de-duplication).
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator

import numpy as np

from trainer import features
from trainer.evaluation import Corpus, evaluate_scorer, iter_records
from trainer.validation import validation_records


def training_sequences(pattern: str, history_length: int = 50,
                       time_range: tuple[int, int] | None = None) -> dict[bytes, list[bytes]]:
    """Chronological item sequence of every user with a training example.

    Raises:
      ValueError: the examples do not form one chain per user.
    """
    nxt: dict[bytes, dict[bytes, bytes]] = {}
    first: dict[bytes, bytes] = {}
    for batch in iter_records(pattern, 4096, history_length, time_range=time_range):
        users = batch[features.USER_ID].tolist()
        targets = batch[features.TARGET_ITEM_ID].tolist()
        history = batch[features.HISTORY_ITEM_IDS]
        length = (history != b"").sum(axis=1)
        for u, t, h, n in zip(users, targets, history, length):
            if n == 0:
                continue
            links = nxt.setdefault(u, {})
            links[h[n - 1]] = t
            if n == 1:
                first[u] = h[0]
    sequences = {}
    for user, links in nxt.items():
        if user not in first:
            raise ValueError(f"training examples of user {user!r}: no example with a 1-item history "
                             f"(expected with data.min_history=1)")
        item, seq = first[user], [first[user]]
        while item in links and len(seq) <= len(links):
            item = links[item]
            seq.append(item)
        if len(seq) != len(links) + 1:
            raise ValueError(f"training examples of user {user!r} do not chain into one sequence")
        sequences[user] = seq
    return sequences


def _columns(corpus: Corpus, sequences) -> list[np.ndarray]:
    if isinstance(sequences, dict):
        sequences = list(sequences.values())
    cols = [corpus.columns(np.asarray(s, object)) for s in sequences]
    return [c[c >= 0] for c in cols]


def _history_matrix(corpus: Corpus, batch: dict):
    from scipy import sparse

    cols = corpus.columns(batch[features.HISTORY_ITEM_IDS])
    rows = np.repeat(np.arange(len(cols)), cols.shape[1])
    flat = cols.reshape(-1)
    keep = flat >= 0
    data = np.ones(int(keep.sum()), np.float32)
    return sparse.csr_matrix((data, (rows[keep], flat[keep])), shape=(len(cols), len(corpus.ids)))


class Popularity:
    """Most engaged corpus items first (training counts)."""

    def __init__(self, corpus: Corpus):
        self.scores = corpus.popularity.astype(np.float32)

    def __call__(self, batch: dict) -> np.ndarray:
        return np.tile(self.scores, (len(batch[features.USER_ID]), 1))


class CoOccurrence:
    """Windowed item co-occurrence, row-normalised (see module docstring)."""

    def __init__(self, corpus: Corpus, sequences, window: int = 10):
        from scipy import sparse

        rows, cols = [], []
        for seq in _columns(corpus, sequences):
            for offset in range(1, window + 1):
                if len(seq) > offset:
                    rows += [seq[:-offset], seq[offset:]]
                    cols += [seq[offset:], seq[:-offset]]
        n = len(corpus.ids)
        if rows:
            r, c = np.concatenate(rows), np.concatenate(cols)
        else:
            r = c = np.zeros(0, np.int64)
        counts = sparse.csr_matrix((np.ones(len(r), np.float64), (r, c)), shape=(n, n))
        counts.sum_duplicates()
        totals = np.asarray(counts.sum(axis=1)).ravel()
        self.p = sparse.diags(1.0 / np.maximum(totals, 1.0)) @ counts
        self.tie = (corpus.popularity / max(corpus.popularity.max(), 1.0) * 1e-9).astype(np.float64)
        self.corpus = corpus

    def __call__(self, batch: dict) -> np.ndarray:
        h = _history_matrix(self.corpus, batch)
        return np.asarray((h @ self.p).todense()) + self.tie[None, :]


class ALS:
    """Implicit-feedback ALS; user vectors solved from the record's history."""

    def __init__(self, corpus: Corpus, sequences, factors: int = 64,
                 regularization: float = 0.1, alpha: float = 10.0, iterations: int = 15, seed: int = 0):
        from implicit.cpu.als import AlternatingLeastSquares
        from scipy import sparse
        from threadpoolctl import threadpool_limits

        seqs = _columns(corpus, sequences)
        rows = np.concatenate([np.full(len(s), u) for u, s in enumerate(seqs)]) if seqs else np.zeros(0, int)
        cols = np.concatenate(seqs) if seqs else np.zeros(0, int)
        matrix = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                   shape=(len(seqs), len(corpus.ids)))
        # implicit parallelises itself; a threaded BLAS underneath only contends
        # (its constructor checks that, hence both inside the limit).
        with threadpool_limits(1, "blas"):
            self.model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                                 iterations=iterations, random_state=seed)
            self.model.fit(matrix, show_progress=False)
        self.corpus = corpus
        self.params = {"factors": factors, "regularization": regularization, "alpha": alpha,
                       "iterations": iterations}

    def __call__(self, batch: dict) -> np.ndarray:
        h = _history_matrix(self.corpus, batch)
        users = self.model.recalculate_user(np.arange(h.shape[0]), h)
        return users @ self.model.item_factors.T


ALS_GRID = {"factors": (64, 128, 256), "regularization": (0.001, 0.01, 0.1), "alpha": (0.5, 1.0, 4.0)}


def _ease_weights(matrix, l2: float) -> np.ndarray:
    """B = I - P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹, as float32 `[C, C]`.

    Cholesky (LAPACK potrf + potri) instead of a general inverse: the Gram
    matrix plus λI is symmetric positive definite, and this halves the work.
    """
    from scipy.linalg import lapack

    n = matrix.shape[1]
    gram = (matrix.T @ matrix).toarray(order="F")  # float64, Fortran order: LAPACK works in place
    gram[np.diag_indices(n)] += l2
    factor, info = lapack.dpotrf(gram, lower=0, overwrite_a=1, clean=0)
    if info == 0:
        p, info = lapack.dpotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise ValueError(f"EASE l2={l2}: XᵀX + λI is not positive definite (LAPACK info {info}); "
                         f"expected l2 > 0")
    del gram, factor
    # potri fills the upper triangle only; mirror it block by block (no n x n temporary).
    step = 1024
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        p[lo:hi, :lo] = p[:lo, lo:hi].T
        block = p[lo:hi, lo:hi]
        p[lo:hi, lo:hi] = np.triu(block) + np.triu(block, 1).T
    diag = np.diag(p).copy()
    weights = np.empty((n, n), np.float32)
    for lo in range(0, n, step):
        weights[lo:lo + step] = -p[lo:lo + step] / diag[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


EASE_MAX_ITEMS = 30_000


class EASE:
    """Closed-form item-item regression (see module docstring).

    Args:
      corpus: the eval corpus; its size C sets the `[C, C]` weights.
      sequences: training item sequences (one per user).
      l2: λ, the ridge penalty on B (Steck's ML-20M value is 500).
      max_items: refuse corpora above this many items; fitting holds at
        least 12 C² bytes (the float64 Gram / inverse and the float32
        weights; more while the sparse Gram is densified): 10 GiB at 30,000.

    Raises:
      ValueError: the corpus has more than `max_items` items, or l2 <= 0.
    """

    def __init__(self, corpus: Corpus, sequences, l2: float = 500.0, max_items: int = EASE_MAX_ITEMS):
        from scipy import sparse

        n = len(corpus.ids)
        if n > max_items:
            raise ValueError(f"EASE: the corpus has {n} items, above max_items={max_items}: its dense "
                             f"items x items matrices would need at least {12 * n * n / 2**30:.1f} GiB; "
                             f"raise max_items if the machine has the memory, or pick another baseline")
        if not l2 > 0:
            raise ValueError(f"EASE l2={l2}: expected a positive ridge penalty")
        seqs = _columns(corpus, sequences)
        rows = np.concatenate([np.full(len(s), u) for u, s in enumerate(seqs)]) if seqs else np.zeros(0, int)
        cols = np.concatenate(seqs) if seqs else np.zeros(0, int)
        matrix = sparse.csr_matrix((np.ones(len(rows), np.float64), (rows, cols)), shape=(len(seqs), n))
        matrix.data[:] = 1.0  # binary, even if a sequence repeats an item
        self.weights = _ease_weights(matrix, float(l2))
        self.corpus = corpus
        self.params = {"l2": float(l2)}

    def __call__(self, batch: dict) -> np.ndarray:
        h = _history_matrix(self.corpus, batch)
        h.data[:] = 1.0
        return np.asarray(h @ self.weights, np.float32)


# λ grid: Steck's ML-20M optimum (500) and below, for MovieLens-sized data.
EASE_GRID = (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


def select_ease_l2(corpus: Corpus, sequences, records: Callable[[], Iterator[dict]], k: int = 50,
                   grid=EASE_GRID, max_items: int = EASE_MAX_ITEMS) -> tuple[float, list[dict]]:
    """The λ of `grid` with the best HR@k on `records`, EASE fit on `sequences`.

    Args:
      records: called once per λ, returns the record batches to score.

    Returns: the best λ (the smaller on a tie) and every trial's result.
    """
    trials = []
    for l2 in grid:
        model = EASE(corpus, sequences, l2=l2, max_items=max_items)
        ranks = evaluate_scorer(model, corpus, records(), coverage_k=1).ranks
        trials.append({"l2": float(l2), f"hr_at_{k}": float((ranks <= k).mean())})
    best = max(trials, key=lambda t: (t[f"hr_at_{k}"], -t["l2"]))
    return best["l2"], trials


def tune_ease(corpus: Corpus, pattern: str, split: dict, history_length: int = 50, k: int = 50,
              grid=EASE_GRID, max_records: int = 5000, max_items: int = EASE_MAX_ITEMS,
              seed: int = 0) -> tuple[float, list[dict]]:
    """λ on the validation carve (`trainer.validation.training_carve`), as
    `tune_als`: fit on the training sequences before the cutoff, HR@k on
    the training records after it (all of them, or a `seed`ed sample of
    `max_records` when the carve holds more: `trainer.validation`); the
    eval split is never read.

    Returns: the best λ and every trial's result (`val_hr_at_{k}`).
    """
    sequences = training_sequences(pattern, history_length, split["train_range"])
    best, trials = select_ease_l2(
        corpus, sequences,
        lambda: validation_records(pattern, split, max_records, seed, 512, history_length),
        k=k, grid=grid, max_items=max_items)
    return best, [{"l2": t["l2"], f"val_hr_at_{k}": t[f"hr_at_{k}"]} for t in trials]


def tune_als(corpus: Corpus, pattern: str, split: dict, history_length: int = 50, k: int = 50,
             grid: dict = ALS_GRID, seed: int = 0, max_records: int = 5000) -> tuple[dict, list[dict]]:
    """Grid search on the validation carve (`trainer.validation.training_carve`):
    fit on training sequences before the cutoff, HR@k on the records after
    (all, or a `seed`ed sample of `max_records`: `trainer.validation`).

    Returns: the best parameters and every trial's result.
    """
    sequences = training_sequences(pattern, history_length, split["train_range"])
    trials = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        model = ALS(corpus, sequences, seed=seed, **params)
        records = validation_records(pattern, split, max_records, seed, 512, history_length)
        ranks = evaluate_scorer(model, corpus, records, coverage_k=1).ranks
        trials.append({**params, f"val_hr_at_{k}": float((ranks <= k).mean())})
    best = max(trials, key=lambda t: t[f"val_hr_at_{k}"])
    return {p: best[p] for p in grid}, trials
