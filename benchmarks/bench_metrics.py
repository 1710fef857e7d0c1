"""5. Corpus metrics: seconds to score a synthetic corpus (ours vs pycocoevalcap)."""

from __future__ import annotations

import contextlib
import io
import shutil

from benchmarks.harness import Context, Result, compare, median


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
