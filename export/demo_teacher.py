"""A small supervised CNN that teaches the demo ViT where shapes' corners and edges are (`clipedge demo train`).

Why: a ViT trained from scratch on 2 CPU cores learns the colours of the demo's shapes within a few hundred steps but,
with shapes of every size, position and rotation, not their outlines: measured here, shape top-1 stayed at chance
(29% of 5) after 1,500 contrastive steps. A CNN's convolutions are local and shared across positions, so it learns
the same task in minutes. Its feature map then becomes a dense target for the ViT's patch tokens (each token
regresses the CNN's features at its patch through a throwaway linear head), which hands the ViT local geometry to
aggregate instead of leaving it to discover that from one label per image. Only the ViT is saved; the teacher lives
for one training run.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from clipedge.export.towers import normalize_uint8

__all__ = ["Teacher", "train_teacher"]

_CHANNELS = (24, 48, 48, 96, 96)
_STRIDES = (2, 2, 1, 2, 1)


class Teacher(tf.Module):
    """Conv-BN-ReLU stack (strides 2, 2, 1, 2, 1: a 14 x 14 map at 112 px) with a global-average-pooled 40-way head."""

    def __init__(self, classes: int, seed: int) -> None:
        super().__init__(name="demo_teacher")
        keras = tf.keras
        init = keras.initializers.HeNormal(seed=seed)
        self.layers = []
        for channels, stride in zip(_CHANNELS, _STRIDES, strict=True):
            self.layers += [keras.layers.Conv2D(channels, 3, stride, padding="same", use_bias=False,
                                                kernel_initializer=init),
                            keras.layers.BatchNormalization(), keras.layers.ReLU()]
        self.head = keras.layers.Dense(classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed))
        self.channels = _CHANNELS[-1]

    def features(self, pixels_uint8: tf.Tensor, training: bool = False) -> tf.Tensor:
        x = normalize_uint8(pixels_uint8)
        for layer in self.layers:
            x = layer(x, training=training) if isinstance(layer, tf.keras.layers.BatchNormalization) else layer(x)
        return x

    def logits(self, features: tf.Tensor) -> tf.Tensor:
        """Average and max pooled: the max finds a small shape in a cluttered frame, which an average dilutes."""
        pooled = tf.concat([tf.reduce_mean(features, axis=[1, 2]), tf.reduce_max(features, axis=[1, 2])], axis=-1)
        return self.head(pooled)

    def targets(self, pixels_uint8: tf.Tensor, grid: int) -> tuple[tf.Tensor, tf.Tensor]:
        """[B, grid, grid, C]: the feature map area-averaged onto the ViT's patch grid, and [B, 2C]: its average and
        max pooled features (what the head reads); each vector unit length."""
        features = self.features(pixels_uint8)
        patches = tf.image.resize(features, [grid, grid], method="area")
        pooled = tf.concat([tf.reduce_mean(features, axis=[1, 2]), tf.reduce_max(features, axis=[1, 2])], axis=-1)
        return tf.math.l2_normalize(patches, axis=-1), tf.math.l2_normalize(pooled, axis=-1)


def _dihedral(pixels: tf.Tensor, rng: tf.random.Generator) -> tf.Tensor:
    flip = rng.uniform([tf.shape(pixels)[0], 1, 1, 1]) < 0.5
    return tf.image.rot90(tf.where(flip, tf.reverse(pixels, axis=[2]), pixels), k=rng.uniform([], 0, 4, tf.int32))


def train_teacher(pixels: np.ndarray, classes: np.ndarray, steps: int, batch_size: int, learning_rate: float,
                  seed: int, progress: bool) -> tuple[Teacher, float]:
    """Supervised 40-way training on the pool (flips and quarter turns), then the mean accuracy of its last 50
    batches; the caller checks the ViT, not this number."""
    from tqdm.auto import tqdm

    teacher = Teacher(int(classes.max()) + 1, seed)
    size = pixels.shape[1]
    teacher.features(tf.zeros([1, size, size, 3], tf.uint8))  # build the layers
    teacher.logits(tf.zeros([1, 1, 1, teacher.channels]))
    optimizer = tf.keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=1e-4)
    rng = tf.random.Generator.from_seed(seed + 11)
    trainable = [v for layer in teacher.layers + [teacher.head] for v in layer.trainable_variables]
    lr = tf.Variable(learning_rate, trainable=False, dtype=tf.float32)
    optimizer.learning_rate = lr

    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([batch_size, size, size, 3], tf.uint8),
                                                    tf.TensorSpec([batch_size], tf.int32)])
    def step(batch_pixels, labels):
        batch_pixels = _dihedral(batch_pixels, rng)
        with tf.GradientTape() as tape:
            logits = teacher.logits(teacher.features(batch_pixels, training=True))
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, trainable), trainable, strict=True))
        correct = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels),
                                         tf.float32))
        return loss, correct

    picker = np.random.default_rng([seed, 2000])
    accuracy: list[float] = []
    bar = tqdm(range(steps), desc="teacher", unit="step", disable=not progress)
    for i in bar:
        warm = min(1.0, (i + 1) / 100)
        lr.assign(learning_rate * warm * 0.5 * (1 + math.cos(math.pi * i / steps)))
        batch = np.sort(picker.choice(len(pixels), size=batch_size, replace=False))
        loss, correct = step(pixels[batch], classes[batch])
        accuracy.append(float(correct))
        if i % 10 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{np.mean(accuracy[-50:]):.2f}")
    bar.close()
    return teacher, float(np.mean(accuracy[-50:]))
