"""Side-by-side benchmarks: keras-captioning vs the study's pipeline, in one process.

Usage::

    python -m benchmarks.run [--tiny] [--reps 5] [--out bench_out] [--only input,train,...]

(``make bench``; ``make bench ARGS=--tiny`` for a seconds-long smoke run). Every row runs
our code and ``benchmarks.study_pipeline`` (the study's approach, rebuilt) on the same data,
sizes and machine; each figure is the median of ``--reps`` timed repetitions after one
untimed warm-up, and ratios are ours / study's from the same run. Rows:

    input       examples/s reading features + captions (TFRecord shards vs .npy + numpy_function)
    train       real target tokens/s of one optimizer step on a fixed batch
    decode      captions/s: our batched greedy / sampling / beam-3 vs one image at a time
    storage     feature bytes on disk per image
    metrics     wall seconds to score a synthetic corpus (ours vs pycocoevalcap)
    extraction  images/s from JPEG files to cached features, same CNN (weights=None)

Prints one table and writes ``<out>/results.json`` and ``<out>/results.md``. The data
(synthetic images, random features) is generated in a fresh ``<out>/work-*`` folder, removed
at the end unless ``--keep``. See benchmarks/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

# Before TensorFlow is imported anywhere (study_pipeline and the package import it lazily).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROWS = ("input", "train", "decode", "storage", "metrics", "extraction")


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one benchmark mode (printed and saved with the results)."""

    name: str
    # shared by input / train / decode: the study's attention setup
    regions: int  # R
    feature_dim: int  # D
    vocab_size: int
    embedding_dim: int
    units: int
    max_length: int  # tokens incl. <start>/<end> (train captions, decode steps)
    # 1. input pipeline + 4. storage
    input_images: int  # x 5 captions each
    input_batch: int
    # 2. training
    train_batch: int
    train_steps: int  # optimizer steps per timed repetition
    # 3. decoding
    decode_images: int  # ours, batched
    decode_study_images: int  # the study, one at a time (per-caption rate extrapolated)
    beam_width: int
    # 5. metrics
    metric_images: int
    metric_references: int
    meteor: bool  # include METEOR (Java on the pycocoevalcap side)
    # 6. feature extraction
    extract_images: int
    backbone: str
    image_size: int
    synthetic_image_size: int = 96
    slow_reps: int = 3  # metrics and extraction take long per repetition: at most this many


FULL = Sizes(
    name="full", regions=64, feature_dim=2048, vocab_size=5000, embedding_dim=256, units=512,
    max_length=20, input_images=400, input_batch=64, train_batch=64, train_steps=3,
    decode_images=256, decode_study_images=12, beam_width=3,
    metric_images=5000, metric_references=5, meteor=True,
    extract_images=64, backbone="inception_v3", image_size=299,
)
TINY = Sizes(
    name="tiny", regions=4, feature_dim=32, vocab_size=60, embedding_dim=8, units=16,
    max_length=8, input_images=24, input_batch=16, train_batch=8, train_steps=2,
    decode_images=16, decode_study_images=2, beam_width=3,
    metric_images=40, metric_references=5, meteor=False,
    extract_images=4, backbone="mobilenet_v2", image_size=32, synthetic_image_size=48,
)


@dataclass
class Result:
    """One table row. ``ratio`` = ours / study; the target is met when the ratio is on the right side."""

    key: str  # one of ROWS
    benchmark: str
    unit: str
    ours: float | None = None
    study: float | None = None
    target: float | None = None  # None: informational row
    higher_is_better: bool = True
    ours_runs: list = field(default_factory=list)
    study_runs: list = field(default_factory=list)
    notes: str = ""
    skipped: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.study:
            return None
        return self.ours / self.study

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"{'>=' if self.higher_is_better else '<='} {self.target:g}x"

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(ratio=self.ratio, met=self.met, target_text=self.target_text())
        return out


# --- timing -------------------------------------------------------------------------------------

