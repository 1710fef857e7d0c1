"""``make demo``: the whole study on the embedded synthetic dataset, end to end.

Generate the shapes dataset -> extract features -> train the vanilla (merge) and the attention
model -> decode the test split with beam search -> score both -> measure where attention
looks -> write ``runs/demo/report.md`` with the comparison table, loss curves, attention
maps and example panels.

The attention localisation score: for every generated word that names an object (a colour
or a shape), is the peak of that step's attention inside the bounding box of an object that
word describes? Chance is the fraction of grid cells whose centre lies inside such a box,
averaged the same way, so the score can be read against it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

import numpy as np

from keras_captioning.errors import CaptioningError
from keras_captioning.run_directory import RunDirectory
from keras_captioning.utils import atomic_output, write_json_atomic

log = logging.getLogger(__name__)

QUICK_OVERRIDES = [
    "data.root=data/demo-quick", "data.synthetic_images=80", "data.synthetic_image_size=64",
    "features.out_dir=features/demo-quick", "features.shard_size=40",
    "model.embedding_dim=16", "model.units=32", "model.attention_units=16", "model.merge_units=32",
    "model.transformer_dim=16", "model.transformer_heads=2", "model.transformer_ff_dim=32",
    "train.epochs=1", "train.batch_size=32", "eval.beam=2", "eval.max_length=12",
]


def configs_dir() -> str:
    """The repository's ``configs/`` (next to the package), else ``./configs``."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    for candidate in (here, os.path.join(os.getcwd(), "configs")):
        if os.path.exists(os.path.join(candidate, "demo.yaml")):
            return candidate
    raise CaptioningError("configs/demo.yaml not found: run the demo from the repository checkout")


def localisation_score(decoded: list, vocab, objects: dict, image_sizes: dict) -> dict:
    """Fraction of object words whose attention peak falls inside a matching object's box.

    Args:
        decoded: dicts with ``image_id``, ``tokens`` (generated ids, no <start>/<end>) and
            ``attention`` ((steps, R) weights; row i is the attention used to emit token i).
        objects: image_id -> list of {"bbox": [x, y, w, h], "words": [...]} (synthetic generator).
        image_sizes: image_id -> (width, height) of the image the grid covers.
    Returns: {"score", "chance", "words"} (score and chance in [0, 1]).
    """
    object_words = {w for objs in objects.values() for o in objs for w in o["words"]}
    hits, chance, count = 0, 0.0, 0
    for d in decoded:
        att = d.get("attention")
        objs = objects.get(str(d["image_id"]))
        if att is None or not objs:
            continue
        att = np.asarray(att)
        grid = int(round(np.sqrt(att.shape[-1])))
        width, height = image_sizes[str(d["image_id"])]
        cx = (np.arange(grid) + 0.5) * width / grid  # cell centres, columns
        cy = (np.arange(grid) + 0.5) * height / grid  # cell centres, rows
        for step, token in enumerate(d["tokens"][: len(att)]):
            word = vocab.id_to_word[token]
            if word not in object_words:
                continue
            boxes = [o["bbox"] for o in objs if word in o["words"]]
            if not boxes:
                continue  # a hallucinated word: no object to look at, not counted
            inside = np.zeros((grid, grid), dtype=bool)
            for x, y, w, h in boxes:
                inside |= ((cy[:, None] >= y) & (cy[:, None] <= y + h)
                           & (cx[None, :] >= x) & (cx[None, :] <= x + w))
            peak = int(np.argmax(att[step]))
            hits += bool(inside.reshape(-1)[peak])
            chance += inside.mean()
            count += 1
    return {"score": hits / count if count else float("nan"),
            "chance": chance / count if count else float("nan"), "words": count}


def _synthetic_meta(root: str):
    with open(os.path.join(root, "objects.json"), encoding="utf-8") as fh:
        objects = json.load(fh)
    with open(os.path.join(root, "captions.json"), encoding="utf-8") as fh:
        images = json.load(fh)["images"]
    return objects, {str(im["id"]): (im["width"], im["height"]) for im in images}


def _step(name: str, t0: float) -> None:
    log.info("demo: %s done (%.0f s since start)", name, time.time() - t0)


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; NaN values left out)."""
    values = [float(v) for v in values if v is not None and not np.isnan(float(v))]
    if not values:
        return float("nan"), float("nan")
    mean = float(np.mean(values))
    return mean, float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def spread_cell(values, metric: str) -> str:
    """``"55.3 ± 1.2"`` (scores x100, WER as a fraction) over the seeds' values."""
    mean, sd = mean_sd(values)
    if np.isnan(mean):
        return "n/a"
    if metric == "WER":
        return f"{mean:.3f} ± {sd:.3f}"
    return f"{100 * mean:.1f} ± {100 * sd:.1f}"


