"""Side-by-side benchmarks: keras-captioning vs the study's pipeline, in one process.

Usage::

    python -m benchmarks.run [--tiny] [--reps 5] [--out bench_out] [--only input,train,...]

(``make bench``; ``make bench ARGS=--tiny`` for a seconds-long smoke run). Every row runs
our code and ``benchmarks.study_pipeline`` (the study's approach, rebuilt) on the same data,
sizes and machine; each figure is the median of ``--reps`` timed repetitions after one
untimed warm-up, and ratios are ours / study's from the same run. Rows:

    input       examples/s reading features + captions (features cached in memory after one read
                of the TFRecord shards, image-major and caption-major; and read from the shards
                each epoch) vs .npy + numpy_function
    train       real target tokens/s of optimizer steps: captions padded to T=20 (continuity), and
                at real caption lengths (Flickr8k's histogram, benchmarks/lengths.py): ours
                image-major + length buckets vs the study padding to the longest caption
    decode      captions/s: our batched greedy / sampling / beam-3 vs one image at a time
    storage     feature bytes on disk per image (one shard vs the study's grid + pooled .npy)
    metrics     wall seconds to score a synthetic corpus (ours vs pycocoevalcap)
    extraction  images/s from JPEG files to cached features, same CNN (weights=None); 6b the same with
                EfficientNet-Lite0 on 224 px JPEGs, which must also reach 57 images/s

Prints one table and writes ``<out>/results.json`` and ``<out>/results.md``. The data
(synthetic images, random features) is generated in a fresh ``<out>/work-*`` folder, removed
at the end unless ``--keep``. See benchmarks/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

# Before TensorFlow is imported anywhere (study_pipeline and the package import it lazily).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.bench_decode import bench_decode  # noqa: E402
from benchmarks.bench_extraction import bench_extraction, bench_extraction_lite  # noqa: E402
from benchmarks.bench_input import bench_input  # noqa: E402
from benchmarks.bench_metrics import bench_metrics  # noqa: E402
from benchmarks.bench_storage import bench_storage  # noqa: E402
from benchmarks.bench_train import bench_train, bench_train_lengths  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    FULL,
    TINY,
    Context,
    CPUShare,
    Result,
    log,
    machine_info,
    prepare,
    table,
    write_reports,
)
from benchmarks.lengths import load_histogram  # noqa: E402

ROWS = ("input", "train", "decode", "storage", "metrics", "extraction")

BENCHMARKS: dict[str, Callable[[Context], list[Result]]] = {
    "input": bench_input, "train": lambda ctx: bench_train(ctx) + bench_train_lengths(ctx), "decode": bench_decode,
    "storage": bench_storage, "metrics": bench_metrics,
    "extraction": lambda ctx: bench_extraction(ctx) + bench_extraction_lite(ctx),
}
# key -> (label, unit, target, higher is better): the headline row of each benchmark.
HEADLINES = {
    "input": ("1. input pipeline", "examples/s", 10.0, True),
    "train": ("2a. training step, T=20", "tokens/s", 2.0, True),
    "decode": ("3. decoding, greedy", "captions/s", 20.0, True),
    "storage": ("4. storage", "bytes/image", 0.5, False),
    "metrics": ("5. corpus metrics", "s", 1.0, False),
    "extraction": ("6. feature extraction", "images/s", 1.0, True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a seconds-long smoke run")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per figure (default 5, tiny 1)")
    parser.add_argument("--out", default="bench_out", help="folder for results.json / results.md")
    parser.add_argument("--only", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--keep", action="store_true", help="keep the generated data (<out>/work-*)")
    parser.add_argument("--lengths", default=None, help="words-per-caption table (JSON, python -m "
                        "benchmarks.lengths) for the real-lengths training row; default Flickr8k's")
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
    ctx = Context(sizes=sizes, reps=reps, work=work, lengths=load_histogram(args.lengths) if args.lengths else None)
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
