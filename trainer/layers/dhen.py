"""DHEN feature crossing with two hierarchies (paper appendix A)."""

from trainer.layers._keras import keras, register, tf
from trainer.layers.mlp import MLP
from trainer.layers.parallel_masknet import ParallelMaskNet
from trainer.layers.transformer_encoder import TransformerEncoder


@register
class DHEN(keras.layers.Layer):
    """Fields are projected to equal widths; hierarchy 1 sums a Transformer
    encoder over the fields and an MLP over their concatenation; hierarchy 2
    sums a parallel MaskNet and an MLP; output is `output_dim` wide.

    Args: the `DhenConfig` fields.
    Call: list of F field tensors `[B, d_f]` (widths may differ) -> `[B, output_dim]`.
    """

    def __init__(self, field_dim=32, transformer_layers=1, transformer_heads=2,
                 transformer_ff_dim=64, mlp1_hidden=128, masknet_blocks=2, masknet_hidden=32,
                 masknet_projection_ratio=0.5, mlp2_hidden=128, output_dim=64, **kwargs):
        super().__init__(**kwargs)
        self.field_dim = field_dim
        self.transformer_layers = transformer_layers
        self.transformer_heads = transformer_heads
        self.transformer_ff_dim = transformer_ff_dim
        self.mlp1_hidden = mlp1_hidden
        self.masknet_blocks = masknet_blocks
        self.masknet_hidden = masknet_hidden
        self.masknet_projection_ratio = masknet_projection_ratio
        self.mlp2_hidden = mlp2_hidden
        self.output_dim = output_dim

    def build(self, input_shape):
        num_fields = len(input_shape)
        flat = num_fields * self.field_dim
        self.projections = [keras.layers.Dense(self.field_dim, name=f"field_{i}")
                            for i in range(num_fields)]
        self.transformer = TransformerEncoder(self.transformer_layers, self.transformer_heads,
                                              self.transformer_ff_dim, name="h1_transformer")
        self.mlp1 = MLP([self.mlp1_hidden], flat, name="h1_mlp")
        self.masknet = ParallelMaskNet(self.masknet_blocks, self.masknet_hidden,
                                       self.masknet_projection_ratio, self.output_dim,
                                       name="h2_masknet")
        self.mlp2 = MLP([self.mlp2_hidden], self.output_dim, name="h2_mlp")
        super().build(input_shape)

    def call(self, fields):
        projected = tf.stack([p(f) for p, f in zip(self.projections, fields)], axis=1)
        flat = tf.reshape(projected, [-1, len(self.projections) * self.field_dim])
        h1 = tf.reshape(self.transformer(projected), tf.shape(flat)) + self.mlp1(flat)
        return self.masknet(h1) + self.mlp2(h1)

    def get_config(self):
        return {**super().get_config(), "field_dim": self.field_dim,
                "transformer_layers": self.transformer_layers,
                "transformer_heads": self.transformer_heads,
                "transformer_ff_dim": self.transformer_ff_dim, "mlp1_hidden": self.mlp1_hidden,
                "masknet_blocks": self.masknet_blocks, "masknet_hidden": self.masknet_hidden,
                "masknet_projection_ratio": self.masknet_projection_ratio,
                "mlp2_hidden": self.mlp2_hidden, "output_dim": self.output_dim}
