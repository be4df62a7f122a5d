"""Differentiable Clustering Module (DCM) and MIND capsule routing (eq. 1-3, 5-7)."""

from trainer.layers._keras import NEG_INF, keras, register, tf
from trainer.layers.farthest_point_init import farthest_point_init
from trainer.layers.step_seed import layer_seed
from trainer.layers.squash import squash


@register
class DifferentiableClustering(keras.layers.Layer):
    """Clusters a user's engagement sequence into K interest capsules.

    Shared bilinear map `S` (eq. 1-2), squash (eq. 3), initialisation by
    Validity-Aware Farthest Points (eq. 5-6) or Gaussian (MIND), routing with
    Single-Assignment (eq. 7) or soft assignment (MIND).

    Determinism: at inference the first FPI centroid is the *most recent*
    eligible item (recency is the strongest single interest signal, and a
    serving embedding must not change between two identical requests); during
    training it is a uniformly random eligible item, as in the paper
    (`first_centroid="random"`), or the most recent one as at inference
    (`"recent"`: the clusters trained are the clusters served). The
    Gaussian (MIND) init uses a fixed-seed stateless draw at inference.
    Training draws are stateless functions of the `seed` input when one is
    given (the model passes one per optimizer step, `step_seed.py`), so a
    job resumed from a checkpoint draws what an uninterrupted one draws.

    Args:
      num_clusters: K_im.
      dim: capsule dimension (output of S).
      iterations: routing iterations.
      init: `va_fpi`, `fpi` or `gaussian`.
      single_assignment: SAR on/off.
      validity_filter: invalid items are excluded from init and routing.
      routing_gradient: `last` (default): the routing coefficients are
        treated as constants and gradients reach the item vectors through
        the final weighted sum only, as in ComiRec's dynamic routing; this
        also keeps gradients out of the non-differentiable initialisation
        and halves the module's backward cost. `all`: back-propagate
        through every routing iteration and the initial centroids.
      first_centroid: `random` or `recent`, the first FPI centroid during
        training (inference always takes the most recent).
      logits: `recompute` (paper eq. 1: each iteration's routing logits are
        c_j . S e_i from the current capsules) or `accumulate` (MIND's B2I
        routing: b_ij starts from the initialisation, Gaussian logits with
        `init="gaussian"`, and each iteration adds c_j . S e_i).
      dynamic_interests: MIND's interest count per user, K' = max(1, min(K,
        floor(log2(valid items)))); the other clusters are masked.

    Call args:
      items: `[B, L, d_in]` item representations e_i.
      valid: `[B, L]` bool, per-item validity (features present, not negative).
      mask: `[B, L]` bool, non-padding positions.
      seed: optional `[2]` int, the step's seed for the training draws;
        without it training draws from stateful random ops.

    Returns:
      dict: `capsules [B, K, dim]`, `importance [B, K]` (sum_i b_ij),
      `mask [B, K]` bool, `routing [B, L, K]`.
    """

    SEED_SALT = 1  # folded into the step seed (`layer_seed`)

    def __init__(self, num_clusters=7, dim=32, iterations=3, init="va_fpi",
                 single_assignment=True, validity_filter=True, seed=0, routing_gradient="last",
                 first_centroid="random", logits="recompute", dynamic_interests=False, **kwargs):
        super().__init__(**kwargs)
        if logits not in ("recompute", "accumulate"):
            raise ValueError(f"logits={logits!r}; allowed: recompute, accumulate")
        self.logits = logits
        self.dynamic_interests = dynamic_interests
        if first_centroid not in ("random", "recent"):
            raise ValueError(f"first_centroid={first_centroid!r}; allowed: random, recent")
        self.first_centroid = first_centroid
        if init not in ("va_fpi", "fpi", "gaussian"):
            raise ValueError(f"init={init!r}; allowed: va_fpi, fpi, gaussian")
        if routing_gradient not in ("last", "all"):
            raise ValueError(f"routing_gradient={routing_gradient!r}; allowed: last, all")
        self.routing_gradient = routing_gradient
        self.num_clusters = num_clusters
        self.dim = dim
        self.iterations = iterations
        self.init = init
        self.single_assignment = single_assignment
        self.validity_filter = validity_filter
        self.seed = seed

    def build(self, input_shape):
        self.bilinear = keras.layers.Dense(self.dim, use_bias=False, name="bilinear_S")
        self.bilinear.build(input_shape["items"] if isinstance(input_shape, dict) else input_shape)
        super().build(input_shape)

    def _first_index(self, eligible, training, seed=None):
        if training and self.first_centroid == "random":
            logits = tf.where(eligible, 0.0, NEG_INF)
            if seed is None:
                return tf.cast(tf.random.categorical(logits, 1)[:, 0], tf.int32)
            return tf.cast(tf.random.stateless_categorical(logits, 1, seed)[:, 0], tf.int32)
        length = tf.shape(eligible)[1]
        positions = tf.where(eligible, tf.range(length)[None, :], -1)
        return tf.maximum(tf.reduce_max(positions, axis=1), 0)

    def call(self, inputs, training=None):
        items, valid, mask = inputs["items"], inputs["valid"], inputs["mask"]
        seed = inputs.get("seed")
        seed = None if seed is None else layer_seed(seed, self.SEED_SALT)
        mapped = self.bilinear(items)
        points = tf.stop_gradient(mapped) if self.routing_gradient == "last" else mapped
        eligible = tf.logical_and(mask, valid) if self.validity_filter else mask
        routed = eligible
        batch = tf.shape(points)[0]
        logits = None
        if self.init == "gaussian" and self.logits == "accumulate":
            # MIND: random routing logits b_ij ~ N(0, 1), not random capsules.
            shape = tf.stack([batch, tf.shape(points)[1], self.num_clusters])
            if training and seed is None:
                logits = tf.random.normal(shape)
            elif training:
                logits = tf.random.stateless_normal(shape, seed=seed)
            else:  # one fixed draw for every row: a user's embeddings do not depend on the batch
                one = tf.random.stateless_normal(tf.stack([1, tf.shape(points)[1], self.num_clusters]),
                                                 seed=[self.seed, 17])
                logits = tf.tile(one, tf.stack([batch, 1, 1]))
            capsules = tf.zeros(tf.stack([batch, self.num_clusters, self.dim]))
            cmask = tf.tile(tf.reduce_any(routed, axis=1, keepdims=True), [1, self.num_clusters])
        elif self.init == "gaussian":
            shape = tf.stack([batch, self.num_clusters, self.dim])
            if training and seed is None:
                capsules = tf.random.normal(shape)
            elif training:
                capsules = tf.random.stateless_normal(shape, seed=seed)
            else:
                capsules = tf.random.stateless_normal(shape, seed=[self.seed, 17])
            cmask = tf.tile(tf.reduce_any(routed, axis=1, keepdims=True), [1, self.num_clusters])
        else:
            capsules, cmask = farthest_point_init(
                points, eligible, self.num_clusters, self._first_index(eligible, training, seed)
            )
        routed_f = tf.cast(routed, points.dtype)[..., None]
        if self.dynamic_interests:
            # K' = max(1, min(K, floor(log2 n))), counted exactly: #{j >= 1: 2^j <= n}.
            count = tf.reduce_sum(tf.cast(routed, tf.float32), axis=1)
            powers = tf.pow(2.0, tf.range(1, self.num_clusters + 1, dtype=tf.float32))
            k_user = tf.maximum(tf.reduce_sum(tf.cast(count[:, None] >= powers[None, :], tf.float32), axis=1), 1.0)
            cmask = tf.logical_and(cmask, tf.range(self.num_clusters, dtype=tf.float32)[None, :] < k_user[:, None])
        routing = tf.zeros(tf.stack([batch, tf.shape(points)[1], self.num_clusters]))
        accumulated = logits
        for step in range(self.iterations):
            logits = tf.einsum("bkd,bld->blk", capsules, points)
            if self.logits == "accumulate":
                accumulated = logits if accumulated is None else accumulated + logits
                logits = accumulated
            logits = tf.where(cmask[:, None, :], logits, NEG_INF)
            routing = tf.nn.softmax(logits, axis=-1)
            if self.single_assignment:
                winner = tf.one_hot(tf.argmax(logits, axis=-1), self.num_clusters, dtype=routing.dtype)
                routing = routing * winner
            routing = routing * routed_f
            # The final weighted sum reads the differentiable item vectors
            # (the same values as `points`; with `last` the only gradient path).
            values = mapped if step == self.iterations - 1 else points
            capsules = squash(tf.einsum("blk,bld->bkd", routing, values))
        if self.single_assignment:
            # A cluster that single assignment left without an item has no
            # interest to serve (its capsule is the zero vector).
            cmask = tf.logical_and(cmask, tf.reduce_any(routing > 0, axis=1))
        cmask_f = tf.cast(cmask, points.dtype)
        return {
            "capsules": capsules * cmask_f[..., None],
            "importance": tf.reduce_sum(routing, axis=1) * cmask_f,
            "mask": cmask,
            "routing": routing,
        }

    def get_config(self):
        return {**super().get_config(), "num_clusters": self.num_clusters, "dim": self.dim,
                "iterations": self.iterations, "init": self.init,
                "single_assignment": self.single_assignment,
                "validity_filter": self.validity_filter, "seed": self.seed,
                "routing_gradient": self.routing_gradient, "first_centroid": self.first_centroid,
                "logits": self.logits, "dynamic_interests": self.dynamic_interests}
