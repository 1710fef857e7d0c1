"""Per-step cost of self-critical training, split: sampling, reward, forward+backward, update.

The study's sizes by default (embedding 256, units 512, attention 512, vocab 2500, a 7x7x256
grid as MobileNet alpha 0.25 gives, batch 64 images x K=5 samples, <= 16 steps) on random
weights and random features, with 5 random 11-word references per image over the same
vocabulary and document frequencies from 6 000 such images (Flickr8k's training split).
An untrained model rarely samples END, so every caption runs the full 16 steps: the
sampling and backward figures are upper bounds for a trained model (captions ~10 words).

    nice -n 15 python -m benchmarks.scst_step [--batch 64] [--samples 5] [--reps 5] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _median(times):
    times = sorted(times)
    return times[len(times) // 2]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--images", type=int, default=6000, help="reference images (document frequencies)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a test of the script)")
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from keras_captioning.decoding import _common
    from keras_captioning.metrics.cider_reward import CiderDReward
    from keras_captioning.models import AttentionCaptioner
    from keras_captioning.training.scst import SCSTTrainer

    vocab, regions, dim, emb, units = (2500, 49, 256, 256, 512) if not args.tiny else (40, 4, 8, 8, 16)
    if args.tiny:
        args.images, args.batch = 50, 4
    rng = np.random.default_rng(0)
    words = ["<pad>", "<unk>", "<start>", "<end>"] + [f"w{i}" for i in range(4, vocab)]
    # Zipf-like word frequencies, so document frequencies are spread as in real captions.
    p = 1.0 / np.arange(1, vocab - 3)
    p /= p.sum()
    refs = {str(i): [" ".join(words[4 + j] for j in rng.choice(vocab - 4, 11, p=p)) for _ in range(5)]
            for i in range(args.images)}
    started = time.perf_counter()
    reward = CiderDReward(refs, words=["" if w.startswith("<") else w for w in words], end_id=3)
    setup = time.perf_counter() - started

    keras.utils.set_random_seed(0)
    model = AttentionCaptioner(vocab_size=vocab, feature_dim=dim, num_regions=regions, embedding_dim=emb,
                               units=units, attention_units=units)
    model.compile(optimizer=keras.optimizers.Adam(5e-5))
    trainer = SCSTTrainer(model, reward, samples=args.samples, max_length=args.max_length)
    trainer.compile(optimizer=model.optimizer)
    features = tf.constant(rng.standard_normal((args.batch, regions, dim)).astype("float32"))
    image_ids = tf.constant([str(i).encode() for i in range(args.batch)])
    repeated = tf.repeat(features, args.samples, axis=0)

    @tf.function
    def sample():
        seed = trainer._sample_seed()

        def choose(logp, step):
            return tf.random.stateless_categorical(
                logp, 1, seed=tf.random.experimental.stateless_fold_in(seed, tf.cast(step, tf.int64)),
                dtype=tf.int32)[:, 0]

        return _common.sequential_decode(model, repeated, args.max_length, choose)

    @tf.function
    def greedy():
        return _common.sequential_decode(
            model, features, args.max_length, lambda logp, step: tf.argmax(logp, -1, output_type=tf.int32))

    def score(sampled, greedy_rows):
        ids = np.concatenate([np.repeat(image_ids.numpy(), args.samples), image_ids.numpy()])
        return reward.score_ids(ids, np.concatenate([sampled, greedy_rows]))

    @tf.function
    def backward(tokens, lengths, advantage):
        inputs, targets, mask = trainer._teacher_forcing_rows(tokens, lengths)
        weights = tf.cast(mask, tf.float32)
        with tf.GradientTape() as tape:
            logp = _common.log_probs(model({"features": repeated, "tokens": inputs}), model)
            loss = -tf.reduce_sum(advantage[:, None] * tf.gather(logp, targets, batch_dims=2) * weights)
            loss = loss / tf.reduce_sum(weights)
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def apply(grads):
        model.optimizer.apply(grads, model.trainable_variables)

    @tf.function
    def full_step():
        return trainer.train_step({"features": features, "image_id": image_ids})

    names = ("sample K", "greedy", "reward", "forward+backward", "optimizer", "whole step")
    parts = {name: [] for name in names}
    for rep in range(args.reps + 1):  # the first repetition traces: not timed
        t0 = time.perf_counter()
        s = sample()
        tokens = s["tokens"].numpy()
        t1 = time.perf_counter()
        g = greedy()["tokens"].numpy()
        t2 = time.perf_counter()
        scores = score(tokens, g)
        t3 = time.perf_counter()
        baseline = np.repeat(scores[len(tokens):], args.samples)  # the greedy captions'
        advantage = tf.constant(scores[: len(tokens)] - baseline, tf.float32)
        grads = backward(s["tokens"], s["lengths"], advantage)
        _ = [x.numpy() for x in grads[:1]]
        t4 = time.perf_counter()
        apply(grads)
        _ = model.optimizer.iterations.numpy()
        t5 = time.perf_counter()
        out = full_step()
        float(out["loss"])
        t6 = time.perf_counter()
        if rep:
            for name, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                parts[name].append(value)
        mean_length = float(np.mean(s["lengths"].numpy()))
    result = {name: _median(v) for name, v in parts.items()}
    split_total = sum(v for k, v in result.items() if k != "whole step")
    print(f"SCST step, {args.batch} images x K={args.samples} (+ greedy), <= {args.max_length} steps, vocab "
          f"{vocab}, grid {regions}x{dim}, embedding {emb}, units {units}; median of {args.reps}; "
          f"mean sampled length {mean_length:.1f} words; load average {os.getloadavg()[0]:.1f}")
    print(f"reward set-up (document frequencies + reference vectors of {args.images} images, once): "
          f"{setup:.2f} s")
    for name, value in result.items():
        share = f"{100 * value / split_total:5.1f} %" if name != "whole step" else "       "
        print(f"  {name:18s} {1000 * value:8.1f} ms  {share}")
    return result


if __name__ == "__main__":
    main()
