"""Figures: loss curves, attention maps, Good/Fair/Bad example panels.

The only module that imports matplotlib (with the non-interactive Agg backend, so it works
on a machine without a display).
"""

from __future__ import annotations

import csv
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from keras_captioning.utils import atomic_output  # noqa: E402


def _save(fig, out_path: str, dpi: int) -> str:
    """Writes and closes ``fig`` (format from the file's ending) through ``atomic_output``."""
    try:
        with atomic_output(out_path, suffix=os.path.splitext(out_path)[1]) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return out_path


def plot_loss_curves(csv_path: str, out_path: str, title: str | None = None) -> str | None:
    """Draws loss, accuracy and (when logged) decoded val CIDEr-D / BLEU-4 per epoch from log.csv."""
    with open(csv_path, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    epochs = [int(r["epoch"]) + 1 for r in rows]
    panels = [(("loss", "val_loss"), "masked cross-entropy per token", 1.0),
              (("accuracy", "val_accuracy"), "token accuracy", 1.0)]
    decoded = tuple(k for k in ("val_cider_d", "val_bleu_4") if k in rows[0])
    if decoded:  # the scores the checkpoint is selected on, next to the teacher-forced loss
        panels.append((decoded, "greedy-decoded val score (x100)", 100.0))
    # Only panels with a logged curve (an SCST log has no accuracy, and no val_loss).
    panels = [p for p in panels if any(k in rows[0] for k in p[0])]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (keys, ylabel, scale) in zip(axes[0], panels):
        for key, style in zip(keys, ("-o", "--s")):
            if key in rows[0]:
                values = [float(r[key]) * scale if r[key] not in ("", "NA") else float("nan") for r in rows]
                ax.plot(epochs, values, style, label=key, ms=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out_path, 110)


def _upsample(weights: np.ndarray, grid: int, size: tuple) -> np.ndarray:
    """(R,) attention over a grid x grid map -> an (H, W) heat map in image coordinates."""
    heat = np.asarray(weights, dtype=np.float32).reshape(grid, grid)
    h, w = size
    rows = (np.arange(h) * grid // h).clip(0, grid - 1)
    cols = (np.arange(w) * grid // w).clip(0, grid - 1)
    return heat[rows][:, cols]


def plot_attention(image: np.ndarray, words: list, attention: np.ndarray, out_path: str,
                   title: str | None = None, cols: int = 4) -> str:
    """The study's figure: the image with one heat-map overlay per generated word, in a grid.

    Args:
        image: (H, W, 3) uint8.
        words: the generated words (without ``<end>``).
        attention: (len(words), R) weights over the R = g*g regions; each row sums to 1.
    """
    attention = np.asarray(attention)[: len(words)]
    n = max(len(words), 1)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if not words:  # an empty caption: show the image, there is no attention to draw
        axes.ravel()[0].imshow(image)
        axes.ravel()[0].set_title("(empty caption)", fontsize=11)
    for i, word in enumerate(words):
        ax = axes.ravel()[i]
        ax.imshow(image)
        grid = int(round(math.sqrt(attention.shape[-1])))
        ax.imshow(_upsample(attention[i], grid, image.shape[:2]), cmap="jet", alpha=0.45,
                  interpolation="bilinear")
        ax.set_title(word, fontsize=11)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path, 100)


def plot_panel(examples: list, out_path: str, title: str) -> str:
    """One row per example: the image, then references, prediction and its scores as text.

    Each example is a dict with ``image`` (H, W, 3) uint8, ``references`` (list of str),
    ``prediction`` (str), ``scores`` (dict name -> float) and optionally ``wer_matrix``
    (2-D int array) drawn as a small table image.
    """
    n = max(len(examples), 1)
    has_matrix = any(e.get("wer_matrix") is not None for e in examples)
    ncols = 3 if has_matrix else 2
    fig, axes = plt.subplots(n, ncols, figsize=(4.2 * ncols, 3.0 * n), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2.2, 1.3][:ncols]})
    for row, ex in enumerate(examples):
        ax_img, ax_txt = axes[row][0], axes[row][1]
        ax_img.imshow(ex["image"])
        ax_img.axis("off")
        ax_img.set_title(str(ex.get("image_id", "")), fontsize=8)
        refs = "\n".join(f"  {r}" for r in ex["references"][:5])
        scores = "  ".join(f"{k} {v:.3f}" for k, v in ex["scores"].items())
        text = f"prediction:\n  {ex['prediction']}\n\nreferences:\n{refs}\n\n{scores}"
        ax_txt.text(0.0, 1.0, text, va="top", ha="left", fontsize=8, family="monospace", wrap=True)
        ax_txt.axis("off")
        if has_matrix:
            ax_m = axes[row][2]
            mat = ex.get("wer_matrix")
            if mat is not None:
                ax_m.imshow(mat, cmap="Blues")
                ax_m.set_title("WER edit-distance matrix", fontsize=8)
                ax_m.set_xlabel("hypothesis words", fontsize=7)
                ax_m.set_ylabel("reference words", fontsize=7)
                ax_m.tick_params(labelsize=6)
            else:
                ax_m.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out_path, 100)
