"""Layer numerics against the NumPy references in tests/numpy_reference.py."""

from __future__ import annotations

import numpy as np
import pytest

import numpy_reference as ref
from trainer.layers._keras import tf
from trainer.layers.association import InterestAssociation
from trainer.layers.differentiable_clustering import DifferentiableClustering
from trainer.layers.farthest_point_init import farthest_point_init
from trainer.layers.squash import squash

rng = np.random.default_rng(7)


def test_squash_matches_reference_and_bounds_norm():
    v = rng.normal(size=(5, 4)).astype(np.float32) * np.array([[0.01], [0.5], [1], [3], [30]], np.float32)
    got = squash(tf.constant(v)).numpy()
    np.testing.assert_allclose(got, ref.squash(v), rtol=1e-5, atol=1e-7)
    norms = np.linalg.norm(got, axis=1)
    # |squash(v)| = |v|^2 / (1 + |v|^2), always < 1.
    np.testing.assert_allclose(norms, (np.linalg.norm(v, axis=1) ** 2) / (1 + np.linalg.norm(v, axis=1) ** 2),
                               rtol=1e-5)
    assert np.all(norms < 1)


def test_fpi_hand_case_picks_farthest_and_skips_invalid():
    # Items on the unit circle at 0, 10, 180, 90, 200 degrees; item 2 is invalid.
    angles = np.deg2rad([0, 10, 180, 90, 200])
    points = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)[None]
    eligible = np.array([[1, 1, 0, 1, 1]], bool)
    centroids, mask = farthest_point_init(tf.constant(points), tf.constant(eligible), 3, tf.constant([0]))
    # From 0 deg the farthest eligible is 200 deg (180 is invalid), then 90 deg.
    np.testing.assert_allclose(centroids.numpy()[0], points[0, [0, 4, 3]], atol=1e-6)
    assert mask.numpy().tolist() == [[True, True, True]]


@pytest.mark.parametrize("valid_count", [0, 1, 2, 5])
def test_fpi_matches_reference_and_masks_instead_of_duplicating(valid_count):
    points = rng.normal(size=(1, 6, 4)).astype(np.float32)
    eligible = np.zeros((1, 6), bool)
    eligible[0, :valid_count] = True
    first = np.array([max(valid_count - 1, 0)])
    got_c, got_m = farthest_point_init(tf.constant(points), tf.constant(eligible), 4, tf.constant(first))
    want_c, want_m = ref.farthest_point_init(points[0], eligible[0], 4, first[0])
    np.testing.assert_allclose(got_c.numpy()[0], want_c, atol=1e-6)
    assert got_m.numpy()[0].tolist() == want_m.tolist()
    assert got_m.numpy().sum() == min(valid_count, 4)
    chosen = got_c.numpy()[0][got_m.numpy()[0]]
    assert len({tuple(np.round(c, 5)) for c in chosen}) == len(chosen)  # no duplicates


@pytest.mark.parametrize("routing_gradient", ["last", "all"])
@pytest.mark.parametrize("single_assignment", [True, False])
def test_routing_matches_reference(single_assignment, routing_gradient):
    items = rng.normal(size=(2, 7, 5)).astype(np.float32)
    mask = np.ones((2, 7), bool)
    mask[1, 5:] = False
    valid = mask.copy()
    valid[0, 2] = False
    layer = DifferentiableClustering(3, 4, iterations=3, init="va_fpi",
                                     single_assignment=single_assignment, validity_filter=True,
                                     routing_gradient=routing_gradient)
    out = layer({"items": items, "valid": valid, "mask": mask}, training=False)
    points = layer.bilinear(tf.constant(items)).numpy()
    for b in range(2):
        eligible = valid[b] & mask[b]
        first = int(np.flatnonzero(eligible).max())  # inference: most recent eligible item
        init, cmask = ref.farthest_point_init(points[b], eligible, 3, first)
        caps, routing = ref.routing(points[b], init, cmask, eligible.astype(np.float32), 3, single_assignment)
        np.testing.assert_allclose(out["capsules"].numpy()[b], caps, atol=1e-5)
        np.testing.assert_allclose(out["importance"].numpy()[b], routing.sum(0) * cmask, atol=1e-5)
        if single_assignment:
            # SAR: every item routes to exactly one cluster.
            assert ((out["routing"].numpy()[b] > 0).sum(1) <= 1).all()


def test_single_assignment_masks_clusters_left_without_items():
    """Identical items: FPI picks three of them as centroids, SAR routes all
    five to the first cluster; the two empty clusters are masked, not served."""
    items = np.tile(rng.normal(size=(1, 1, 5)).astype(np.float32), (1, 5, 1))
    mask = np.ones((1, 5), bool)
    layer = DifferentiableClustering(3, 4, iterations=3, single_assignment=True)
    out = layer({"items": items, "valid": mask, "mask": mask}, training=False)
    assert out["mask"].numpy().tolist() == [[True, False, False]]
    importance = out["importance"].numpy()[0]
    assert importance[0] > 0 and (importance[1:] == 0).all()
    soft = DifferentiableClustering(3, 4, iterations=3, single_assignment=False)
    assert soft({"items": items, "valid": mask, "mask": mask}, training=False)["mask"].numpy().all()


