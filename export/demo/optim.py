"""The demo training's optimizer: AdamW over the model's raw tf.Variables.

Apart from `demo_train` so that the training loop stays one screen of logic; Keras 3's optimizers want Keras
variables, and clipedge's model keeps plain tf.Variables so that the checkpoint mapping stays 1:1.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["AdamW"]


class AdamW:
    """Decoupled weight decay Adam over plain tf.Variables (Keras 3's optimizers want Keras variables)."""

    def __init__(self, variables: list[tf.Variable], decay: list[bool], weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6) -> None:
        # betas/eps: CLIP paper, table 4 (beta2 0.98, eps 1e-6 for ViTs)
        self.variables = variables
        self.decay = decay
        self.weight_decay = weight_decay
        self.beta1, self.beta2, self.eps = betas[0], betas[1], eps
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.t = tf.Variable(0.0, trainable=False)

    def apply(self, grads: list[tf.Tensor], lr: tf.Tensor) -> None:
        self.t.assign_add(1.0)
        c1 = 1 - tf.pow(self.beta1, self.t)
        c2 = 1 - tf.pow(self.beta2, self.t)
        for var, g, m, v, decay in zip(self.variables, grads, self.m, self.v, self.decay, strict=True):
            if isinstance(g, tf.IndexedSlices):
                self._apply_rows(var, g, m, v, lr, c1, c2)
                continue
            m.assign(self.beta1 * m + (1 - self.beta1) * g)
            v.assign(self.beta2 * v + (1 - self.beta2) * tf.square(g))
            update = (m / c1) / (tf.sqrt(v / c2) + self.eps)
            if decay:
                update += self.weight_decay * var
            var.assign_sub(lr * update)

    def _apply_rows(self, var: tf.Variable, g: tf.IndexedSlices, m: tf.Variable, v: tf.Variable, lr: tf.Tensor,
                    c1: tf.Tensor, c2: tf.Tensor) -> None:
        """Lazy Adam for an embedding table: only the rows in this batch move (and their moments decay), so a step
        costs the batch's tokens, not 49408 rows. Embedding rows get no weight decay."""
        rows, position = tf.unique(g.indices)
        grad = tf.math.unsorted_segment_sum(g.values, position, tf.shape(rows)[0])  # repeated tokens add up
        m_rows = self.beta1 * tf.gather(m, rows) + (1 - self.beta1) * grad
        v_rows = self.beta2 * tf.gather(v, rows) + (1 - self.beta2) * tf.square(grad)
        m.scatter_nd_update(rows[:, None], m_rows)
        v.scatter_nd_update(rows[:, None], v_rows)
        var.scatter_nd_sub(rows[:, None], lr * (m_rows / c1) / (tf.sqrt(v_rows / c2) + self.eps))
