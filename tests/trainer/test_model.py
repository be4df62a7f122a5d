"""The model's training step: the argmax fast path is exact."""

from __future__ import annotations

import numpy as np
import pytest

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
