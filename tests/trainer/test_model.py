"""The model's training step: the argmax fast path is exact; the `max`
association, skipped negative targets and the global interest against a
NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

import numpy_reference as ref
from trainer import features
from trainer.config import load_config
from trainer.data import build_dataset
from trainer.item_table import load_item_table
from trainer.layers._keras import tf
from trainer.model import build_model, create_variables


def _gradients(model, batch, recompute):
    state = [v.numpy() for v in model.frequency.variables]
    model.recompute_selected = recompute
    tf.random.set_seed(7)  # the same random first centroid (training-time VA-FPI) in both runs
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    for var, value in zip(model.frequency.variables, state):
        var.assign(value)
    return float(loss), grads


@pytest.mark.parametrize("kind", ["dcm", "mind", "pfs"])
def test_argmax_recompute_matches_full_backward(world, kind):
    """Forward-all / backward-selected gives the loss and every gradient of
    back-propagating through all K crossings (whose gradients are zero)."""
    tf.keras.utils.set_random_seed(0)
    cfg = load_config("synthetic-small", [f"model.kind={kind}", "model.association=argmax"])
    model = build_model(cfg.model, load_item_table(world), seed=0)
    batch = next(iter(build_dataset(f"{world}/{features.TRAIN_IMPLICIT}-*", 64, 50, shuffle=False)))
    create_variables(model, batch)
    loss_fast, fast = _gradients(model, batch, True)
    loss_full, full = _gradients(model, batch, False)
    assert loss_fast == pytest.approx(loss_full, rel=1e-5)
    pairs = [(var, g_fast, g_full) for var, g_fast, g_full in zip(model.trainable_variables, fast, full)]
    for var, g_fast, g_full in pairs:
        if g_full is None:
            assert g_fast is None, var.name
    dense = [(var, tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy())
             for var, a, b in pairs if b is not None]
    # float32 summation order differs (B vs B*K rows): the tolerance is
    # relative to the largest gradient, so analytically-zero gradients (e.g.
    # attention key biases, ~1e-9 of float noise) compare as zero.
    scale = max(np.abs(g).max() for _, _, g in dense)
    for var, g_fast, g_full in dense:
        np.testing.assert_allclose(g_fast, g_full, rtol=1e-4, atol=1e-5 * scale, err_msg=var.name)
    trained = sum(int(np.abs(g).max() > 1e-4 * scale) for _, _, g in dense)
    assert trained > 10  # the item tower, summariser, interest module and DHEN all train


@pytest.mark.parametrize("overrides", [
    ["model.kind=dcm"],
    ["model.kind=dcm", "model.global_interest=true", "train.negative_targets=skip"],
    ["model.kind=single", "train.negative_targets=skip"],
    ["model.kind=dcm", "model.diversity_weight=2", "model.diversity_margin=0.3"],
    ["model.kind=dcm", "model.global_loss_weight=0.5"],
    ["model.kind=single", "train.logq_weight=0"],
    ["model.kind=dcm", "train.logq_weight=2"],
])
def test_max_association_loss_is_the_served_score(world, overrides):
    """`association=max`: the loss scores the positive and every in-batch
    negative by the max over the user's *valid* embeddings (what serving
    does), a skipped negative target adds nothing to it, and the diversity
    term adds `weight * sum_users mean_pairs relu(cos - margin)`, and the
    global loss adds `weight *` the single-embedding loss of the global slot;
    `train.logq_weight` w subtracts w * log q (none at w = 0)."""
    tf.keras.utils.set_random_seed(0)
    cfg = load_config("synthetic-small", overrides + ["model.association=max"])
    model = build_model(cfg.model, load_item_table(world), seed=0)
    model.use_train_config(cfg.train)
    batch = next(iter(build_dataset(f"{world}/{features.TRAIN_IMPLICIT}-*", 256, 50, shuffle=False)))
    create_variables(model, batch)
    # Unequal sampling probabilities (a flat estimate shifts every logit alike: softmax ignores it).
    ids = np.unique(batch[features.TARGET_ITEM_ID].numpy())
    model.frequency.warm_start(ids, np.arange(1, len(ids) + 1, dtype=np.float32) ** 2, 10.0)
    loss = float(model.compute_loss(batch, training=False))  # inference clusters: deterministic
    user = model.user_embeddings(batch, training=False)
    ids = batch[features.TARGET_ITEM_ID]
    targets = model.item_embeddings(ids).numpy()
    embeddings, mask = user["embeddings"].numpy(), user["mask"].numpy()
    probability = model.frequency(ids, training=False).numpy() ** cfg.train.logq_weight  # q^0 = 1: log 1 = 0
    negative = batch[features.TARGET_NEGATIVE].numpy()
    weights = (negative == 0).astype(float) if cfg.train.negative_targets == "skip" else None
    want = ref.max_scored_loss(embeddings, mask, targets, probability, ids.numpy(), cfg.model.temperature, weights)
    if cfg.model.global_loss_weight:
        alone = ref.max_scored_loss(embeddings[:, -1:], np.ones((len(mask), 1), bool), targets, probability,
                                    ids.numpy(), cfg.model.temperature, weights)
        assert alone > 1.0 and mask[:, -1].all()
        want += cfg.model.global_loss_weight * alone
    if cfg.model.diversity_weight:
        excess = ref.similarity_excess(embeddings, mask, cfg.model.diversity_margin)
        assert excess.sum() > 1.0  # the term is not vanishing on this batch
        want += cfg.model.diversity_weight * excess.sum()
    assert loss == pytest.approx(want, rel=1e-4)
    if cfg.model.kind == "dcm":
        assert (~mask).any()  # masked slots exist in the batch and are not scored
    if weights is not None:
        assert negative.any()  # the batch has negative targets, and they were skipped
        assert loss < ref.max_scored_loss(embeddings, mask, targets, probability, ids.numpy(), cfg.model.temperature)


def test_global_interest_is_one_more_always_valid_embedding(world):
    cfg = load_config("synthetic-small", ["model.kind=dcm", "model.global_interest=true"])
    model = build_model(cfg.model, load_item_table(world), seed=0)
    batch = next(iter(build_dataset(f"{world}/{features.TRAIN_IMPLICIT}-*", 64, 50, shuffle=False)))
    create_variables(model, batch)
    user = {k: v.numpy() for k, v in model.user_embeddings(batch, training=False).items()}
    k = cfg.model.num_interests
    assert model.num_embeddings == k + 1 and user["embeddings"].shape[1] == k + 1
    assert user["mask"][:, k].all()
    valid = user["mask"][:, :k]
    mean = (user["importance"][:, :k] * valid).sum(1) / np.maximum(valid.sum(1), 1)
    np.testing.assert_allclose(user["importance"][:, k], np.where(valid.any(1), mean, 1.0), rtol=1e-5)
    # The global slot is its own embedding, not a copy of an interest.
    cos = np.einsum("bkd,bd->bk", user["embeddings"][:, :k], user["embeddings"][:, k])
    assert (np.where(valid, cos, -1).max(1) < 0.9999).all()
