"""MovieLens integration on the original GroupLens files (skipped when absent).

Expected counts come from SPEC §6 computed independently with pandas in
`_reference` below, and match the issue's figures (eval records / corpus:
ml-latest-small 10,037 / 8,586; ml-100k 9,924 / 1,637).
"""

from __future__ import annotations

import numpy as np
import pytest

from beam.run import IN_MEMORY, run_prepare
from mer_testing import movielens_dir, read_examples
from trainer.config import load_config

pytestmark = [pytest.mark.data, pytest.mark.slow]


def _reference(users, items, stamps):
    """SPEC §6 with NumPy: stable sort, first (user, item), quantile cutoff."""
    order = np.argsort(stamps, kind="stable")
    seen, kept = set(), []
    for i in order:
        if (users[i], items[i]) not in seen:
            seen.add((users[i], items[i]))
            kept.append(i)
    kept = np.asarray(kept)
    cutoff = np.quantile(stamps[kept], 0.9)
    counts, train_ex, eval_ex = {}, 0, 0
    for i in kept:
        if counts.get(users[i], 0) >= 1:
            if stamps[i] < cutoff:
                train_ex += 1
            else:
                eval_ex += 1
        counts[users[i]] = counts.get(users[i], 0) + 1
    corpus = {items[i] for i in kept if stamps[i] < cutoff}
    return cutoff, train_ex, eval_ex, len(corpus)


@pytest.mark.parametrize(
    "preset, dirname, ratings, expected",
    [
        ("movielens-small", "ml-latest-small", 100_836, (90_189, 10_037, 8_586)),
        ("ml-100k", "ml-100k", 100_000, (89_133, 9_924, 1_637)),
    ],
)
def test_counts_match_protocol(preset, dirname, ratings, expected, tmp_path):
    path = movielens_dir(dirname)
    cfg = load_config(preset, [f"data.source.path={path}"])
    manifest = run_prepare(cfg, str(tmp_path), list(IN_MEMORY))
    assert manifest["balance"]["events"] == {"in": ratings, "kept": ratings, "dead": 0, "ok": True}
    counts = manifest["counts"]
    got = (counts["examples/train/implicit"], counts["examples/eval/implicit"],
           manifest["tables"]["corpus_items"])
    assert got == expected
    if dirname == "ml-100k":
        raw = np.loadtxt(path / "u.data", dtype=np.int64)
        users, items, stamps = raw[:, 0], raw[:, 1], raw[:, 3]
    else:
        raw = np.loadtxt(path / "ratings.csv", delimiter=",", skiprows=1)
        users, items, stamps = raw[:, 0].astype(int), raw[:, 1].astype(int), raw[:, 3].astype(np.int64)
    cutoff, train_ex, eval_ex, corpus = _reference(users, items, stamps)
    assert (train_ex, eval_ex, corpus) == expected
    assert manifest["cutoff"] == pytest.approx(cutoff)
    # Ratings <= 2 are negative actions; topics are genres; follows derived.
    rows = read_examples(f"{tmp_path}/eval/implicit-*")
    assert len(rows) == expected[1]
    assert any(r["target_negative"] for r in rows) and any(not r["target_negative"] for r in rows)
    # Follows come from training-period history only, so users who start in
    # the eval period follow nothing (most ml-latest-small eval users do).
    with_follows = [r for r in rows if len(r["followed_topics"])]
    assert 0 < len(with_follows) < len(rows)
    assert all(len(r["followed_topics"]) <= cfg.data.max_follows for r in rows)
    assert counts["examples/train/explicit"] > 0 and counts["examples/eval/explicit"] > 0
