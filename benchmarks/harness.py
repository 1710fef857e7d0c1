"""The benchmark harness: problem sizes, result rows, timing, the shared synthetic data and
the report. Each row lives in its own ``bench_*.py``; ``run.py`` is the command line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field


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
    length_images: int  # 2b. training at real lengths: one epoch of images x 5 captions...
    length_batches: int  # ...of which this many batches (one per equal part of the epoch) are timed
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
    lite_images: int = 512  # 6b. EfficientNet-Lite0 extraction: photos of...
    lite_image_size: int = 224  # ...Flickr8k's size (the development copy's JPEGs are 224 px)
    slow_reps: int = 3  # metrics and extraction take long per repetition: at most this many


FULL = Sizes(
    name="full", regions=64, feature_dim=2048, vocab_size=5000, embedding_dim=256, units=512,
    max_length=20, input_images=400, input_batch=64, train_batch=64, train_steps=3, length_images=6000,
    length_batches=12,
    decode_images=256, decode_study_images=12, beam_width=3,
    metric_images=5000, metric_references=5, meteor=True,
    extract_images=64, backbone="inception_v3", image_size=299,
)
TINY = Sizes(
    name="tiny", regions=4, feature_dim=32, vocab_size=60, embedding_dim=8, units=16,
    max_length=8, input_images=24, input_batch=16, train_batch=8, train_steps=2, length_images=40,
    length_batches=3,
    decode_images=16, decode_study_images=2, beam_width=3,
    metric_images=40, metric_references=5, meteor=False,
    extract_images=4, backbone="mobilenet_v2", image_size=32, synthetic_image_size=48,
    lite_images=4, lite_image_size=48,
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
    floor: float | None = None  # an absolute figure ours must also reach (higher is better), in ``unit``

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.study:
            return None
        return self.ours / self.study

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        met = self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target
        return met and (self.floor is None or self.ours >= self.floor)

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        floor = "" if self.floor is None else f" and >= {self.floor:g}"
        return f"{'>=' if self.higher_is_better else '<='} {self.target:g}x{floor}"

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(ratio=self.ratio, met=self.met, target_text=self.target_text())
        return out


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


@dataclass
class Context:
    sizes: Sizes
    reps: int
    work: str  # scratch folder
    records: list = field(default_factory=list)  # CaptionRecord of the synthetic dataset
    vocab: object = None
    cache: dict = field(default_factory=dict)  # files shared by the input and storage rows
    lengths: dict | None = None  # words-per-caption histogram (--lengths); None: Flickr8k's


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