@pytest.mark.parametrize("first_centroid", ["random", "recent"])
def test_first_centroid_recent_trains_the_served_clusters(first_centroid):
    """`recent`: training clusters from the most recent eligible item, as
    inference does, so the clusters trained are the clusters served."""
    items = rng.normal(size=(16, 9, 5)).astype(np.float32)
    mask = np.ones((16, 9), bool)
    layer = DifferentiableClustering(3, 4, iterations=2, first_centroid=first_centroid)
    served = layer({"items": items, "valid": mask, "mask": mask}, training=False)["capsules"].numpy()
    trained = layer({"items": items, "valid": mask, "mask": mask, "seed": tf.constant([3, 4], tf.int64)},
                    training=True)["capsules"].numpy()
    same = np.isclose(served, trained, atol=1e-6).all(axis=(1, 2))
    assert same.all() if first_centroid == "recent" else not same.all()


def test_routing_gradient_last_treats_routing_as_constant():
    """`last`: d capsules / d items is that of squash(R S e) with the final
    routing R held constant; `all` also differentiates through R and the
    initial centroids, so its gradient differs."""
    items = tf.constant(rng.normal(size=(2, 7, 5)).astype(np.float32))
    mask = np.ones((2, 7), bool)
    weights = tf.constant(rng.normal(size=(2, 3, 4)).astype(np.float32))
    grads = {}
    for mode in ("last", "all"):
        layer = DifferentiableClustering(3, 4, iterations=3, routing_gradient=mode)
        layer.build({"items": items.shape})
        layer.bilinear.kernel.assign(np.linspace(-1, 1, 20, dtype=np.float32).reshape(5, 4))
        with tf.GradientTape() as tape:
            tape.watch(items)
            out = layer({"items": items, "valid": mask, "mask": mask}, training=False)
            loss = tf.reduce_sum(out["capsules"] * weights)
        grads[mode] = tape.gradient(loss, items).numpy()
        routing = tf.constant(out["routing"].numpy())
    with tf.GradientTape() as tape:
        tape.watch(items)
        caps = squash(tf.einsum("blk,bld->bkd", routing, layer.bilinear(items)))
        loss = tf.reduce_sum(caps * weights)
    np.testing.assert_allclose(grads["last"], tape.gradient(loss, items).numpy(), rtol=1e-4, atol=1e-6)
    assert np.abs(grads["all"] - grads["last"]).max() > 1e-3
    with pytest.raises(ValueError, match="routing_gradient='some'; allowed: last, all"):
        DifferentiableClustering(3, 4, routing_gradient="some")


def test_association_argmax_reference_and_gumbel_gradients():
    emb = tf.constant(rng.normal(size=(4, 3, 5)).astype(np.float32))
    target = tf.constant(rng.normal(size=(4, 5)).astype(np.float32))
    mask = tf.constant(np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 1]], bool))
    out = InterestAssociation("argmax")({"embeddings": emb, "mask": mask, "target": target})
    scores = np.einsum("bkd,bd->bk", emb.numpy(), target.numpy())
    want = np.where(mask.numpy(), scores, -np.inf).argmax(1)
    assert out["index"].numpy().tolist() == want.tolist()
    np.testing.assert_allclose(out["selected"].numpy(), emb.numpy()[np.arange(4), want])
    grads = {}
    for mode in ("argmax", "gumbel"):
        var = tf.Variable(emb)
        with tf.GradientTape() as tape:
            sel = InterestAssociation(mode)({"embeddings": var, "mask": tf.ones((4, 3), tf.bool),
                                             "target": target}, training=True)["selected"]
            loss = tf.reduce_sum(sel * target)
        grads[mode] = np.abs(tape.gradient(loss, var).numpy()).sum(-1)
    # Winner takes all: argmax gives gradients to one embedding per user;
    # straight-through Gumbel reaches all of them.
    assert ((grads["argmax"] > 0).sum(1) == 1).all()
    assert ((grads["gumbel"] > 0).sum(1) == 3).all()


def test_logq_lowers_frequent_items_more():
    query = rng.normal(size=(3, 4))
    cands = rng.normal(size=(3, 4))
    p = np.array([0.5, 0.01, 0.01])  # candidate 0 is frequent, 1 and 2 rare
    raw = ref.sampled_softmax_logq(query, cands, np.ones(3))
    corrected = ref.sampled_softmax_logq(query, cands, p)
    adjustment = corrected - raw  # = -log p: +0.69 frequent, +4.61 rare
    np.testing.assert_allclose(adjustment[:, 0], -np.log(0.5))
    # Relative to a rare candidate, the frequent one loses 4.61 - 0.69 = 3.9.
    assert (adjustment[:, 0] < adjustment[:, 1]).all()
    np.testing.assert_allclose(adjustment[:, 1] - adjustment[:, 0], np.log(0.5 / 0.01))
    # The model uses TFRS's correction, which has the same sign.
    import tensorflow_recommenders as tfrs

    tf_corr = tfrs.layers.loss.SamplingProbablityCorrection()(tf.constant(raw, tf.float32),
                                                             tf.constant(p, tf.float32)).numpy()
    np.testing.assert_allclose(tf_corr, corrected, rtol=1e-5)