def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def compare(ours: Callable[[], object], study: Callable[[], object], reps: int,
            warmup: bool = True) -> tuple[list[float], list[float]]:
    """Seconds per repetition of each side; one untimed warm-up each, then alternating reps.

    Alternating ours/study keeps slow drifts (page cache, CPU clock) off the ratio.
    """
    if warmup:
        ours()
        study()
    ours_s, study_s = [], []
    for _ in range(reps):
        ours_s.append(timed(ours)[0])
        study_s.append(timed(study)[0])
    return ours_s, study_s


def repeat(fn: Callable[[], object], reps: int) -> list[float]:
    """Seconds per repetition of one function, after one untimed warm-up."""
    fn()
    return [timed(fn)[0] for _ in range(reps)]


def rates(work: float, seconds: list[float]) -> list[float]:
    return [work / s for s in seconds]


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# --- shared data ----------------------------------------------------------------------------------

@dataclass
class Context:
    sizes: Sizes
    reps: int
    work: str  # scratch folder
    records: list = field(default_factory=list)  # CaptionRecord of the synthetic dataset
    vocab: object = None
    cache: dict = field(default_factory=dict)  # files shared by the input and storage rows


def prepare(ctx: Context) -> None:
    """Synthetic images + captions (JPEGs for extraction, captions everywhere) and a vocabulary."""
    from keras_captioning.data.loaders import load_dataset
    from keras_captioning.data.synthetic import generate_synthetic
    from keras_captioning.data.vocab import Vocabulary

    s = ctx.sizes
    root = os.path.join(ctx.work, "synthetic")
    count = max(s.input_images, s.extract_images)
    seconds, _ = timed(lambda: generate_synthetic(root, num_images=count, seed=0,
                                                  image_size=s.synthetic_image_size))
    ctx.records = sorted(load_dataset("synthetic", root=root), key=lambda r: r.image_id)
    ctx.vocab = Vocabulary.build([c for r in ctx.records for c in r.captions], max_words=None)
    log(f"synthetic dataset: {len(ctx.records)} images ({seconds:.1f}s), vocabulary {len(ctx.vocab)}")


def random_captions(rng, batch: int, length: int, vocab_size: int, min_words: int = 1):
    """int32 (batch, length): [START, random words..., END, 0...], real lengths spread over [min, length]."""
    import numpy as np

    captions = np.zeros((batch, length), np.int32)
    for row in range(batch):
        words = int(rng.integers(min_words, length - 2, endpoint=True))
        captions[row, 0] = 2
        captions[row, 1:1 + words] = rng.integers(4, vocab_size, size=words)
        captions[row, 1 + words] = 3
    return captions


# --- 1. input pipeline + 4. storage -------------------------------------------------------------

