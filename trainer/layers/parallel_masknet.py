"""Parallel MaskNet (Wang et al. 2021): instance-guided masks, blocks in parallel."""

from trainer.layers._keras import keras, register, tf


@register
class ParallelMaskNet(keras.layers.Layer):
    """Each block: mask = W2 relu(W1 x) (W1 width = ratio * d_in);
    out = relu(LN(W3 (mask * LN(x)))). Blocks run in parallel, concatenated,
    then projected to `output_dim`.

    Call: `[B, d_in]` -> `[B, output_dim]`.
    """

    def __init__(self, num_blocks=2, hidden=32, projection_ratio=0.5, output_dim=64, **kwargs):
        super().__init__(**kwargs)
        self.num_blocks = num_blocks
        self.hidden = hidden
        self.projection_ratio = projection_ratio
        self.output_dim = output_dim

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.input_norm = keras.layers.LayerNormalization(name="input_norm")
        self.blocks = []
        for i in range(self.num_blocks):
            self.blocks.append((
                keras.layers.Dense(max(1, int(dim * self.projection_ratio)), activation="relu",
                                   name=f"mask_in_{i}"),
                keras.layers.Dense(dim, name=f"mask_out_{i}"),
                keras.layers.Dense(self.hidden, use_bias=False, name=f"hidden_{i}"),
                keras.layers.LayerNormalization(name=f"norm_{i}"),
            ))
        self.project = keras.layers.Dense(self.output_dim, name="project")
        super().build(input_shape)

    def call(self, x):
        normed = self.input_norm(x)
        outs = [tf.nn.relu(norm(hidden(mask_out(mask_in(x)) * normed)))
                for mask_in, mask_out, hidden, norm in self.blocks]
        return self.project(tf.concat(outs, axis=-1))

    def get_config(self):
        return {**super().get_config(), "num_blocks": self.num_blocks, "hidden": self.hidden,
                "projection_ratio": self.projection_ratio, "output_dim": self.output_dim}
