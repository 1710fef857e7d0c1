"""3. Decoding: captions/s, batched greedy / sampling / beam vs one image at a time."""

from __future__ import annotations

from benchmarks.harness import Context, Result, build_models, compare, median, rates, repeat


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
