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

log = logging.getLogger(__name__)

QUICK_OVERRIDES = [
    "data.root=data/demo-quick", "data.synthetic_images=80", "data.synthetic_image_size=64",
    "features.out_dir=features/demo-quick", "features.shard_size=40",
    "model.embedding_dim=16", "model.units=32", "model.attention_units=16", "model.merge_units=32",
    "train.epochs=1", "train.batch_size=32", "eval.beam=2", "eval.max_length=12",
    "model.transformer_dim=16", "model.transformer_heads=2", "model.transformer_ff_dim=32",
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


def run_demo(quick: bool = False, out_dir: str = "runs/demo") -> str:
    """Runs the demo and returns the path of its report."""
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
    os.makedirs(out_dir, exist_ok=True)
    log.info("demo: 1/4 data and features (%s)", cfgs["attention"].features_dir)
    build_features(cfgs["attention"])
    _step("features", t0)

    results, timings = {}, {}
    for name, cfg in cfgs.items():
        log.info("demo: 2/4 training the %s model", name)
        start = time.time()
        train(cfg, overwrite=True)
        timings[name] = time.time() - start
        _step(f"training {name}", t0)
    for name, cfg in cfgs.items():
        log.info("demo: 3/4 evaluating the %s model (beam %d)", name, cfg.eval.beam)
        results[name] = evaluate_run(cfg.run_dir)
        _step(f"evaluating {name}", t0)

    log.info("demo: 4/4 attention localisation and the report")
    from keras_captioning.data.vocab import Vocabulary

    vocab = Vocabulary.load(os.path.join(cfgs["attention"].run_dir, "vocab.json"))
    objects, sizes = _synthetic_meta(cfgs["attention"].data.root)
    loc = localisation_score(results["attention"]["decoded"], vocab, objects, sizes)
    report = _write_demo_report(out_dir, cfgs, results, loc, timings, time.time() - t0, quick)
    _step("report", t0)
    return report


def _write_demo_report(out_dir, cfgs, results, loc, timings, total, quick) -> str:
    from keras_captioning.evaluate import RUN_COLUMNS, TABLE_METRICS, format_table

    rows = [{**results[n]["meta"], **results[n]["scores"], "train s": f"{timings[n]:.0f}"}
            for n in cfgs]
    metrics = [m for m in TABLE_METRICS if m in rows[0]]
    table = format_table(rows, RUN_COLUMNS + metrics + ["train s"])
    a, v = results["attention"]["scores"], results["vanilla"]["scores"]
    verdict = []
    for m in ("BLEU-4", "CIDEr-D"):
        better = a.get(m, float("nan")) > v.get(m, float("nan"))
        verdict.append(f"- {m}: attention {100 * a.get(m, float('nan')):.1f} vs vanilla "
                       f"{100 * v.get(m, float('nan')):.1f} -> "
                       f"{'attention higher' if better else 'attention NOT higher'}")
    lines = [
        "# keras-captioning demo: vanilla (merge) vs attention on the synthetic shapes dataset",
        "",
        ("**Quick mode** (tiny data, one epoch: numbers are meaningless, the pipeline is what is "
         "being shown).\n" if quick else ""),
        f"Data: `{cfgs['attention'].data.root}` ({cfgs['attention'].data.synthetic_images} images, "
        f"split {cfgs['attention'].data.splits}), features `{cfgs['attention'].features.backbone}` "
        f"({cfgs['attention'].features_dir}). Test split decoded with beam {cfgs['attention'].eval.beam}. "
        "Scores are corpus-level against all five references (x100; WER as a fraction).",
        "",
        table,
        "",
        *verdict,
        "",
        "## Attention localisation",
        "",
        f"For each generated colour or shape word, is the attention peak inside the box of an object "
        f"that word describes? **{100 * loc['score']:.1f}%** of {loc['words']} object words "
        f"(chance: {100 * loc['chance']:.1f}%, the share of grid cells inside such boxes).",
        "",
        "## Loss curves",
        "",
    ]
    for name, cfg in cfgs.items():
        src = os.path.join(cfg.run_dir, "loss.png")  # drawn by the trainer
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(out_dir, f"loss-{name}.png"))
            lines += [f"{name} model:", "", f"![loss {name}](loss-{name}.png)", ""]
    lines += ["## Attention maps (attention model)", ""]
    att_dir = results["attention"]["report_dir"]
    for name in ("good", "bad"):
        src = os.path.join(att_dir, f"attention-{name}.png")
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(out_dir, f"attention-{name}.png"))
            lines += [f"![attention {name}](attention-{name}.png)", ""]
    lines += ["## Example panels", ""]
    for model_name in ("attention", "vanilla"):
        for panel in ("good", "fair", "bad"):
            src = os.path.join(results[model_name]["report_dir"], f"panel-{panel}.png")
            if os.path.exists(src):
                dst = f"panel-{model_name}-{panel}.png"
                shutil.copyfile(src, os.path.join(out_dir, dst))
                lines += [f"### {model_name}: {panel}", "", f"![{model_name} {panel}]({dst})", ""]
    lines += [f"Total demo time: {total:.0f} s.", ""]
    report = os.path.join(out_dir, "report.md")
    with open(report, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump({"scores": {n: results[n]["scores"] for n in results}, "localisation": loc,
                   "train_seconds": timings, "total_seconds": total, "quick": quick}, fh, indent=2)
    return report
