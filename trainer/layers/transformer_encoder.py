"""A post-norm Transformer encoder over feature fields."""

from trainer.layers._keras import keras, register


@register
class TransformerEncoder(keras.layers.Layer):
    """`num_layers` x (self-attention + FFN), residual + LayerNorm.

    Call: `[B, F, d]` fields -> `[B, F, d]`; optional `attention_mask
    [B, F, F]` bool (query, key): which fields each field attends to.
    """

    def __init__(self, num_layers=1, num_heads=2, ff_dim=64, **kwargs):
        super().__init__(**kwargs)
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.ff_dim = ff_dim

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.blocks = []
        for i in range(self.num_layers):
            self.blocks.append((
                keras.layers.MultiHeadAttention(self.num_heads, max(1, dim // self.num_heads),
                                                name=f"attention_{i}"),
                keras.layers.LayerNormalization(name=f"norm_a_{i}"),
                keras.layers.Dense(self.ff_dim, activation="gelu", name=f"ff_in_{i}"),
                keras.layers.Dense(dim, name=f"ff_out_{i}"),
                keras.layers.LayerNormalization(name=f"norm_b_{i}"),
            ))
        super().build(input_shape)

    def call(self, x, attention_mask=None):
        for attention, norm_a, ff_in, ff_out, norm_b in self.blocks:
            x = norm_a(x + attention(x, x, attention_mask=attention_mask))
            x = norm_b(x + ff_out(ff_in(x)))
        return x

    def get_config(self):
        return {**super().get_config(), "num_layers": self.num_layers,
                "num_heads": self.num_heads, "ff_dim": self.ff_dim}
