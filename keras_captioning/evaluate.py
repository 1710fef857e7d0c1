"""Decode a split, score it, write predictions, scores and a report.

``evaluate_run(run_dir)`` writes into ``<run_dir>/eval-<split>/`` (other checkpoints and
decoding settings: ``eval-<split>-<checkpoint>-<greedy | beamB-lpA>/``, see ``report_dir_name``):

    predictions.json    COCO results format: [{"image_id": ..., "caption": ...}]
    scores.json         corpus scores (BLEU-1..4, METEOR, GLEU, WER, CIDEr-D, ROUGE-L, ...)
    per_image.json      per-image scores and captions (what the panels are chosen from)
    report.md           the study-layout table, panels, loss curves, attention maps
    panel-good.png, panel-fair.png, panel-bad.png, loss.png, attention-*.png

Good / Fair / Bad are the images at the top, middle and bottom of the per-image CIDEr-D
ranking (ties broken by BLEU-4), so the panels show the spread rather than hand-picked
examples as the study did.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import logging
import os
import shutil

import numpy as np

from keras_captioning.errors import CaptioningError
from keras_captioning.run_directory import RunDirectory
from keras_captioning.split_decoding import (  # noqa: F401  (load_model: evaluate's public name)
    check_ensemble,
    decode_split,
    decode_split_ensemble,
    load_model,
    scored_model,
)
from keras_captioning.utils import atomic_output, make_dirs, write_json_atomic

log = logging.getLogger(__name__)

# The study's table columns first, then what captioning papers report.
TABLE_METRICS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "GLEU-1-4", "GLEU-1-2", "METEOR",
                 "METEOR-1.5", "CIDEr-D", "ROUGE-L", "WER"]


def _id_for_json(image_id: str):
    """COCO results use integer ids where the dataset has them."""
    return int(image_id) if str(image_id).isdigit() else image_id


def default_metrics() -> tuple:
    """Every metric; the official METEOR 1.5 column only where Java and pycocoevalcap are."""
    import importlib.util

    from keras_captioning.metrics import ALL_METRICS, DEFAULT_METRICS

    official = shutil.which("java") and importlib.util.find_spec("pycocoevalcap") is not None
    return ALL_METRICS if official else DEFAULT_METRICS


def format_table(rows: list, columns: list) -> str:
    """A markdown table from a list of dicts (numbers shown x100 for scores, WER and lengths as is)."""
    from keras_captioning.metrics import WORD_COUNT_COLUMNS

    header = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [header, sep]
    for row in rows:
        cells = []
        for col in columns:
            value = row.get(col, "")
            if isinstance(value, float):
                value = "n/a" if np.isnan(value) else (f"{value:.3f}" if col == "WER" else f"{value:.1f}"
                                                       if col in WORD_COUNT_COLUMNS else f"{100 * value:.1f}")
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_run(cfg, manifest: dict) -> dict:
    counts = manifest.get("counts", {})
    images = sum(c.get("images", 0) for c in counts.values())
    from keras_captioning.models.registry import model_type

    return {"run": cfg.name, "model": model_type(cfg.model.type).label,
            "backbone": cfg.features.backbone, "vocab": manifest.get("vocab_size", cfg.data.vocab_size),
            "images": images, "batch": cfg.train.batch_size, "epochs": cfg.train.epochs}


RUN_COLUMNS = ["model", "backbone", "vocab", "images", "batch", "epochs"]


def _read_image(path: str | None, size: int = 224):
    """A panel's picture: the file as extraction decodes it (``features/images.py``), shrunk to
    at most ``size`` per side for display; a grey square when the file is not available."""
    from PIL import Image

    from keras_captioning.features.images import read_image

    if path and os.path.exists(path):
        try:
            image = Image.fromarray(read_image(path, size))
            image.thumbnail((size, size))
            return np.asarray(image)
        except CaptioningError:
            pass
    return np.full((size, size, 3), 200, dtype=np.uint8)


def _run_records(cfg) -> list | None:
    """The dataset the run's features came from, read once per evaluation (panel images and the
    "novel" column); None, with one warning, when it cannot be read."""
    try:
        from keras_captioning.features.build import load_records

        return load_records(cfg)
    except (CaptioningError, OSError) as exc:
        log.warning("the run's dataset is not available: no example images, 'novel' is n/a (%s)", exc)
        return None


def _skipped_section(run_dir: str, shown: int = 20) -> list:
    """Report lines listing the rows and images the features step skipped (the manifest's ``skipped``)."""
    try:
        skipped = RunDirectory(run_dir).manifest().get("skipped") or []
    except (CaptioningError, OSError, ValueError):
        return []
    if not skipped:
        return []
    lines = [f"## Skipped rows and images ({len(skipped)})", "",
             "What the dataset loader and the feature extraction left out (the features manifest lists all).", ""]
    lines += [f"- `{s.get('image_id')}` ({s.get('split') or 'before the split'}): {s.get('reason')}"
              for s in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"- ... and {len(skipped) - shown} more")
    return lines + [""]


def report_dir_name(cfg, split: str, checkpoint: str, beam: int, length_penalty: float) -> str:
    """``eval-<split>`` for the run's own settings, else one folder per (checkpoint, decoding).

    E.g. ``eval-test`` (best checkpoint, the config's beam and length penalty),
    ``eval-test-last-beam5-lp0.6``, ``eval-val-best-greedy``.
    """
    if (checkpoint, beam, length_penalty) == ("best", cfg.eval.beam, cfg.eval.length_penalty):
        return f"eval-{split}"
    decoding = "greedy" if beam <= 1 else f"beam{beam}-lp{length_penalty:g}"
    return f"eval-{split}-{checkpoint}-{decoding}"


def _check_report_dir(out_dir: str, settings: dict, overwrite: bool) -> None:
    """Refuses to replace a report made with other settings unless ``overwrite``."""
    from keras_captioning.config import check_folder

    check_folder(out_dir, "report folder")
    path = os.path.join(out_dir, "scores.json")
    if overwrite or not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as fh:
            old = json.load(fh).get("meta", {})
    except (OSError, ValueError, AttributeError):
        old = {}
    changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
    if changed:
        raise CaptioningError(f"{out_dir}: holds a report made with other settings ({'; '.join(changed)}); "
                              "pass --overwrite to replace it, or choose another folder")


def wordnet_missing() -> str | None:
    """None when NLTK's METEOR can find WordNet, else the one line that says how to install it."""
    from keras_captioning.metrics import WordNetNotFoundError, load_wordnet

    try:
        load_wordnet()
    except WordNetNotFoundError:
        return ("WordNet not found; install it with `python -m nltk.downloader wordnet` "
                "(or `apt-get install wordnet-base wordnet-sense-index`)")
    return None


def evaluate_run(run_dir: str, split: str | None = None, beam: int | None = None,
                 checkpoint: str = "best", out_dir: str | None = None, metrics=None,
                 length_penalty: float | None = None, overwrite: bool = False,
                 ensemble: list | None = None) -> dict:
    """Decodes ``split`` with the run's model, scores it and writes the report folder.

    The folder is :func:`report_dir_name`'s (one per split, checkpoint and decoding setting)
    unless ``out_dir`` is given; a folder holding a report of other settings is refused
    unless ``overwrite``. A metric whose optional resource is missing (METEOR without WordNet)
    is reported as NaN ("n/a") with a warning saying how to install it; the rest complete.

    ``ensemble``: other runs (same vocabulary, each with its own features of the same split)
    decoding with this one as one model, the mean of their next-word probabilities; the
    report is this run's (its config, its folder), named for the ensemble.
    """
    from keras_captioning import metrics as kc_metrics
    from keras_captioning.ranges import check_value

    run = RunDirectory(run_dir)
    run.info()  # refuses a folder that is not a run
    cfg = run.config()
    split = split or cfg.eval.split
    beam = cfg.eval.beam if beam is None else check_value("eval", "beam", beam, "--beam")
    length_penalty = (cfg.eval.length_penalty if length_penalty is None
                      else float(check_value("eval", "length_penalty", length_penalty, "--length-penalty")))
    vocab = run.vocab()
    if beam > len(vocab):
        raise CaptioningError(f"--beam={beam} is wider than the run's vocabulary ({len(vocab)} tokens); "
                              f"valid: [1, {min(len(vocab), 100)}]")
    manifest = run.manifest()
    others = check_ensemble(run_dir, ensemble or [], vocab)
    settings = {"split": split, "checkpoint": checkpoint, "beam": beam, "length_penalty": length_penalty}
    name = report_dir_name(cfg, split, checkpoint, beam, length_penalty)
    if others:
        settings["ensemble"] = [os.path.abspath(o) for o in others]
        digest = hashlib.sha1("\n".join(settings["ensemble"]).encode("utf-8")).hexdigest()[:8]
        name = f"{name}-ensemble{len(others) + 1}-{digest}"
    out_dir = out_dir or os.path.join(run_dir, name)
    _check_report_dir(out_dir, settings, overwrite)
    if others:
        scored = [scored_model(r, split, checkpoint) for r in [run_dir] + others]
        decoded = decode_split_ensemble([m for m, _, _ in scored], [run_dir] + others, vocab,
                                        [d for _, d, _ in scored], [k for _, _, k in scored], split, beam,
                                        cfg.eval.max_length, cfg.eval.batch_size, length_penalty)
    else:
        model, features_dir, feature = scored_model(run_dir, split, checkpoint)
        decoded = decode_split(model, vocab, features_dir, split, feature, beam, cfg.eval.max_length,
                               cfg.eval.batch_size, length_penalty)

    make_dirs(out_dir)
    predictions = [{"image_id": _id_for_json(d["image_id"]), "caption": d["caption"]} for d in decoded]
    write_json_atomic(os.path.join(out_dir, "predictions.json"), predictions, indent=1)

    gts = {d["image_id"]: d["references"] for d in decoded}
    res = {d["image_id"]: [d["caption"]] for d in decoded}
    requested = list(metrics or default_metrics())
    unavailable = {}
    if "METEOR" in requested:
        hint = wordnet_missing()
        if hint:
            log.warning("METEOR unavailable: %s", hint)
            unavailable["METEOR"] = hint
    computed, per_image = kc_metrics.compute_all(
        gts, res, metrics=[m for m in requested if not (isinstance(m, str) and m in unavailable)])
    scores = {**computed, **{name: float("nan") for name in unavailable}}  # NaN shows as "n/a"
    records = _run_records(cfg)
    train_captions = None if records is None else [c for r in records if r.split == "train" for c in r.captions]
    scores.update(kc_metrics.diversity_scores(res, gts, train_captions))  # how varied the captions are
    meta = {**describe_run(cfg, manifest), "split": split, "beam": beam, "length_penalty": length_penalty,
            "num_images": len(decoded), "checkpoint": checkpoint, "unavailable": unavailable}
    if others:
        meta["ensemble"] = [run_dir] + others
    write_json_atomic(os.path.join(out_dir, "per_image.json"), [
        {"image_id": d["image_id"], "caption": d["caption"], "references": d["references"],
         "scores": per_image.get(d["image_id"], {})} for d in decoded], indent=1)

    columns = RUN_COLUMNS + [m for m in TABLE_METRICS + list(kc_metrics.DIVERSITY_COLUMNS) if m in scores]
    table = format_table([{**meta, **scores}], columns)
    report = _write_report(run_dir, out_dir, cfg, decoded, per_image, table, meta, records)
    # Last: scores.json marks the report complete (compare and bundles read only those).
    write_json_atomic(os.path.join(out_dir, "scores.json"), {"meta": meta, "scores": scores})
    return {"scores": scores, "table": table, "report_dir": out_dir, "report": report,
            "decoded": decoded, "per_image": per_image, "meta": meta}


def choose_panels(decoded: list, per_image: dict, k: int) -> dict:
    """Top, middle and bottom ``k`` images by per-image CIDEr-D (then BLEU-4)."""
    def key(d):
        s = per_image.get(d["image_id"], {})
        return (s.get("CIDEr-D", 0.0), s.get("BLEU-4", 0.0), d["image_id"])

    ranked = sorted(decoded, key=key, reverse=True)
    mid = max(0, len(ranked) // 2 - k // 2)
    return {"good": ranked[:k], "fair": ranked[mid: mid + k], "bad": ranked[::-1][:k]}


def _write_report(run_dir, out_dir, cfg, decoded, per_image, table, meta, records=None) -> str:
    from keras_captioning import viz
    from keras_captioning.metrics import wer_matrix

    paths = {r.image_id: r.image_path for r in records or []}
    sections = [f"# Evaluation of `{run_dir}` on the {meta['split']} split",
                f"{meta['num_images']} images, beam {meta['beam']}, checkpoint `{meta['checkpoint']}`. "
                "Scores are corpus-level against all references (x100; WER as a fraction); distinct and "
                "vocab used are counts, length and ref length words per caption.",
                "", table, ""]
    sections += [f"{name} is n/a: {hint}." for name, hint in meta.get("unavailable", {}).items()]
    sections += _skipped_section(run_dir)
    panels = choose_panels(decoded, per_image, cfg.eval.num_panels)
    for name, items in panels.items():
        examples = []
        for d in items:
            s = per_image.get(d["image_id"], {})
            examples.append({
                "image_id": d["image_id"], "image": _read_image(paths.get(d["image_id"])),
                "references": d["references"], "prediction": d["caption"] or "(empty)",
                "scores": {k: s[k] for k in ("BLEU-4", "CIDEr-D", "METEOR", "WER") if k in s},
                "wer_matrix": wer_matrix(d["references"][0], d["caption"]) if d["references"] else None,
            })
        png = viz.plot_panel(examples, os.path.join(out_dir, f"panel-{name}.png"),
                             f"{name.capitalize()} examples ({cfg.model.type})")
        sections += [f"## {name.capitalize()} examples", "", f"![{name}]({os.path.basename(png)})", ""]
    if panels["good"] and panels["good"][0]["attention"] is not None:
        sections += ["## Attention maps", ""]
        for name in ("good", "bad"):
            d = panels[name][0]
            words = d["caption"].split()
            if not words:
                continue
            png = viz.plot_attention(_read_image(paths.get(d["image_id"]), 192), words, d["attention"],
                                     os.path.join(out_dir, f"attention-{name}.png"),
                                     title=d["caption"])
            sections += [f"![attention {name}]({os.path.basename(png)})", ""]
    loss_png = RunDirectory(run_dir).loss_png
    if os.path.exists(loss_png):
        shutil.copyfile(loss_png, os.path.join(out_dir, "loss.png"))
        sections += ["## Loss curves", "", "![loss](loss.png)", ""]
    report = os.path.join(out_dir, "report.md")
    with atomic_output(report) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(sections))
    return report


def compare_runs(run_dirs: list, out_dir: str = "runs/compare"):
    """Collects every ``eval-*/scores.json`` of the given runs into one table (md + csv)."""
    rows, seen = [], set()
    for run_dir in run_dirs:
        # a run directory, or a folder of runs (e.g. runs/demo with vanilla/ and attention/)
        for path in sorted(glob.glob(os.path.join(run_dir, "**", "eval-*", "scores.json"), recursive=True)):
            if os.path.realpath(path) in seen:
                continue
            seen.add(os.path.realpath(path))
            with open(path, encoding="utf-8") as fh:
                payload = json.load(fh)
            rows.append({**payload["meta"], **payload["scores"]})
    if not rows:
        raise CaptioningError("compare: no evaluated runs found (run `make evaluate` first); looked in "
                              + ", ".join(run_dirs))
    from keras_captioning.metrics import DIVERSITY_COLUMNS

    metrics = [m for m in TABLE_METRICS + list(DIVERSITY_COLUMNS) if any(m in r for r in rows)]
    columns = ["run"] + RUN_COLUMNS + ["split", "checkpoint", "beam"] + metrics
    table = format_table(rows, columns)
    make_dirs(out_dir)
    md_path = os.path.join(out_dir, "comparison.md")
    with atomic_output(md_path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(table + "\n")
    csv_path = os.path.join(out_dir, "comparison.csv")
    with atomic_output(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return table, md_path, csv_path
