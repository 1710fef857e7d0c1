"""The study's pipeline, rebuilt as the baseline the benchmarks compare against.

The study followed the TensorFlow "image captioning with visual attention" tutorial. This
module re-implements that approach from its description (it is not the tutorial's text), in
plain Keras 3, with the same layer sizes as ``keras_captioning.models.AttentionCaptioner``:

* features cached as **one float32 ``.npy`` file per image** (``save_npy_features``,
  ``study_extract_loop``) and read back through ``tf.numpy_function(np.load)``
  (``npy_dataset``), one element per (image, caption) pair;
* a ``CNN_Encoder`` (Dense + ReLU over the regions), ``BahdanauAttention`` and an
  ``RNN_Decoder`` called **once per time step** from a Python ``for`` loop unrolled inside a
  ``tf.function`` (``make_study_train_step``), with the loss averaged over the whole padded
  batch (padding counts in the denominator, as in the study);
* captions produced **one image at a time** by an eager Python loop, sampled with
  ``tf.random.categorical`` as the study did, or greedily (``study_decode_one``).

Its defects are kept on purpose (``W1(features)`` recomputed at every step, the GRU not fed the
previous hidden state, per-caption Python loops): they are what is being measured. The class
names keep the tutorial's spelling so the two can be read side by side. Nothing here is part of
the package; only ``benchmarks/run.py`` uses it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf


class CNN_Encoder(keras.layers.Layer):  # noqa: N801 - the tutorial's name
    """Projects cached CNN regions: (B, R, D) -> ReLU(Dense) -> (B, R, embedding_dim)."""

    def __init__(self, embedding_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.fc = keras.layers.Dense(embedding_dim)

    def call(self, x):
        return tf.nn.relu(self.fc(x))


class BahdanauAttention(keras.layers.Layer):
    """Additive attention: score = V tanh(W1 features + W2 hidden), softmax over regions.

    ``W1(features)`` is computed on every call, i.e. once per decoder step (the tutorial's
    layout); our model projects the keys once per image.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.W1 = keras.layers.Dense(units)
        self.W2 = keras.layers.Dense(units)
        self.V = keras.layers.Dense(1)

    def call(self, features, hidden):
        # features (B, R, E), hidden (B, units) -> context (B, E), weights (B, R, 1)
        hidden_with_time_axis = tf.expand_dims(hidden, 1)
        scores = self.V(tf.nn.tanh(self.W1(features) + self.W2(hidden_with_time_axis)))
        weights = tf.nn.softmax(scores, axis=1)
        context = tf.reduce_sum(weights * features, axis=1)
        return context, weights


class RNN_Decoder(keras.layers.Layer):  # noqa: N801 - the tutorial's name
    """One decoder step: attention -> [context; Embedding(token)] -> GRU -> Dense -> Dense(vocab).

    ``call(tokens (B, 1), features (B, R, E), hidden (B, units))`` returns
    ``(logits (B, vocab), state (B, units), attention (B, R, 1))``. As in the tutorial, the
    previous hidden state only drives the attention: the GRU starts from zeros every step.
    """

    def __init__(self, embedding_dim: int, units: int, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim)
        self.gru = keras.layers.GRU(units, return_sequences=True, return_state=True,
                                    recurrent_initializer="glorot_uniform")
        self.fc1 = keras.layers.Dense(units)
        self.fc2 = keras.layers.Dense(vocab_size)
        self.attention = BahdanauAttention(units)

    def call(self, x, features, hidden):
        context, weights = self.attention(features, hidden)
        x = self.embedding(x)  # (B, 1, embedding_dim)
        x = tf.concat([tf.expand_dims(context, 1), x], axis=-1)
        output, state = self.gru(x)
        x = self.fc1(output)  # (B, 1, units)
        x = tf.reshape(x, (-1, x.shape[2]))
        return self.fc2(x), state, weights

    def reset_state(self, batch_size):
        return tf.zeros((batch_size, self.units))


def build_study_model(vocab_size: int, feature_dim: int, embedding_dim: int = 256,
                      units: int = 512) -> tuple[CNN_Encoder, RNN_Decoder]:
    """Builds (encoder, decoder) with their weights created (one dummy step)."""
    encoder = CNN_Encoder(embedding_dim)
    decoder = RNN_Decoder(embedding_dim, units, vocab_size)
    features = encoder(tf.zeros((1, 1, feature_dim)))
    decoder(tf.zeros((1, 1), tf.int32), features, decoder.reset_state(1))
    return encoder, decoder


# --- loss and training step -------------------------------------------------------------------

_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)


def study_loss(real, pred):
    """Masked CE averaged over the whole batch column: padding counts in the denominator."""
    mask = tf.cast(tf.math.not_equal(real, 0), tf.float32)
    return tf.reduce_mean(_ce(real, pred) * mask)