def write_shards(records, grids, vocab, out_dir: str, dtype: str = "float16", shard_size: int = 1000) -> dict:
    """Our shard layout for given feature arrays: ``train-*.tfrecord`` + a minimal ``manifest.json``.

    The examples are made by ``data.tfrecords.serialize_example``, byte for byte what the
    features step writes; the manifest holds the keys the pipeline reads (dtype, static shapes).
    Random features keep the benchmark from spending minutes in a CNN first.
    """
    import math

    import tensorflow as tf

    from keras_captioning.data.tfrecords import (
        FORMAT_VERSION,
        MANIFEST_FORMAT,
        MANIFEST_NAME,
        serialize_example,
    )
    from keras_captioning.features.extract import SHARD_PATTERN

    os.makedirs(out_dir, exist_ok=True)
    count = math.ceil(len(records) / shard_size)
    names = []
    for index in range(count):
        names.append(SHARD_PATTERN.format(split="train", index=index, count=count))
        chunk = slice(index * shard_size, (index + 1) * shard_size)
        with tf.io.TFRecordWriter(os.path.join(out_dir, names[-1])) as writer:
            for record, grid in zip(records[chunk], grids[chunk]):
                ids = [vocab.encode(caption) for caption in record.captions]
                writer.write(serialize_example(record.image_id, grid.astype(dtype), grid.mean(axis=0),
                                               record.captions, ids))
    regions, dim = grids[0].shape
    captions = sum(len(r.captions) for r in records)
    manifest = {"format": MANIFEST_FORMAT, "format_version": FORMAT_VERSION, "kind": "final", "dtype": dtype,
                "pooled_dtype": "float32",
                "grid_shape": [int(regions), int(dim)], "num_regions": int(regions), "feature_dim": int(dim),
                "pooled_dim": int(dim), "shards": {"train": names},
                "counts": {"train": {"images": len(records), "captions": captions,
                                     "trainable_images": len(records), "trainable_captions": captions}},
                "note": "written by benchmarks/run.py from random features"}
    with open(os.path.join(out_dir, MANIFEST_NAME), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
    return manifest


def write_feature_files(ctx: Context) -> dict:
    """Random float32 grids for the first ``input_images`` images, stored both ways.

    Ours: TFRecord shards (float16 grid + float16 pooled + captions). The study: one float32
    ``.npy`` grid per image.
    """
    import numpy as np

    from benchmarks import study_pipeline as sp

    s = ctx.sizes
    records = ctx.records[: s.input_images]
    rng = np.random.default_rng(1)
    grids = [rng.standard_normal((s.regions, s.feature_dim), dtype=np.float32) for _ in records]
    ours_dir = os.path.join(ctx.work, "shards")
    study_dir = os.path.join(ctx.work, "npy")
    t_ours, manifest = timed(lambda: write_shards(records, grids, ctx.vocab, ours_dir))
    t_study, paths = timed(lambda: sp.save_npy_features([r.image_id for r in records], grids, study_dir))
    log(f"wrote features of {len(records)} images: shards {t_ours:.1f}s, .npy {t_study:.1f}s")
    return {"records": records, "ours_dir": ours_dir, "study_dir": study_dir, "npy_paths": paths,
            "manifest": manifest}


def feature_files(ctx: Context) -> dict:
    if "feature_files" not in ctx.cache:
        ctx.cache["feature_files"] = write_feature_files(ctx)
    return ctx.cache["feature_files"]


def bench_input(ctx: Context) -> list[Result]:
    import glob

    import tensorflow as tf

    from benchmarks import study_pipeline as sp
    from keras_captioning.config import TrainConfig
    from keras_captioning.data.pipeline import make_train_dataset

    s = ctx.sizes
    files = feature_files(ctx)
    records = files["records"]
    shards = sorted(glob.glob(os.path.join(files["ours_dir"], "train-*.tfrecord")))
    # The study: one element per (image, caption); captions padded to the longest in the set.
    paths = [sp.npy_path(files["study_dir"], r.image_id) for r in records for _ in r.captions]
    ids, _ = ctx.vocab.encode_batch([c for r in records for c in r.captions], None)
    study_ds = sp.npy_dataset(paths, ids, s.input_batch)
    # Ours as the trainer builds it: its shuffle buffer, every batch padded to the longest caption.
    train_cfg = TrainConfig()
    ours_ds = make_train_dataset(shards, s.input_batch, feature="grid", caption_mode=train_cfg.caption_mode,
                                 shuffle=True, seed=train_cfg.seed, shuffle_buffer=train_cfg.shuffle_buffer,
                                 max_length=ids.shape[1])

    def real_examples(batches):
        # Untimed check: caption rows holding a token. padded_batch pads tokens, never rows.
        n = 0
        for batch in batches:
            captions = batch["captions"] if isinstance(batch, dict) else batch[1]
            n += int(tf.reduce_sum(tf.cast(tf.reduce_any(captions != 0, axis=1), tf.int32)))
        return n

    def rows(batches):
        # Timed pass: what a training loop does with the batches, minus the training.
        n = 0
        for batch in batches:
            n += int((batch["captions"] if isinstance(batch, dict) else batch[1]).shape[0])
        return n

    n_ours, n_study = real_examples(ours_ds), real_examples(study_ds)  # also the warm-up pass
    if (rows(ours_ds), rows(study_ds)) != (n_ours, n_study):
        raise RuntimeError("input: a batch holds caption rows without any token")
    ours_s, study_s = compare(lambda: rows(ours_ds), lambda: rows(study_ds), ctx.reps, warmup=False)
    grid_bytes = s.regions * s.feature_dim * 4
    notes = (f"{n_ours} vs {n_study} (image, caption) examples per epoch, batch {s.input_batch}, "
             f"{len(records)} images, features {s.regions}x{s.feature_dim} "
             f"({grid_bytes / 2**20:.2f} MiB float32 per example), captions padded to {ids.shape[1]} tokens; "
             f"ours with the trainer's settings (caption_mode {train_cfg.caption_mode}, shuffle buffer "
             f"{train_cfg.shuffle_buffer}); files in the page cache on both sides")
    return [Result("input", "1. input pipeline", "examples/s", median(rates(n_ours, ours_s)),
                   median(rates(n_study, study_s)), 5.0, True, rates(n_ours, ours_s),
                   rates(n_study, study_s), notes)]


def bench_storage(ctx: Context) -> list[Result]:
    s = ctx.sizes
    files = feature_files(ctx)
    n = len(files["records"])
    shard_bytes = sum(os.path.getsize(os.path.join(files["ours_dir"], f))
                      for f in os.listdir(files["ours_dir"]) if f.endswith(".tfrecord"))
    npy_bytes = sum(os.path.getsize(p) for p in files["npy_paths"])
    ours, study = shard_bytes / n, npy_bytes / n
    grid16 = s.regions * s.feature_dim * 2
    pooled = s.feature_dim * 2  # float16, like the grid
    pooled_npy = s.feature_dim * 4 + 128  # the study's float32 .npy: np.save adds a 128-byte header
    notes = (f"apparent file sizes, {n} images; ours per image = float16 grid {grid16} B + float16 pooled "
             f"{pooled} B + captions, ids and proto framing {ours - grid16 - pooled:.0f} B; study = the "
             f"float32 grid .npy only (captions stay in the JSON); counting also the pooled .npy the "
             f"study's vanilla model needs ({pooled_npy} B) the ratio is {ours / (study + pooled_npy):.3f}x; "
             f"grid alone {grid16 / study:.3f}x; manifest/vocab JSON (per dataset) not counted")
    return [Result("storage", "4. storage", "bytes/image", ours, study, 0.5, False, [ours], [study], notes)]


# --- 2. training --------------------------------------------------------------------------------

def build_models(ctx: Context, seed: int):
    """Our AttentionCaptioner and the study's encoder/decoder, same sizes, fresh random weights."""
    import keras

    from benchmarks import study_pipeline as sp
    from keras_captioning.models.attention_captioner import AttentionCaptioner

    s = ctx.sizes
    keras.utils.set_random_seed(seed)
    ours = AttentionCaptioner(vocab_size=s.vocab_size, feature_dim=s.feature_dim, num_regions=s.regions,
                              embedding_dim=s.embedding_dim, units=s.units, attention_units=s.units)
    # The package's defaults (configs: jit_compile false).
    ours.compile(optimizer=keras.optimizers.Adam(4e-4), jit_compile=False)
    encoder, decoder = sp.build_study_model(s.vocab_size, s.feature_dim, s.embedding_dim, s.units)
    return ours, encoder, decoder


def bench_train(ctx: Context) -> list[Result]:
    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks import study_pipeline as sp

    s = ctx.sizes
    ours, encoder, decoder = build_models(ctx, seed=0)
    rng = np.random.default_rng(2)
    features = tf.constant(rng.standard_normal((s.train_batch, s.regions, s.feature_dim), dtype=np.float32))
    captions = random_captions(rng, s.train_batch, s.max_length, s.vocab_size)
    real_tokens = int((captions[:, 1:] != 0).sum())
    captions = tf.constant(captions)
    batch = {"features": features, "captions": captions}
    step = sp.make_study_train_step(encoder, decoder, keras.optimizers.Adam(4e-4))

    def run_ours():
        for _ in range(s.train_steps):
            logs = ours.train_on_batch(batch, return_dict=True)
        return logs

    def run_study():
        for _ in range(s.train_steps):
            loss, _ = step(features, captions)
        return float(loss.numpy())

    t_ours, _ = timed(run_ours)  # the first call traces: reported, not counted
    t_study, _ = timed(run_study)
    # One more untimed call each: the first steps after tracing are still slow (allocator, caches).
    ours_s, study_s = compare(run_ours, run_study, ctx.reps, warmup=True)
    work = s.train_steps * real_tokens
    notes = (f"batch {s.train_batch}, captions padded to {s.max_length} tokens, {real_tokens} real target "
             f"tokens per batch, vocab {s.vocab_size}, embedding {s.embedding_dim}, units {s.units}, "
             f"{s.regions}x{s.feature_dim} regions, {s.train_steps} steps per rep; first call (trace) "
             f"ours {t_ours:.1f}s, study {t_study:.1f}s; ours: train_on_batch, jit_compile=False")
    return [Result("train", "2. training step", "tokens/s", median(rates(work, ours_s)),
                   median(rates(work, study_s)), 2.0, True, rates(work, ours_s), rates(work, study_s), notes)]


# --- 3. decoding --------------------------------------------------------------------------------

def bench_decode(ctx: Context) -> list[Result]:
    import numpy as np

    from benchmarks import study_pipeline as sp
    from keras_captioning.decoding import beam_search, greedy_decode, sample_decode

    s = ctx.sizes
    # Untrained models: random weights rarely pick <end>, so both sides decode the full length
    # (the notes report the mean caption length of each side to check it).
    ours, encoder, decoder = build_models(ctx, seed=1)
    rng = np.random.default_rng(3)
    features = rng.standard_normal((s.decode_images, s.regions, s.feature_dim), dtype=np.float32)
    subset = features[: s.decode_study_images]
    steps = s.max_length - 1  # tokens after <start>, as in training
    lengths: dict[str, float] = {}

    def ours_fn(kind):
        def run():
            if kind == "greedy":
                result = greedy_decode(ours, features, max_length=steps)
            elif kind == "sample":
                result = sample_decode(ours, features, max_length=steps, seed=0)
            else:
                result = beam_search(ours, features, max_length=steps, beam_width=s.beam_width)
            lengths[f"ours {kind}"] = float(np.mean(result.lengths))
        return run

    def study_fn(greedy):
        def run():
            out = [sp.study_decode_one(encoder, decoder, f, steps, greedy=greedy, seed=None if greedy else 0)
                   for f in subset]
            lengths[f"study {'greedy' if greedy else 'sample'}"] = float(np.mean([len(t) for t in out]))
        return run

    seconds = {"greedy": compare(ours_fn("greedy"), study_fn(True), ctx.reps),
               "sample": compare(ours_fn("sample"), study_fn(False), ctx.reps)}
    # Beam search against the study's greedy loop, timed above.
    seconds["beam"] = (repeat(ours_fn("beam"), ctx.reps), seconds["greedy"][1])
    results = []
    labels = {
        "greedy": ("3. decoding, greedy", 20.0, "ours batched greedy vs the study's loop with argmax"),
        "sample": ("3b. decoding, sampling", None, "ours batched sampling vs the study's tf.random.categorical loop"),
        "beam": (f"3c. decoding, beam-{s.beam_width}", None, "ours beam search vs the study's greedy loop"),
    }
    for name, (label, target, what) in labels.items():
        o, st = seconds[name]
        study_kind = "greedy" if name != "sample" else "sample"
        ours_len, study_len = lengths[f"ours {name}"], lengths[f"study {study_kind}"]
        notes = (f"{what}; ours {s.decode_images} images per call, study {s.decode_study_images} images "
                 f"one at a time (rate per caption extrapolated); max {steps} words; mean words: ours "
                 f"{ours_len:.1f}, study {study_len:.1f} (untrained models)")
        if abs(ours_len - study_len) > 0.2 * max(ours_len, study_len, 1.0):
            notes += "; CAUTION: caption lengths differ, captions/s are not like for like"
        results.append(Result("decode", label, "captions/s", median(rates(s.decode_images, o)),
                              median(rates(s.decode_study_images, st)), target, True,
                              rates(s.decode_images, o), rates(s.decode_study_images, st), notes))
    return results


# --- 5. metrics -------------------------------------------------------------------------------------

def synthetic_corpus(images: int, references: int, seed: int = 4):
    """gts {id: [references]} and res {id: [one hypothesis]} from the synthetic scene describer."""
    import numpy as np

    from keras_captioning.data.synthetic import describe_scene, sample_scene

    gts, res = {}, {}
    for image_id in range(images):
        rng = np.random.default_rng([seed, image_id])
        objects = sample_scene(rng, 96)
        captions = describe_scene(objects, rng)
        while len(captions) < references + 1:
            captions += describe_scene(objects, rng)
        gts[image_id] = captions[:references]
        # The hypothesis: another true caption of the scene (a good model), or one of a different
        # scene for a third of the images (a wrong one), so scores are neither 0 nor 1.
        if image_id % 3 == 0:
            captions = describe_scene(sample_scene(rng, 96), rng)
        res[image_id] = [captions[references] if image_id % 3 else captions[0]]
    return gts, res


def bench_metrics(ctx: Context) -> list[Result]:
    from keras_captioning.metrics import score_all

    s = ctx.sizes
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        return [Result("metrics", "5. corpus metrics", "s", target=1.0, higher_is_better=False,
                       skipped="pycocoevalcap not installed (pip install keras-captioning[coco])")]
    java = shutil.which("java") is not None
    meteor = s.meteor and java
    # Like for like: BLEU-1..4, ROUGE-L, CIDEr-D and (with Java) the METEOR 1.5 jar on both sides.
    ours_metrics = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"] + (["METEOR-1.5"] if meteor else [])
    gts, res = synthetic_corpus(s.metric_images, s.metric_references)
    small = {k: gts[k] for k in list(gts)[:20]}, {k: res[k] for k in list(res)[:20]}
    scores = {}

    def run_ours(corpus):
        scores["ours"] = score_all(*corpus, metrics=ours_metrics)

    def run_coco(corpus, tokenize=java):
        with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its BLEU counts
            coco_scores(corpus, tokenize)

    def coco_scores(corpus, tokenize):
        g, r = corpus
        if tokenize:  # the official pipeline: PTB tokenizer (Java) then the scorers
            tok = PTBTokenizer()
            g = tok.tokenize({k: [{"caption": c} for c in v] for k, v in g.items()})
            r = tok.tokenize({k: [{"caption": c} for c in v] for k, v in r.items()})
        scorers = [Bleu(4), Rouge(), Cider()]
        if meteor:
            from pycocoevalcap.meteor.meteor import Meteor

            scorers.append(Meteor())
        out = {}
        for scorer in scorers:
            out[scorer.method()] = scorer.compute_score(g, r)[0]
            if hasattr(scorer, "close"):
                scorer.close()
        scores["coco"] = out

    run_ours(small)  # warm-up: imports, JVM class loading, caches
    run_coco(small)
    ours_s, study_s = compare(lambda: run_ours((gts, res)), lambda: run_coco((gts, res)),
                              s.slow_reps, warmup=False)
    included_coco = ["Bleu_1-4", "ROUGE_L", "CIDEr(-D)"] + (["METEOR (Java)"] if meteor else [])
    missing = "" if meteor or not s.meteor else "; METEOR skipped on both sides: no java on PATH"
    notes = (f"{s.metric_images} images x {s.metric_references} references, one hypothesis each; ours "
             f"score_all({ours_metrics}) on raw text (its PTB-style tokenizer included); pycocoevalcap "
             f"{'PTBTokenizer (Java) + ' if java else ''}{', '.join(included_coco)}, scorer construction "
             f"included{missing}; {s.slow_reps} reps; scores ours {_fmt_scores(scores.get('ours'))} "
             f"vs coco {_fmt_scores(scores.get('coco'))}")
    return [Result("metrics", "5. corpus metrics", "s", median(ours_s), median(study_s), 1.0, False,
                   ours_s, study_s, notes)]


def _fmt_scores(scores) -> str:
    if not scores:
        return "{}"
    flat = {}
    for key, value in scores.items():
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                flat[f"{key}_{i + 1}"] = v
        else:
            flat[key] = value
    return "{" + ", ".join(f"{k}: {float(v):.3f}" for k, v in flat.items()) + "}"


# --- 6. feature extraction ------------------------------------------------------------------------

def bench_extraction(ctx: Context) -> list[Result]:
    from benchmarks import study_pipeline as sp
    from keras_captioning.features.backbones import BACKBONES
    from keras_captioning.features.extract import extract_features

    s = ctx.sizes
    records = ctx.records[: s.extract_images]
    spec = BACKBONES[s.backbone]
    ours_dir = os.path.join(ctx.work, "extract_ours")
    study_dir = os.path.join(ctx.work, "extract_study")

    def run_ours(subset):
        extract_features(subset, ctx.vocab, ours_dir, backbone=s.backbone, weights="none",
                         image_size=s.image_size, dtype="float16", overwrite=True)

    def run_study(subset):
        # The study built its feature model once per notebook run, then looped over the images.
        cnn = spec.build_base((s.image_size, s.image_size, 3), None, spec.default_alpha)
        sp.study_extract_loop([r.image_path for r in subset], cnn, study_dir, image_size=s.image_size,
                              preprocess=spec.preprocess)

    # Each call builds its CNN and traces anew, so a warm-up on a few images is enough
    # (library initialisation, file cache); the timed calls process every image.
    run_ours(records[:2])
    run_study(records[:2])
    ours_s, study_s = compare(lambda: run_ours(records), lambda: run_study(records), s.slow_reps, warmup=False)
    n = len(records)
    notes = (f"{n} synthetic {s.synthetic_image_size}px JPEGs -> {s.backbone} (weights=None) at "
             f"{s.image_size}px; both sides build the CNN inside the timed call; ours writes float16 "
             f"shards with captions, the study one float32 .npy per image (batch 16)")
    return [Result("extraction", "6. feature extraction", "images/s", median(rates(n, ours_s)),
                   median(rates(n, study_s)), 1.0, True, rates(n, ours_s), rates(n, study_s), notes)]


BENCHMARKS: dict[str, Callable[[Context], list[Result]]] = {
    "input": bench_input, "train": bench_train, "decode": bench_decode,
    "storage": bench_storage, "metrics": bench_metrics, "extraction": bench_extraction,
}
# key -> (label, unit, target, higher is better): the headline row of each benchmark.
HEADLINES = {
    "input": ("1. input pipeline", "examples/s", 5.0, True),
    "train": ("2. training step", "tokens/s", 2.0, True),
    "decode": ("3. decoding, greedy", "captions/s", 20.0, True),
    "storage": ("4. storage", "bytes/image", 0.5, False),
    "metrics": ("5. corpus metrics", "s", 1.0, False),
    "extraction": ("6. feature extraction", "images/s", 1.0, True),
}


# --- machine load ---------------------------------------------------------------------------------

class CPUShare:
    """How much CPU other processes took while we ran, from /proc/stat and our own rusage.

    A busy machine slows both sides, but not equally (the study's per-step Python loops and
    our batched kernels react differently), so the report says when the figures are suspect.
    """

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        import resource

        try:
            with open("/proc/stat", encoding="utf-8") as fh:
                fields = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        own = sum(getattr(resource.getrusage(who), attr) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for attr in ("ru_utime", "ru_stime"))
        return (sum(fields) - idle) / tick, sum(fields) / tick, own

    def other_share(self) -> float | None:
        """Fraction of the machine's CPU time used by other processes since construction."""
        end = self._sample()
        if self.start is None or end is None:
            return None
        busy, total, own = (b - a for a, b in zip(self.start, end))
        return max(0.0, (busy - own) / total) if total > 0 else None


# --- report ---------------------------------------------------------------------------------------

def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}
    try:
        import keras
        import numpy as np
        import tensorflow as tf

        info.update(tensorflow=tf.__version__, keras=keras.__version__, numpy=np.__version__)
    except ImportError:
        pass
    return info


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 1e5:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _share(value) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def table(results: list[Result]) -> str:
    header = ["benchmark", "unit", "ours (median)", "study (median)", "ratio", "target", "met?"]
    rows = []
    for r in results:
        if r.skipped:
            rows.append([r.benchmark, r.unit, "skipped", "skipped", "n/a", r.target_text(), "n/a"])
            continue
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.3g}x"
        rows.append([r.benchmark, r.unit, _num(r.ours), _num(r.study), ratio, r.target_text(), met])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def write_reports(out: str, results: list[Result], sizes: Sizes, machine: dict, reps: int,
                  seconds: float) -> None:
    os.makedirs(out, exist_ok=True)
    payload = {"mode": sizes.name, "reps": reps, "total_seconds": round(seconds, 1),
               "sizes": dataclasses.asdict(sizes), "machine": machine,
               "rows": [r.to_json() for r in results]}
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
    lines = [
        f"# keras-captioning vs the study's pipeline ({sizes.name} mode)", "",
        f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, TensorFlow "
        f"{machine.get('tensorflow')}, Keras {machine.get('keras')}, Python {machine.get('python')}; "
        f"other processes took {_share(machine.get('other_processes_cpu_share'))} of the CPU during the run.",
        f"Each figure: median of {reps} repetitions after a warm-up ({sizes.slow_reps} for metrics and extraction); "
        f"ratio = ours / study; total {seconds:.0f} s.", "",
        table(results), "", "## Notes", "",
    ]
    for r in results:
        lines.append(f"- **{r.benchmark}**: {r.skipped or r.notes}")
    lines += ["", "## Sizes", "", "```", json.dumps(dataclasses.asdict(sizes), indent=2), "```", ""]
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a seconds-long smoke run")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per figure (default 5, tiny 1)")
    parser.add_argument("--out", default="bench_out", help="folder for results.json / results.md")
    parser.add_argument("--only", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--keep", action="store_true", help="keep the generated data (<out>/work-*)")
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else FULL
    reps = args.reps if args.reps is not None else (1 if args.tiny else 5)
    if reps < 1:
        parser.error("--reps must be at least 1")
    if sizes.slow_reps > reps:
        sizes = dataclasses.replace(sizes, slow_reps=reps)
    only = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = sorted(set(only) - set(ROWS))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {unknown}; choose from {','.join(ROWS)}")

    start = time.perf_counter()
    load = CPUShare()
    machine = machine_info()
    print(f"keras-captioning benchmarks ({sizes.name} mode, {reps} reps): {machine['cpu']}, "
          f"{machine['cores']} cores, TF {machine.get('tensorflow')}, Keras {machine.get('keras')}")
    print("sizes: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(sizes).items() if k != "name"))
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="work-", dir=args.out)
    ctx = Context(sizes=sizes, reps=reps, work=work)
    results: list[Result] = []
    try:
        prepare(ctx)
        for key in ROWS:
            if key not in only:
                continue
            log(f"{key} ...")
            t0 = time.perf_counter()
            try:
                rows = BENCHMARKS[key](ctx)
            except Exception as err:  # one broken row must not hide the others
                traceback.print_exc()
                label, unit, target, higher = HEADLINES[key]
                rows = [Result(key, label, unit, target=target, higher_is_better=higher,
                               skipped=f"failed: {type(err).__name__}: {err}")]
            log(f"{key} done in {time.perf_counter() - t0:.1f}s")
            results.extend(rows)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    other = load.other_share()
    machine["other_processes_cpu_share"] = None if other is None else round(other, 3)
    machine["load_average"] = [round(v, 2) for v in os.getloadavg()]
    print()
    print(table(results))
    print()
    for r in results:
        print(f"- {r.benchmark}: {r.skipped or r.notes}")
    write_reports(args.out, results, sizes, machine, reps, seconds)
    if sizes.name == "tiny":
        print("\n(tiny sizes check that everything runs; their ratios say nothing about speed)")
    if other is not None and other > 0.1:
        print(f"\nWARNING: other processes used {other:.0%} of the machine's CPU during the run; "
              "the figures are unreliable, rerun on a quiet machine")
    print(f"\ntotal {seconds:.0f} s; wrote {os.path.join(args.out, 'results.json')} and results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
