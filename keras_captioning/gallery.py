"""A captioned folder as a page: ``write_gallery(results, out_dir)``.

Writes into ``out_dir``::

    index.html          every image with its caption and score, attention grids, bad files
    gallery.md          the same as Markdown
    images/NNNN-<name>.jpg       the image, at most THUMB_SIDE pixels per side
    attention/NNNN-<name>.png    attention model: one heat map per generated word

``results`` are ``Captioner.caption(..., on_error="report")`` dicts, in input order; those
with an ``error`` are listed under "Not captioned" with the reason. ``list_images`` turns
the command line's files and folders into the list to caption.
"""

from __future__ import annotations

import html
import logging
import os
import re

from keras_captioning.errors import CaptioningError
from keras_captioning.utils import Progress, atomic_output, make_dirs

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
THUMB_SIDE = 320  # pixels: the page shows images at most this large
PROGRESS_SECONDS = 5.0

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
.card { background: white; border: 1px solid #ddd; border-radius: 6px; padding: 0.6em; width: 340px; }
.card img.photo { width: 240px; height: auto; display: block; margin: auto; }
.card img.attention { width: 100%; display: block; margin-top: 0.4em; }
.caption { font-size: 1.1em; margin: 0.4em 0; }
.meta { color: #666; font-size: 0.85em; word-break: break-all; }
.bad { color: #a00; }
"""


def list_images(inputs) -> list:
    """Files and folders -> paths to caption, in order; a folder gives its image files, sorted.

    A folder is read one level deep and only files with an image extension
    (``IMAGE_EXTENSIONS``) are taken; a file named on the command line is always taken (a
    bad one is reported when it is captioned).
    """
    paths = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = sorted(os.path.join(item, name) for name in os.listdir(item)
                           if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."))
            if not found:
                log.warning("%s: no image files (%s)", item, ", ".join(IMAGE_EXTENSIONS))
            paths.extend(found)
        else:
            paths.append(item)
    if not paths:
        raise CaptioningError(f"no images to caption in {', '.join(map(str, inputs))}")
    return paths


def write_gallery(results: list, out_dir: str, title: str = "Captions", settings: str = "") -> dict:
    """Writes the page (see the module docstring); returns ``{"html", "markdown", "captioned", "failed"}``.

    Args:
        results: ``Captioner.caption`` dicts (``source``, ``caption``, ``score``, ``words``,
            ``attention``, ``image``, ``error``).
        out_dir: the folder (created; files of an earlier gallery with the same names are replaced).
        title: page heading.
        settings: one line under the heading (model, decoding settings...).
    """
    from PIL import Image

    make_dirs(os.path.join(out_dir, "images"))
    entries, failed = [], []
    progress = Progress("gallery", len(results), unit="images", emit=log.info, interval=PROGRESS_SECONDS)
    for index, res in enumerate(results):
        progress.update(index)
        name = res.get("source") or f"image-{index}"
        if res.get("error"):
            reason = res["error"]
            if reason.startswith(f"{name}: "):  # Captioner's message names the file; the page does already
                reason = reason[len(name) + 2:]
            failed.append({"source": name, "reason": reason})
            continue
        stem = f"{index:04d}-{_slug(os.path.basename(name))}"
        thumb = Image.fromarray(res["image"])
        thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
        image_file = f"images/{stem}.jpg"
        with atomic_output(os.path.join(out_dir, image_file), suffix=".jpg") as tmp:
            thumb.save(tmp, quality=90)
        attention_file = None
        if res.get("attention") is not None:
            from keras_captioning.viz import plot_attention

            make_dirs(os.path.join(out_dir, "attention"))
            attention_file = f"attention/{stem}.png"
            plot_attention(res["image"], res["words"], res["attention"], os.path.join(out_dir, attention_file),
                           title=res["caption"])
        entries.append({"source": name, "caption": res["caption"], "score": res.get("score"),
                        "words": len(res.get("words") or []), "image": image_file, "attention": attention_file})
    html_path = os.path.join(out_dir, "index.html")
    md_path = os.path.join(out_dir, "gallery.md")
    for path, text in ((html_path, _html(entries, failed, title, settings)),
                       (md_path, _markdown(entries, failed, title, settings))):
        with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    return {"html": html_path, "markdown": md_path, "captioned": len(entries), "failed": len(failed)}


def _score(entry) -> str:
    if entry["score"] is None:
        return "–"
    per_word = entry["score"] / max(entry["words"] + 1, 1)  # + 1: the END token is scored too
    return f"{entry['score']:.2f} (log-prob; {per_word:.2f} per token)"


def _html(entries, failed, title, settings) -> str:
    esc = html.escape
    cards = []
    for e in entries:
        attention = (f'<a href="{esc(e["attention"])}"><img class="attention" src="{esc(e["attention"])}" '
                     f'alt="attention per word"></a>' if e["attention"] else "")
        cards.append(f'<div class="card"><img class="photo" src="{esc(e["image"])}" alt="{esc(e["source"])}">'
                     f'<div class="caption">{esc(e["caption"]) or "<i>(empty caption)</i>"}</div>'
                     f'<div class="meta">score {esc(_score(e))}<br>{esc(e["source"])}</div>{attention}</div>')
    bad = "".join(f"<li><code>{esc(f['source'])}</code>: {esc(f['reason'])}</li>" for f in failed)
    bad_section = f'<h2 class="bad">Not captioned ({len(failed)})</h2><ul>{bad}</ul>' if failed else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>"
            f"<p>{esc(settings)}</p><p>{len(entries)} captioned, {len(failed)} not captioned.</p>"
            f'<div class="grid">{"".join(cards)}</div>{bad_section}</body></html>\n')


def _markdown(entries, failed, title, settings) -> str:
    def cell(text):
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [f"# {title}", "", settings, "", f"{len(entries)} captioned, {len(failed)} not captioned.", "",
             "| image | caption | score | attention |", "|---|---|---|---|"]
    for e in entries:
        attention = f"[per word]({e['attention']})" if e["attention"] else ""
        lines.append(f"| ![{cell(os.path.basename(e['source']))}]({e['image']}) | {cell(e['caption'])} | "
                     f"{cell(_score(e))} | {attention} |")
    if failed:
        lines += ["", f"## Not captioned ({len(failed)})", ""]
        lines += [f"- `{f['source']}`: {cell(f['reason'])}" for f in failed]
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(name)[0])[:60] or "image"
