"""A plain MLP block."""

from trainer.layers._keras import keras, register


@register
class MLP(keras.layers.Layer):
    """Dense layers with an activation between them (none after the last).

    Args:
      hidden: hidden widths.
      output_dim: output width.
      activation: hidden activation.
    Call: `[B, d_in]` -> `[B, output_dim]`.
    """

    def __init__(self, hidden=(128,), output_dim=64, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.hidden = list(hidden)
        self.output_dim = output_dim
        self.activation = activation

    def build(self, input_shape):
        self.dense = [keras.layers.Dense(h, activation=self.activation, name=f"hidden_{i}")
                      for i, h in enumerate(self.hidden)]
        self.dense.append(keras.layers.Dense(self.output_dim, name="out"))
        super().build(input_shape)

    def call(self, x):
        for layer in self.dense:
            x = layer(x)
        return x

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "output_dim": self.output_dim,
                "activation": self.activation}
