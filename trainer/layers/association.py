"""Condition association: which user embedding a target item trains (eq. 8)."""

from trainer.layers._keras import NEG_INF, keras, register, tf
from trainer.layers.step_seed import layer_seed


@register
class InterestAssociation(keras.layers.Layer):
    """Selects one user embedding per example.

    `argmax` (eq. 8): j* = argmax_j o_u^j . o_y over unmasked embeddings; only
    the selected embedding gets gradients ("winner takes all").
    `gumbel`: straight-through Gumbel-Softmax during training: the forward
    pass is the hard one-hot of argmax(scores + g), the backward pass uses
    the soft distribution, so every embedding gets gradients. Inference is
    the plain argmax for both.

    `score_scale` puts the scores on the retrieval softmax's scale (1 /
    temperature): cosine scores in [-1, 1] are otherwise drowned by the
    Gumbel noise, selection becomes uniform, and every embedding is trained
    on every target, which collapses them (measured: pairwise cosine 1.0).

    The Gumbel noise is a stateless function of the optional `seed` input
    (`[2]` int; the model passes one per optimizer step, `step_seed.py`),
    so a job resumed from a checkpoint draws what an uninterrupted one
    draws; without it the noise comes from a stateful random op.

    Call args: `embeddings [B, K, d]`, `mask [B, K]` bool, `target [B, d]`,
    optional `seed [2]`.
    Returns: dict `selected [B, d]`, `index [B]` int32.
    """

    SEED_SALT = 2  # folded into the step seed (`layer_seed`)

    def __init__(self, mode="argmax", temperature=1.0, score_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.score_scale = score_scale
        if mode not in ("argmax", "gumbel"):
            raise ValueError(f"mode={mode!r}; allowed: argmax, gumbel")
        self.mode = mode
        self.temperature = temperature

    def call(self, inputs, training=None):
        emb, mask, target = inputs["embeddings"], inputs["mask"], inputs["target"]
        scores = tf.einsum("bkd,bd->bk", emb, target) * self.score_scale
        scores = tf.where(mask, scores, NEG_INF)
        k = tf.shape(emb)[1]
        if self.mode == "gumbel" and training:
            uniform = self._uniform(tf.shape(scores), inputs.get("seed"))
            noisy = (scores - tf.math.log(-tf.math.log(uniform))) / self.temperature
            soft = tf.nn.softmax(noisy, axis=-1)
            index = tf.argmax(noisy, axis=-1, output_type=tf.int32)
            hard = tf.one_hot(index, k, dtype=emb.dtype)
            weights = hard + soft - tf.stop_gradient(soft)
        else:
            index = tf.argmax(scores, axis=-1, output_type=tf.int32)
            weights = tf.one_hot(index, k, dtype=emb.dtype)
        return {"selected": tf.einsum("bk,bkd->bd", weights, emb), "index": index}

    def _uniform(self, shape, seed):
        """U(1e-9, 1) noise `shape`, stateless when `seed` is given."""
        if seed is None:
            return tf.random.uniform(shape, 1e-9, 1.0)
        return tf.random.stateless_uniform(shape, layer_seed(seed, self.SEED_SALT), 1e-9, 1.0)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "temperature": self.temperature,
                "score_scale": self.score_scale}
