"""Embedding collapse (paper §3.2.4), measured on the synthetic world.

Setup: conditions alone in the crossing (`implicit_fields=[]`, so what is
measured is condition construction + association), learning rate 0.01, 8
epochs, seed 0. Two measures on the eval records (`pytest -s` prints them):
* mean pairwise cosine of a user's embeddings;
* effective interests, exp(entropy) of which slot each target is associated
  with (1 = one slot wins everything, i.e. a single-embedding model; K = 7
  = uniform).

Measured (session 4, seed 0), cosine init -> trained and effective
interests trained, on 2 cores (as CI runs) | on 1 core (`taskset -c 0`;
TF's thread count changes the float summation order, and at this learning
rate that changes the trajectory):

  tokens + argmax      0.994 -> 0.916 1.93 | 0.947 1.37   collapsed ("winner takes all")
  tokens + ST-Gumbel   0.994 -> 0.916 6.81 | 0.882 6.71
  DCM                  0.112 -> 0.702 6.55 | 0.715 6.50
  SA + ST-Gumbel       0.987 -> 0.653 6.84 | 0.673 6.45
  SA + argmax          0.987 -> 0.842 4.16 | 0.721 5.65   partly, never to one slot

Session 8 changed the streams twice: the training-time random draws (DCM's
random first centroid, the Gumbel noise) became stateless draws keyed by
the step (exact resumption after preemption), then training files became
interleaved record by record. Seed 0, 2 cores, trained cosine / slots:

                       draws keyed by step   + interleaved files
  tokens + argmax      0.916 1.93            0.961 2.67
  tokens + ST-Gumbel   0.900 5.92            0.772 6.85
  DCM                  0.849 4.00            0.834 3.25
  SA + ST-Gumbel       0.663 6.68            0.706 6.60
  SA + argmax          0.842 4.16            0.891 4.19

DCM's slot use at this learning rate depends on the stream (3.25 to 6.55
of 7 over the streams measured; two other draw-stream constants gave 6.57
and 6.78), so "DCM does not collapse" at one seed was luck; what holds on
every stream is asserted: the ST-Gumbel models keep > 5.5 slots, tokens +
argmax ends with the fewest (< 3), DCM with more than tokens + argmax and
more than 3, SA + argmax between 3 and SA + ST-Gumbel. Whether DCM keeps
its slots is a multi-seed question for the quality issue.

Seeds 1 and 2 (1 core, session 4): tokens+argmax 0.864 / 5.24 and 0.924 / 3.28,
tokens+Gumbel 0.730 / 6.70 and 0.758 / 6.66: argmax always ends with fewer
used slots; how far it collapses varies. At the default learning rate 0.003
(seed 0) tokens+argmax keeps 3.62 slots (cosine 0.776). The paper's
collapse therefore reproduces for interest tokens (randomly initialised
conditions): one slot takes (nearly) every target. It does not for
ComiRec-SA with argmax, whose heads start near-identical (cosine 0.99):
it loses slots, but keeps more than 4 of 7. Slot usage, not cosine,
separates the models reliably (tokens+Gumbel ends as similar as
tokens+argmax on 2 cores, yet uses all slots).
The test asserts what was measured, with margins.
"""

from __future__ import annotations

import numpy as np
import pytest

from trainer import diagnostics, features
from trainer.config import load_config
from trainer.data import build_dataset
from trainer.item_table import load_item_table
from trainer.layers._keras import keras, tf
from trainer.model import build_model

pytestmark = pytest.mark.slow


def _measure(model, prepared):
    """(mean pairwise cosine, effective interests) over the eval records."""
    cosines, slots = [], []
    for batch in build_dataset(f"{prepared}/eval/implicit-*", 256, 50, shuffle=False, drop_remainder=False):
        user = model.user_embeddings(batch, training=False)
        cosines.append(float(diagnostics.mean_pairwise_cosine(user["embeddings"], user["mask"])))
        target = model.item_embeddings(batch[features.TARGET_ITEM_ID])
        slots.append(model.association({"embeddings": user["embeddings"], "mask": user["mask"],
                                        "target": target}, training=False)["index"])
    used = diagnostics.effective_interests(tf.concat(slots, 0), model.cfg.num_interests)
    return float(np.mean(cosines)), float(used)


def _model(prepared, overrides):
    tf.keras.utils.set_random_seed(0)
    # The conditions alone enter the crossing, so what is measured is the
    # condition construction + association (with the shared pooled/latest
    # fields, tokens+argmax keeps 6.57 of 7 slots in use).
    cfg = load_config("synthetic-small", overrides + ["model.implicit_fields=[]", "train.learning_rate=0.01"])
    model = build_model(cfg.model, load_item_table(prepared))
    model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate))
    return model


# The settings of the paper's collapse study: the association named, no
# global interest and no sequence field (the defaults since issue 14).
PAPER = ["model.global_interest=false", "model.sequence_layers=0"]
VARIANTS = {
    "dcm": ["model.kind=dcm", "model.association=argmax"] + PAPER,
    "sa_argmax": ["model.kind=sa", "model.association=argmax"] + PAPER,
    "sa_gumbel": ["model.kind=sa", "model.association=gumbel"] + PAPER,
    "tokens_argmax": ["model.kind=tokens", "model.association=argmax"] + PAPER,
    "tokens_gumbel": ["model.kind=tokens", "model.association=gumbel"] + PAPER,
}


def test_collapse_diagnostics(world):
    before, after = {}, {}
    for name, overrides in VARIANTS.items():
        model = _model(world, overrides)
        before[name] = _measure(model, world)
        model.fit(build_dataset(f"{world}/train/implicit-*", 256, 50, seed=0), epochs=8, verbose=0)
        after[name] = _measure(model, world)
    print("\n(mean pairwise cosine, effective interests) on eval users")
    for name in VARIANTS:
        print(f"  {name:14s} init {before[name][0]:.3f} {before[name][1]:.2f}  "
              f"trained {after[name][0]:.3f} {after[name][1]:.2f}")
    cos_before = {name: value[0] for name, value in before.items()}
    cos_after = {name: value[0] for name, value in after.items()}
    used = {name: value[1] for name, value in after.items()}
    # By construction: SA heads over one sequence start near-identical;
    # DCM's farthest-point clusters start diverse.
    assert cos_before["sa_argmax"] > 0.95
    assert cos_before["dcm"] < 0.5
    assert cos_before["sa_argmax"] - cos_before["dcm"] > 0.5
    # Winner takes all: randomly initialised interest tokens with argmax
    # association degenerate into (nearly) one embedding; straight-through
    # Gumbel keeps every slot in use.
    assert cos_after["tokens_argmax"] > 0.85 and used["tokens_argmax"] < 3.0
    assert used["tokens_argmax"] == min(used.values())
    # Straight-through Gumbel keeps (nearly) every slot in use; DCM keeps
    # more than tokens + argmax (how many of the 7 depends on the stream).
    for name in ("sa_gumbel", "tokens_gumbel"):
        assert used[name] > 5.5, name
    assert used["dcm"] > 3.0 and cos_after["dcm"] < 0.9
    # Measured, against the paper: SA + argmax loses slots but does not
    # degenerate into one embedding.
    assert 3.0 < used["sa_argmax"] < used["sa_gumbel"]
    assert used["sa_argmax"] - used["tokens_argmax"] > 1.0