def demo_seeds(cfg, seeds=None) -> list[int]:
    """The seeds the demo trains: ``seeds``, else the config's ``train.seeds``, else ``[train.seed]``."""
    return list(seeds or cfg.train.seeds or [cfg.train.seed])


def _seed_config(cfg, seed: int, several: bool):
    from keras_captioning.config import from_dict
    from keras_captioning.training.run_configs import seed_dir

    one = from_dict(cfg.to_dict(), "demo")
    one.train.seed, one.train.seeds = seed, None
    if several:
        one.train.run_dir = seed_dir(cfg.run_dir, seed)
    return one


def run_demo(quick: bool = False, out_dir: str = "runs/demo", seeds=None) -> str:
    """Runs the demo and returns the path of its report.

    ``seeds`` (default: ``train.seeds`` of the demo configs, else one seed) trains both models
    once per seed (``<out_dir>/<model>/seed-<n>`` when several); the report then gives every
    score as mean ± standard deviation over the seeds.
    """
    from keras_captioning.config import load_config
    from keras_captioning.evaluate import evaluate_run
    from keras_captioning.features.build import build_features
    from keras_captioning.training.trainer import train

    t0 = time.time()
    overrides = list(QUICK_OVERRIDES) if quick else []
    root = configs_dir()
    cfgs = {
        "vanilla": load_config(os.path.join(root, "demo_vanilla.yaml"),
                               overrides + [f"train.run_dir={out_dir}/vanilla"]),
        "attention": load_config(os.path.join(root, "demo_attention.yaml"),
                                 overrides + [f"train.run_dir={out_dir}/attention"]),
        "transformer": load_config(os.path.join(root, "demo_transformer.yaml"),
                                   overrides + [f"train.run_dir={out_dir}/transformer"]),
    }
    seeds = demo_seeds(cfgs["attention"], seeds)
    os.makedirs(out_dir, exist_ok=True)
    log.info("demo: 1/4 data and features (%s)", cfgs["attention"].features_dir)
    build_features(cfgs["attention"])
    _step("features", t0)

    runs = {name: [_seed_config(cfg, seed, len(seeds) > 1) for seed in seeds] for name, cfg in cfgs.items()}
    results, timings = {name: [] for name in runs}, {name: [] for name in runs}
    for name, seed_cfgs in runs.items():
        for cfg in seed_cfgs:
            log.info("demo: 2/4 training the %s model (seed %d)", name, cfg.train.seed)
            start = time.time()
            train(cfg, overwrite=True)
            timings[name].append(time.time() - start)
            _step(f"training {name} seed {cfg.train.seed}", t0)
    for name, seed_cfgs in runs.items():
        for cfg in seed_cfgs:
            log.info("demo: 3/4 evaluating the %s model (seed %d, beam %d)", name, cfg.train.seed, cfg.eval.beam)
            results[name].append(evaluate_run(cfg.run_dir))
            _step(f"evaluating {name} seed {cfg.train.seed}", t0)

    log.info("demo: 4/4 attention localisation and the report")
    vocab = RunDirectory(runs["attention"][0].run_dir).vocab()
    objects, sizes = _synthetic_meta(cfgs["attention"].data.root)
    locs = [localisation_score(r["decoded"], vocab, objects, sizes) for r in results["attention"]]
    report = _write_demo_report(out_dir, runs, results, locs, timings, time.time() - t0, quick)
    _step("report", t0)
    return report


def _score_rows(runs, results, timings) -> tuple[list, list]:
    """(table rows, metric columns): one row per model, a score per seed or mean ± sd over seeds."""
    from keras_captioning.evaluate import TABLE_METRICS

    several = len(runs["attention"]) > 1
    metrics = [m for m in TABLE_METRICS if m in results["attention"][0]["scores"]]
    rows = []
    for name in runs:
        row = {**results[name][0]["meta"], "train s": f"{np.mean(timings[name]):.0f}"}
        for m in metrics:
            values = [r["scores"].get(m, float("nan")) for r in results[name]]
            row[m] = spread_cell(values, m) if several else values[0]
        if several:
            row["seeds"] = ", ".join(str(cfg.train.seed) for cfg in runs[name])
        rows.append(row)
    return rows, metrics