def test_hit_rate_hand_case():
    # Two user embeddings; corpus of 4 items; score = max over embeddings.
    user = np.array([[1.0, 0.0], [0.0, 1.0]])
    corpus = np.array([[0.9, 0.0], [0.0, 0.8], [0.5, 0.5], [0.95, 0.1]])
    # Scores: [0.9, 0.8, 0.5, 0.95]. Target item 1 (0.8): items 0 and 3 are
    # higher -> rank 3; excluding item 3 (seen) -> rank 2.
    assert ref.hit_rate(user, corpus, 1, set(), 2) == 0.0
    assert ref.hit_rate(user, corpus, 1, {3}, 2) == 1.0
    assert ref.hit_rate(user, corpus, 1, set(), 3) == 1.0


def test_effective_interests_counts_used_slots():
    from trainer.diagnostics import effective_interests

    assert float(effective_interests(tf.constant([2, 2, 2, 2]), 4)) == pytest.approx(1.0)
    assert float(effective_interests(tf.constant([0, 1, 2, 3]), 4)) == pytest.approx(4.0)
    # p = (1/2, 1/4, 1/4): exp(H) = 2^(3/2)
    assert float(effective_interests(tf.constant([0, 0, 1, 3]), 4)) == pytest.approx(2 ** 1.5, rel=1e-5)


def test_sequence_encoder_reads_valid_items_in_order():
    """Padding and invalid items do not change the summary; the order of the
    valid items does (recency); no valid item gives zeros."""
    from trainer.layers.sequence_encoder import SequenceEncoder

    tf.keras.utils.set_random_seed(0)  # its weights: unseeded, they followed whatever ran before in the worker
    layer = SequenceEncoder(max_length=8, num_layers=1, num_heads=2, ff_dim=16)
    items = rng.normal(size=(3, 6, 4)).astype(np.float32)
    valid = np.array([[1, 1, 0, 1, 1, 0], [1, 1, 0, 1, 1, 0], [0] * 6], bool)
    items[1] = items[0]
    items[1, 2] += 5.0  # an invalid item changed
    items[1, 5] -= 3.0  # padding changed
    out = layer({"items": items, "valid": valid}).numpy()
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    assert (out[2] == 0).all()
    swapped = items.copy()
    swapped[0, [0, 1]] = items[0, [1, 0]]
    assert np.abs(layer({"items": swapped, "valid": valid}).numpy()[0] - out[0]).max() > 1e-4


def test_mind_original_routing_matches_reference():
    """`logits=accumulate` with Gaussian init is MIND's B2I routing: random
    logits, accumulated agreement, K' = max(1, min(K, floor(log2 n)))."""
    items = rng.normal(size=(3, 9, 5)).astype(np.float32)
    mask = np.ones((3, 9), bool)
    mask[1, 3:] = False  # 3 items: K' = 1
    mask[2, 5:] = False  # 5 items: K' = 2
    layer = DifferentiableClustering(4, 6, iterations=3, init="gaussian", single_assignment=False,
                                     logits="accumulate", dynamic_interests=True, seed=5)
    out = layer({"items": items, "valid": mask, "mask": mask}, training=False)
    points = layer.bilinear(tf.constant(items)).numpy()
    initial = np.tile(tf.random.stateless_normal([1, 9, 4], seed=[5, 17]).numpy(), (3, 1, 1))
    for b in range(3):
        want, cmask = ref.mind_routing(points[b], initial[b], mask[b].astype(np.float32), 4, 3)
        assert out["mask"].numpy()[b].tolist() == cmask.tolist()
        np.testing.assert_allclose(out["capsules"].numpy()[b], want, atol=1e-5)
    assert out["mask"].numpy().sum(1).tolist() == [3, 1, 2]
    # 8 items: K' = 3 exactly (float log2 may give 2.9999998); one user's
    # embeddings do not depend on the rest of the batch.
    eight = np.ones((1, 8), bool)
    alone = layer({"items": items[:1, :8], "valid": eight, "mask": eight}, training=False)
    assert alone["mask"].numpy().sum() == 3
    together = layer({"items": items[:, :8], "valid": np.ones((3, 8), bool), "mask": np.ones((3, 8), bool)},
                     training=False)
    np.testing.assert_allclose(together["capsules"].numpy()[0], alone["capsules"].numpy()[0], atol=1e-6)
