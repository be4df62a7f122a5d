"""Seeds of the training-time random draws: pure functions of (seed, step).

Why: a stateful random op (`tf.random.uniform`, `tf.random.categorical`,
...) advances a counter inside its kernel that no checkpoint saves, so a job
resumed after preemption draws other numbers than the same job without a
failure, and ends with other weights. Stateless ops seeded from the job's
seed, the optimizer step (which the backup restores) and the replica draw
the same numbers for step j (and the same number for example position b of
step j) whether or not the job was restarted in between.
"""

from trainer.layers._keras import tf


def step_seed(seed: int, step: tf.Tensor) -> tf.Tensor:
    """The seed of one training step's draws on this replica.

    Args:
      seed: the job's seed (`train.seed`).
      step: scalar int, the optimizer steps already taken (`iterations`).

    Returns:
      `[2]` int32 seed for `tf.random.stateless_*`; replicas of one step get
      different seeds (they draw for different examples).
    """
    base = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    context = tf.distribute.get_replica_context()
    replica = 0 if context is None else context.replica_id_in_sync_group
    return tf.random.experimental.stateless_fold_in(base, tf.cast(replica, tf.int64))


def layer_seed(seed: tf.Tensor, salt: int) -> tf.Tensor:
    """A layer's own `[2]` seed from a step seed: layers drawing in one step
    (VA-FPI's first centroid, Gumbel noise) get independent numbers."""
    return tf.random.experimental.stateless_fold_in(seed, salt)