def _verdict(results) -> list[str]:
    """Attention against vanilla on BLEU-4 and CIDEr-D, with the seed spread when there is one."""
    lines = []
    for m in ("BLEU-4", "CIDEr-D"):
        a = [r["scores"].get(m, float("nan")) for r in results["attention"]]
        v = [r["scores"].get(m, float("nan")) for r in results["vanilla"]]
        (am, asd), (vm, vsd) = mean_sd(a), mean_sd(v)
        if len(a) == 1:
            lines.append(f"- {m}: attention {100 * am:.1f} vs vanilla {100 * vm:.1f} -> "
                         f"{'attention higher' if am > vm else 'attention NOT higher'}")
            continue
        noise = 2 * float(np.hypot(asd, vsd))  # two sd of the difference of two single runs
        beyond = am - vm > noise
        lines.append(f"- {m} over {len(a)} seeds: attention {100 * am:.1f} ± {100 * asd:.1f} vs vanilla "
                     f"{100 * vm:.1f} ± {100 * vsd:.1f}; difference {100 * (am - vm):.1f} "
                     f"{'>' if beyond else '<='} 2 sd of seed noise ({100 * noise:.1f}) -> "
                     f"{'attention higher beyond seed noise' if beyond else 'NOT beyond seed noise'}")
    return lines


def _write_demo_report(out_dir, runs, results, locs, timings, total, quick) -> str:
    import platform

    from keras_captioning.evaluate import RUN_COLUMNS, format_table

    rows, metrics = _score_rows(runs, results, timings)
    several = len(runs["attention"]) > 1
    table = format_table(rows, RUN_COLUMNS + metrics + ["train s"] + (["seeds"] if several else []))
    cfg = runs["attention"][0]
    loc_mean, loc_sd = mean_sd([loc["score"] for loc in locs])
    chance = mean_sd([loc["chance"] for loc in locs])[0]
    spread = f" ± {100 * loc_sd:.1f}" if several else ""
    lines = [
        "# keras-captioning demo: vanilla (merge) vs attention on the synthetic shapes dataset",
        "",
        ("**Quick mode** (tiny data, one epoch: numbers are meaningless, the pipeline is what is "
         "being shown).\n" if quick else ""),
        f"Data: `{cfg.data.root}` ({cfg.data.synthetic_images} images, "
        f"split {cfg.data.splits}), features `{cfg.features.backbone}` "
        f"({cfg.features_dir}). Test split decoded with beam {cfg.eval.beam}. "
        "Scores are corpus-level against all five references (x100; WER as a fraction)"
        + (f"; mean ± standard deviation over {len(runs['attention'])} training seeds" if several else "")
        + f". Machine: {platform.machine()}, {platform.processor() or platform.platform()}, "
        f"{os.cpu_count()} CPUs.",
        "",
        table,
        "",
        *_verdict(results),
        "",
        "## Attention localisation",
        "",
        f"For each generated colour or shape word, is the attention peak inside the box of an object "
        f"that word describes? **{100 * loc_mean:.1f}%{spread}** of {locs[0]['words']} object words "
        f"(chance: {100 * chance:.1f}%, the share of grid cells inside such boxes).",
        "",
        "## Loss curves",
        "",
    ]
    first = {name: results[name][0] for name in results}  # pictures: the first seed's runs
    for name, seed_cfgs in runs.items():
        src = RunDirectory(seed_cfgs[0].run_dir).loss_png  # drawn by the trainer
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(out_dir, f"loss-{name}.png"))
            lines += [f"{name} model:", "", f"![loss {name}](loss-{name}.png)", ""]
    lines += ["## Attention maps (attention model)", ""]
    att_dir = first["attention"]["report_dir"]
    for name in ("good", "bad"):
        src = os.path.join(att_dir, f"attention-{name}.png")
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(out_dir, f"attention-{name}.png"))
            lines += [f"![attention {name}](attention-{name}.png)", ""]
    lines += ["## Example panels", ""]
    for model_name in ("attention", "vanilla"):
        for panel in ("good", "fair", "bad"):
            src = os.path.join(first[model_name]["report_dir"], f"panel-{panel}.png")
            if os.path.exists(src):
                dst = f"panel-{model_name}-{panel}.png"
                shutil.copyfile(src, os.path.join(out_dir, dst))
                lines += [f"### {model_name}: {panel}", "", f"![{model_name} {panel}]({dst})", ""]
    lines += [f"Total demo time: {total:.0f} s.", ""]
    report = os.path.join(out_dir, "report.md")
    with atomic_output(report) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    summary = {"scores": {n: first[n]["scores"] for n in results}, "localisation": locs[0],
               "train_seconds": {n: t[0] for n, t in timings.items()}, "total_seconds": total, "quick": quick}
    if several:  # each score as {mean, sd, per_seed}
        summary.update(
            seeds=[c.train.seed for c in runs["attention"]],
            scores={n: {m: dict(zip(("mean", "sd"), mean_sd(v := [r["scores"].get(m) for r in results[n]])),
                                per_seed=v) for m in metrics} for n in results},
            localisation={"mean": loc_mean, "sd": loc_sd, "per_seed": locs}, train_seconds=timings)
    write_json_atomic(os.path.join(out_dir, "summary.json"), summary)
    return report
