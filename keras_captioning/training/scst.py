"""Self-critical sequence training (Rennie et al. 2017): REINFORCE on CIDEr-D for a captioner.

``SCSTTrainer`` wraps a trained captioner for ``fit``. One step, for a batch of B images:

1. **Sample** K captions per image (features repeated K times) through the captioner's
   ``decode_step``, in the graph (``tf.while_loop``), with a stateless seed folded from
   ``seed`` and the optimizer step, so a step is repeatable and a resumed run draws the
   same captions an uninterrupted one would; with the greedy baseline, also decode the
   greedy caption of each image.
2. **Reward**: CIDEr-D of every caption against its image's training references, by a
   reward object (``CiderDReward``: document frequencies of the training split, computed
   once) called through ``tf.numpy_function`` - the one part of the step outside the graph.
3. **Baseline**: the greedy caption's CIDEr-D ("greedy", the paper's), or the mean CIDEr-D
   of the image's other K-1 samples ("mean", new SCST). Advantage = reward - baseline; an
   empty sampled caption never gets a positive advantage.
4. **Policy gradient**: the sampled captions are run once more through the model with
   teacher forcing; the loss is ``-sum(advantage * log p(token)) / number of sampled tokens``
   over the words and the END token (when one was sampled) of every caption. By default
   this pass runs with ``training=False``, so the log-probs are those of the distribution
   the captions were sampled from (``decode_step`` has no dropout). With ``dropout=True``
   it runs with ``training=True``: the model's dropout regularises the policy, as in
   self-critical.pytorch, which fine-tunes in train mode; the samples still come from the
   dropout-free model. The attention model's doubly stochastic penalty (``attention_reg``)
   is a cross-entropy regulariser and plays no part here.

Logged per step (``step_*``, the values of that step) and per epoch (means): ``loss``,
``reward`` (mean sampled CIDEr-D), ``baseline``, ``advantage`` (their difference), ``length``
(words per sampled caption) and ``entropy`` (nats per sampled token).

The trainer *is not* what gets saved: ``save`` writes the wrapped captioner (with the shared
optimizer), so the run's checkpoints are ordinary captioners for evaluate and ``--resume``;
the decoding API is forwarded, so ``DecodedValidation`` decodes the wrapped model.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_captioning.decoding import _common  # the decoders' graph loop and log-softmax
from keras_captioning.errors import CaptioningError
from keras_captioning.models.wraps_captioner import WrapsCaptioner
from keras_captioning.ranges import CHOICES

BASELINES = CHOICES[("train", "scst_baseline")]
LOGGED = ("loss", "reward", "baseline", "advantage", "length", "entropy")


class SCSTTrainer(WrapsCaptioner, keras.Model):
    """``fit`` wrapper that fine-tunes ``captioner`` with self-critical policy gradients.

    Args:
        captioner: a trained captioner with the decode API (``init_decode``, ``decode_step``,
            ``start_id``, ``end_id``, ``pad_id``) and ``call({"features", "tokens"})`` -> logits.
        reward: object with ``score_ids(image_ids (M,) bytes, tokens (M, L) int) -> (M,)``
            CIDEr-D per row (rows read up to their first END; PAD after it), e.g.
            ``keras_captioning.metrics.cider_reward.CiderDReward``.
        samples: K captions sampled per image.
        baseline: ``"greedy"`` or ``"mean"`` (needs K >= 2).
        max_length: decoding steps per sampled caption (END included): the length bound.
        seed: base of the per-step sampling seeds.
        dropout: run the policy-gradient pass with the model's dropout on (``training=True``).

    Batches: ``{"image_id": string (B,), "features": float32 (B, ...)}``.
    """

    def __init__(self, captioner, reward, samples: int = 5, baseline: str = "greedy",
                 max_length: int = 16, seed: int = 0, dropout: bool = False, **kwargs):
        if baseline not in BASELINES:
            raise CaptioningError(f"scst baseline: expected one of {BASELINES}, got {baseline!r}")
        if int(samples) < (2 if baseline == "mean" else 1):
            raise CaptioningError(f"scst samples: the {baseline} baseline needs K >= "
                                  f"{2 if baseline == 'mean' else 1}, got {samples}")
        if int(max_length) < 1:
            raise CaptioningError(f"scst max_length: must be >= 1, got {max_length}")
        super().__init__(**kwargs)
        self.captioner = captioner
        self.reward = reward
        self.samples = int(samples)
        self.baseline = baseline
        self.max_length = int(max_length)
        self.seed = int(seed)
        self.dropout = bool(dropout)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in LOGGED}
        self.built = True

    # ------------------------------------------------------------------ what the callbacks see

    @property
    def metrics(self):
        # Reset by Keras at every epoch: the epoch logs are means over the epoch's steps.
        return list(self.trackers.values())

    def save(self, filepath, *args, **kwargs):
        """Saves the wrapped captioner (weights + the shared optimizer), not this wrapper."""
        return self.captioner.save(filepath, *args, **kwargs)

    def init_decode(self, features):
        return self.captioner.init_decode(features)

    # ------------------------------------------------------------------ one step

    def _sample_seed(self):
        """(2,) int64 seed of this optimizer step: same seed + same step -> same captions."""
        base = tf.constant([self.seed, 0x5C57], tf.int64)
        return tf.random.experimental.stateless_fold_in(base, tf.cast(self.optimizer.iterations, tf.int64))

    def rollout(self, features, image_ids):
        """Samples, rewards and advantages of one batch (no gradient).

        Args:
            features: float32 (B, ...); image_ids: string (B,).

        Returns:
            dict: ``tokens`` int32 (B*K, max_length) sampled words then PAD (row ``b*K + k`` is
            image b's k-th sample), ``lengths`` int32 (B*K,) words per caption, ``reward``,
            ``baseline``, ``advantage`` float32 (B*K,).
        """
        k = self.samples
        repeated = tf.repeat(features, k, axis=0)  # (B*K, ...)
        seed = self._sample_seed()

        def sample(logp, step):
            step_seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(step, tf.int64))
            return tf.random.stateless_categorical(logp, 1, seed=step_seed, dtype=tf.int32)[:, 0]

        sampled = _common.sequential_decode(self.captioner, repeated, self.max_length, sample)
        rows = [sampled["tokens"]]
        if self.baseline == "greedy":
            greedy = _common.sequential_decode(
                self.captioner, features, self.max_length,
                lambda logp, step: tf.argmax(logp, axis=-1, output_type=tf.int32))
            rows.append(greedy["tokens"])
        batch = tf.shape(features)[0]
        greedy_ids = [image_ids] if self.baseline == "greedy" else []
        scored_ids = tf.concat([tf.repeat(image_ids, k)] + greedy_ids, axis=0)  # one id per scored row
        scores = tf.numpy_function(self._score, [scored_ids, tf.concat(rows, axis=0)], tf.float32,
                                   name="cider_d_reward")
        scores = tf.reshape(scores, [-1])
        reward = scores[: batch * k]  # (B*K,)
        if self.baseline == "greedy":
            baseline = tf.repeat(scores[batch * k:], k)
        else:
            per_image = tf.reshape(reward, [batch, k])
            others = (tf.reduce_sum(per_image, axis=1, keepdims=True) - per_image) / float(k - 1)
            baseline = tf.reshape(others, [-1])
        advantage = reward - baseline
        empty = tf.equal(sampled["lengths"], 0)
        # The empty caption scores 0 and the baseline is >= 0, so its advantage is <= 0
        # already; the guard keeps that true whatever reward object is plugged in.
        advantage = tf.where(empty, tf.minimum(advantage, 0.0), advantage)
        return {"tokens": sampled["tokens"], "lengths": sampled["lengths"], "reward": reward,
                "baseline": baseline, "advantage": advantage}

    def _score(self, image_ids, tokens):
        return np.asarray(self.reward.score_ids(image_ids, tokens), np.float32)

    def _teacher_forcing_rows(self, tokens, lengths):
        """(inputs, targets, mask) (B*K, T) replaying the sampled captions: START w.. -> w.. END.

        A caption that stopped at ``max_length`` without END has no END target.
        """
        positions = tf.range(self.max_length)[None, :]  # (1, L)
        ended = lengths < self.max_length  # END was sampled
        targets = tf.where(ended[:, None] & tf.equal(positions, lengths[:, None]),
                           tf.constant(self.end_id, tf.int32), tokens)
        steps = lengths + tf.cast(ended, tf.int32)  # scored actions per caption (>= 1)
        width = tf.reduce_max(steps)
        mask = positions[:, :width] < steps[:, None]  # (B*K, T)
        targets = tf.where(mask, targets[:, :width], tf.constant(self.end_id, tf.int32))  # no PAD gathers
        start = tf.fill([tf.shape(tokens)[0], 1], tf.constant(self.start_id, tf.int32))
        inputs = tf.concat([start, targets[:, :-1]], axis=1)
        return inputs, targets, mask

    def compute_gradients(self, data):
        """Gradients of the SCST loss for one batch, and the step's values.

        Returns:
            ``(grads, values)``: one gradient per trainable variable; values = dict of float32
            scalars named as ``LOGGED``.
        """
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if not isinstance(x, dict) or "features" not in x or "image_id" not in x:
            raise CaptioningError("scst batch: expected a dict with keys 'image_id' and 'features' "
                                  "(keras_captioning.training.scst_stage.make_image_dataset)")
        features = tf.cast(x["features"], tf.float32)
        roll = self.rollout(features, x["image_id"])
        inputs, targets, mask = self._teacher_forcing_rows(roll["tokens"], roll["lengths"])
        advantage = tf.stop_gradient(roll["advantage"])
        repeated = tf.repeat(features, self.samples, axis=0)
        weights = tf.cast(mask, tf.float32)
        num_tokens = tf.maximum(tf.reduce_sum(weights), 1.0)
        with tf.GradientTape() as tape:
            logits = self.captioner({"features": repeated, "tokens": inputs}, training=self.dropout)
            logp = _common.log_probs(logits, self.captioner)  # (B*K, T, V), PAD/START excluded
            token_logp = tf.gather(logp, targets, batch_dims=2)  # (B*K, T)
            loss = -tf.reduce_sum(advantage[:, None] * token_logp * weights) / num_tokens
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
        grads = tape.gradient(scaled, self.trainable_variables)
        entropy = -tf.reduce_sum(tf.math.multiply_no_nan(logp, tf.exp(logp)), axis=-1)  # (B*K, T)
        values = {
            "loss": loss,
            "reward": tf.reduce_mean(roll["reward"]),
            "baseline": tf.reduce_mean(roll["baseline"]),
            "advantage": tf.reduce_mean(roll["advantage"]),
            "length": tf.reduce_mean(tf.cast(roll["lengths"], tf.float32)),
            "entropy": tf.reduce_sum(tf.stop_gradient(entropy) * weights) / num_tokens,
        }
        return grads, values

    def train_step(self, data):
        grads, values = self.compute_gradients(data)
        self.optimizer.apply(grads, self.trainable_variables)
        logs = {}
        for name, tracker in self.trackers.items():
            tracker.update_state(values[name])
            logs[name] = tracker.result()  # mean over the epoch so far
        logs.update({f"step_{name}": value for name, value in values.items()})
        return logs

    def test_step(self, data):
        raise CaptioningError("SCSTTrainer has no test step: the stage validates on decoded captions")
