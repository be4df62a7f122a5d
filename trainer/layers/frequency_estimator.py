"""Streaming item-frequency estimation for logQ correction (Yi et al. 2019)."""

from trainer.layers._keras import keras, register, tf


@register
class StreamingFrequencyEstimator(keras.layers.Layer):
    """Estimates how often each item is sampled into a batch, in-graph.

    Hashed arrays A (step an item was last seen) and B (moving average of the
    gap between occurrences, in steps); p = 1 / B is the expected number of
    occurrences per batch. Both arrays and the step are non-trainable weights,
    so they are checkpointed with the model.

    Several occurrences of one item in a batch: the algorithm is defined per
    occurrence. The `c` occurrences of a step share the elapsed `t - A`
    evenly (gap `(t - A) / c` each) and the moving average takes `c` updates:
    B <- (1-a)^c B + (1 - (1-a)^c) (t - A) / c. A single update per bucket
    would treat an item seen 26 times a batch like one seen once (p = 1), and
    sequential updates with gaps (t - A, 0, 0, ...) weight the one non-zero
    gap by its position in the batch (12% bias at 26 per batch, measured).

    Distributed training: the state is a mirrored variable with aggregation
    ONLY_FIRST_REPLICA and every replica updates it with the all-gathered
    buckets of the global batch, so all copies stay identical and the step
    counts global batches (what p is defined over).

    Call args: `ids [B]` string item ids; `training` updates the state.
    Returns: `[B]` float32 estimated per-batch sampling probability.
    """

    def __init__(self, num_buckets=1 << 20, alpha=0.01, initial_gap=100.0, **kwargs):
        super().__init__(**kwargs)
        self.num_buckets = num_buckets
        self.alpha = alpha
        self.initial_gap = initial_gap

    def build(self, input_shape):
        state = dict(dtype=tf.float32, trainable=False,
                     synchronization=tf.VariableSynchronization.ON_WRITE,
                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.last_step = self.add_weight("last_step", shape=(self.num_buckets,), initializer="zeros",
                                         **state)
        self.gap = self.add_weight("gap", shape=(self.num_buckets,),
                                   initializer=keras.initializers.Constant(self.initial_gap), **state)
        self.step = self.add_weight("step", shape=(), initializer="zeros", **state)
        super().build(input_shape)

    def call(self, ids, training=None):
        buckets = tf.strings.to_hash_bucket_fast(ids, self.num_buckets)
        if training:
            seen = buckets
            replica = tf.distribute.get_replica_context()
            if replica is not None and replica.num_replicas_in_sync > 1:
                seen = replica.all_gather(buckets, axis=0)
            step = self.step.assign_add(1.0)
            unique, _, counts = tf.unique_with_counts(seen)
            counts = tf.cast(counts, tf.float32)
            elapsed = step - tf.gather(self.last_step, unique)
            keep = tf.pow(1.0 - self.alpha, counts)
            new_gap = keep * tf.gather(self.gap, unique) + (1.0 - keep) * elapsed / counts
            with tf.control_dependencies([new_gap]):
                update_gap = self.gap.scatter_update(tf.IndexedSlices(new_gap, unique))
                update_last = self.last_step.scatter_update(
                    tf.IndexedSlices(tf.fill(tf.shape(unique), step), unique))
            with tf.control_dependencies([update_gap, update_last]):
                gap = tf.gather(self.gap, buckets)
        else:
            gap = tf.gather(self.gap, buckets)
        return 1.0 / tf.maximum(gap, 1e-6)

    def warm_start(self, ids, counts, batches_per_pass: float) -> None:
        """Starts the estimate from known counts instead of the flat prior.

        An item seen `c` times in a pass of `batches_per_pass` batches is
        expected `c / batches_per_pass` times a batch: its gap becomes
        `batches_per_pass / c` (ids sharing a hash bucket add up). Buckets
        of unseen ids keep `initial_gap`; the moving average goes on from
        there.

        Args:
          ids: `[N]` item ids; counts: `[N]` occurrences in one pass.
        """
        if not self.built:
            raise ValueError("warm_start: the estimator is not built yet (call it once first)")
        buckets = tf.strings.to_hash_bucket_fast(tf.constant(ids), self.num_buckets)
        summed = tf.math.unsorted_segment_sum(tf.constant(counts, tf.float32), buckets, self.num_buckets)
        gap = tf.where(summed > 0, batches_per_pass / tf.maximum(summed, 1e-6), self.gap)
        self.gap.assign(gap)

    def get_config(self):
        return {**super().get_config(), "num_buckets": self.num_buckets, "alpha": self.alpha,
                "initial_gap": self.initial_gap}