def make_study_train_step(encoder: CNN_Encoder, decoder: RNN_Decoder,
                          optimizer: keras.optimizers.Optimizer, start_id: int = 2) -> Callable:
    """Returns the study's ``study_train_step(img_tensor (B, R, D), target (B, L)) -> (loss, total_loss)``.

    A ``tf.function`` whose Python loop over ``range(1, L)`` is unrolled into L-1 decoder calls
    (teacher forcing: the true previous word is fed each step).
    """

    @tf.function
    def study_train_step(img_tensor, target):
        loss = 0.0
        batch = target.shape[0]
        hidden = decoder.reset_state(batch)
        dec_input = tf.expand_dims(tf.fill([batch], start_id), 1)
        with tf.GradientTape() as tape:
            features = encoder(img_tensor)
            for i in range(1, target.shape[1]):
                predictions, hidden, _ = decoder(dec_input, features, hidden)
                loss += study_loss(target[:, i], predictions)
                dec_input = tf.expand_dims(target[:, i], 1)
        total_loss = loss / int(target.shape[1])
        variables = encoder.trainable_variables + decoder.trainable_variables
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss, total_loss

    return study_train_step


# --- decoding ---------------------------------------------------------------------------------

def study_decode_one(encoder: CNN_Encoder, decoder: RNN_Decoder, image_features, max_length: int,
                     start_id: int = 2, end_id: int = 3, greedy: bool = False,
                     seed: int | None = None) -> list[int]:
    """Captions ONE image eagerly: ``image_features`` (R, D) -> token ids (without START, up to END).

    The study sampled each word with ``tf.random.categorical``; ``greedy=True`` takes the
    argmax instead, for a like-for-like comparison with our batched greedy decoder. The
    attention map is pulled to NumPy at every step, as the tutorial did for its plot.
    """
    hidden = decoder.reset_state(1)
    features = encoder(tf.expand_dims(tf.convert_to_tensor(image_features, tf.float32), 0))
    attention_plot = np.zeros((max_length, features.shape[1]), np.float32)
    dec_input = tf.constant([[start_id]], tf.int32)
    result = []
    for i in range(max_length):
        predictions, hidden, weights = decoder(dec_input, features, hidden)
        attention_plot[i] = tf.reshape(weights, (-1,)).numpy()
        if greedy:
            predicted_id = int(tf.argmax(predictions, axis=-1)[0].numpy())
        else:
            step_seed = None if seed is None else seed + i
            predicted_id = int(tf.random.categorical(predictions, 1, seed=step_seed)[0][0].numpy())
        if predicted_id == end_id:
            break
        result.append(predicted_id)
        dec_input = tf.constant([[predicted_id]], tf.int32)
    return result


# --- features on disk -------------------------------------------------------------------------

def npy_path(out_dir: str, image_id: str) -> str:
    return os.path.join(out_dir, f"{image_id}.npy")


def save_npy_features(image_ids: Sequence[str], features, out_dir: str) -> list[str]:
    """Writes one float32 ``<out_dir>/<image_id>.npy`` per image; returns the paths.

    ``features``: array-like (N, R, D) or (N, D), cast to float32 as the study cached them.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for image_id, feature in zip(image_ids, features):
        path = npy_path(out_dir, image_id)
        np.save(path, np.asarray(feature, np.float32))
        paths.append(path)
    return paths


def _load_npy(path, caption):
    return np.load(path.decode("utf-8")), caption


def npy_dataset(paths: Sequence[str], captions: np.ndarray, batch: int, buffer_size: int = 1000,
                seed: int | None = None) -> tf.data.Dataset:
    """The study's input pipeline: one (``.npy`` path, padded caption) element per caption.

    ``paths``: N paths (an image's path repeated once per caption); ``captions``: int32 (N, L).
    Yields ``(features float32 (B, R, D), captions int32 (B, L))``.
    """
    dataset = tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(captions, np.int32)))
    dataset = dataset.map(
        lambda path, caption: tf.numpy_function(_load_npy, [path, caption], [tf.float32, tf.int32]),
        num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.shuffle(buffer_size, seed=seed).batch(batch).prefetch(tf.data.AUTOTUNE)


def load_image(path, image_size: int = 299, preprocess: Callable | None = None):
    """Reads one JPEG -> (image float32 (S, S, 3) preprocessed, path)."""
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    image = tf.image.resize(image, (image_size, image_size))
    preprocess = preprocess or keras.applications.inception_v3.preprocess_input
    return preprocess(image), path


def study_extract_loop(image_paths: Sequence[str], feature_model: keras.Model, out_dir: str,
                       image_size: int = 299, preprocess: Callable | None = None,
                       batch_size: int = 16) -> list[str]:
    """The study's caching loop: tf.data(load_image).batch(16) -> eager model call -> one np.save per image.

    ``feature_model`` maps images to a (B, h, w, D) map; each image's (h*w, D) float32 grid goes
    to ``<out_dir>/<image file stem>.npy``. Returns the written paths.
    """
    os.makedirs(out_dir, exist_ok=True)
    images = tf.data.Dataset.from_tensor_slices(list(image_paths))
    images = images.map(lambda p: load_image(p, image_size, preprocess),
                        num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    written = []
    for image, path in images:
        batch_features = feature_model(image)
        batch_features = tf.reshape(batch_features, (batch_features.shape[0], -1, batch_features.shape[3]))
        for feature, p in zip(batch_features, path):
            stem = os.path.splitext(os.path.basename(p.numpy().decode("utf-8")))[0]
            target = npy_path(out_dir, stem)
            np.save(target, feature.numpy())
            written.append(target)
    return written
