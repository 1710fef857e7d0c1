"""``python -m keras_captioning <subcommand>``: features, train, evaluate, caption, export, compare, demo.

User errors (:class:`CaptioningError`) print one ``error: ...`` line and exit with status 2;
Ctrl-C exits with 130 after the trainer has saved its checkpoint. ``caption`` captions every
readable image and prints one ``error: FILE: reason`` line per unreadable one (exit status 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from keras_captioning.errors import CaptioningError

log = logging.getLogger("keras_captioning")


def _add_config_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--config", default=default, help="experiment YAML (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=3 (repeatable)")


def _load(args):
    from keras_captioning.config import load_config

    return load_config(args.config, args.overrides)


def cmd_features(args) -> int:
    from keras_captioning.features.build import build_features

    cfg = _load(args)
    manifest = build_features(cfg, overwrite=args.overwrite, num_workers=args.num_workers,
                              worker_index=args.worker_index)
    out = cfg.features_dir
    print(f"features: shards and manifest in {out} (manifest: {os.path.join(out, 'manifest.json')})")
    counts = manifest.get("counts", {})
    print("features: " + ", ".join(f"{s} {c.get('images', 0)} images" for s, c in counts.items())
          + f"; skipped {len(manifest.get('skipped', []))}")
    return 0


def cmd_train(args) -> int:
    from keras_captioning.training.trainer import train

    cfg = _load(args)
    run_dir = train(cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"train: run directory {run_dir} (checkpoints, log.csv, loss.png)")
    return 0


def cmd_evaluate(args) -> int:
    from keras_captioning.evaluate import evaluate_run

    result = evaluate_run(args.run, split=args.split, beam=args.beam, checkpoint=args.checkpoint,
                          length_penalty=args.length_penalty, overwrite=args.overwrite, ensemble=args.ensemble)
    print(result["table"])
    print(f"evaluate: report in {result['report_dir']}")
    return 0


def _captioner(args):
    from keras_captioning.captioner import Captioner
    from keras_captioning.ranges import check_value

    if bool(args.run) == bool(args.bundle):
        raise CaptioningError("give one of --run RUN or --bundle DIR")
    # The same ranges as eval.beam / eval.max_length, checked before any model is loaded.
    if args.beam is not None:
        check_value("eval", "beam", args.beam, "--beam")
    if args.max_length is not None:
        check_value("eval", "max_length", args.max_length, "--max-length")
    return Captioner.load(args.bundle) if args.bundle else Captioner.from_run(args.run, checkpoint=args.checkpoint)


def cmd_caption(args) -> int:
    from keras_captioning.gallery import list_images, write_gallery

    captioner = _captioner(args)
    results = captioner.caption(list_images(args.images), beam=args.beam, max_length=args.max_length,
                                on_error="report")
    good = [res for res in results if not res["error"]]
    for res in results:  # every readable image is captioned; each bad one is one stderr line
        if res["error"]:
            print(f"error: {res['error']}", file=sys.stderr)
        else:
            print(f"{res['source']}\t{res['caption']}")
    if args.attention_map and good:
        if not captioner.has_attention:
            raise CaptioningError(f"{args.run or args.bundle}: a merge model has no attention to draw")
        for p in captioner.draw_attention(good, args.attention_map):
            print(f"caption: attention map written to {p}")
    if args.out:
        beam = captioner.beam if args.beam is None else args.beam
        page = write_gallery(results, args.out, title=f"Captions: {args.run or args.bundle}",
                             settings=f"{'attention' if captioner.has_attention else 'merge'} model, "
                                      f"backbone {captioner.backbone_name}, beam {beam}")
        print(f"caption: gallery {page['html']} and {page['markdown']} ({page['captioned']} captioned, "
              f"{page['failed']} not)")
    return 2 if len(good) < len(results) else 0


def cmd_export(args) -> int:
    captioner = _captioner(args)
    if args.format == "saved_model":
        from keras_captioning.export.saved_model import export_saved_model

        info = export_saved_model(captioner, args.out, beam=args.beam, max_length=args.max_length)
        print(f"export: SavedModel in {args.out} ({info['decoding']['method']}, max_length "
              f"{info['decoding']['max_length']}); signature serving_default: images tf.string (B,) -> "
              + ", ".join(info["outputs"]))
    elif args.format == "litert":
        from keras_captioning.export.litert import export_litert

        if args.beam not in (None, 1):
            raise CaptioningError("--format litert exports the greedy path only; drop --beam or use --beam 1")
        info = export_litert(captioner, args.out, max_length=args.max_length)
        print(f"export: LiteRT file {args.out} (greedy, builtins only) and {args.out}.json (vocabulary)")
    else:
        captioner.save(args.out)
        print(f"export: captioner bundle in {args.out}; use it with `caption --bundle {args.out} IMAGE...`")
    return 0


def cmd_compare(args) -> int:
    from keras_captioning.config import check_folder
    from keras_captioning.evaluate import compare_runs

    check_folder(args.out, "--out")
    table, md_path, csv_path = compare_runs(args.runs, out_dir=args.out)
    print(table)
    print(f"compare: {md_path} and {csv_path}")
    return 0


def cmd_demo(args) -> int:
    from keras_captioning.config import check_folder
    from keras_captioning.demo import run_demo

    check_folder(args.out, "--out")
    report = run_demo(quick=args.quick, out_dir=args.out, seeds=args.seeds)
    print(f"demo: report written to {report}")
    return 0


def cmd_coco_data(args) -> int:
    from keras_captioning.data.download import download_coco

    result = download_coco(args.dest, base_url=args.base_url, parts=args.parts)
    paths = result.get("paths", {})
    print(f"coco-data: ready in {args.dest}; for the configs: "
          f"data.captions={paths.get('captions_train')} data.images={paths.get('train_images')}")
    return 0


def cmd_convert_weights(args) -> int:
    from keras_captioning.features.convert_weights import convert_weights

    out = convert_weights(args.backbone, args.source, args.out)
    print(f"convert-weights: wrote {out}; use it with --set features.backbone={args.backbone} "
          f"--set features.weights={out}")
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, help="run directory")
    p.add_argument("--bundle", default=None, help="captioner bundle folder (Captioner.save / export --format bundle)")
    p.add_argument("--checkpoint", default="best", choices=["best", "best-val_loss", "last"], help="with --run")
    p.add_argument("--beam", type=int, default=None, help="beam width, 1 = greedy (default: the run's eval.beam)")
    p.add_argument("--max-length", type=int, default=None, help="decoding steps (default: the run's eval.max_length)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keras_captioning", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("features", help="extract CNN features into TFRecord shards")
    _add_config_args(p, "configs/demo.yaml")
    p.add_argument("--overwrite", action="store_true", help="redo finished shards")
    p.add_argument("--num-workers", type=int, default=1, help="processes sharing the work")
    p.add_argument("--worker-index", type=int, default=0, help="this process's share (0-based)")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="train a captioner")
    _add_config_args(p, "configs/demo_attention.yaml")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run and start again")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="decode a split, score it and write a report")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--split", default=None, help="split to decode (default: the config's eval.split)")
    p.add_argument("--beam", type=int, default=None, help="beam width (1 = greedy)")
    p.add_argument("--length-penalty", type=float, default=None,
                   help="beam search length penalty (GNMT alpha; default: the config's eval.length_penalty)")
    p.add_argument("--checkpoint", default="best", choices=["best", "best-val_loss", "last"],
                   help="best (on train.select_on), best-val_loss (lowest teacher-forced val loss), last")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a report folder that holds a report made with other settings")
    p.add_argument("--ensemble", action="append", default=None, metavar="RUN",
                   help="another run decoding with --run as one model (the mean of their next-word "
                        "probabilities; same vocabulary, each its own features); repeatable")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("caption", help="caption image files or folders with a trained run or bundle")
    p.add_argument("images", nargs="+", help="JPEG/PNG/... files or folders of them, any size")
    _add_model_args(p)
    p.add_argument("--attention-map", default=None, metavar="OUT.png",
                   help="draw the attention per word (one file per image when several)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="also write a gallery page: DIR/index.html and DIR/gallery.md")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("export", help="a SavedModel, LiteRT file or portable bundle of a run")
    _add_model_args(p)
    p.add_argument("--out", required=True, help="output folder (.tflite file for litert)")
    p.add_argument("--format", default="saved_model", choices=["saved_model", "litert", "bundle"])
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("compare", help="one comparison table over several runs")
    p.add_argument("runs", nargs="+", help="run directories (evaluated)")
    p.add_argument("--out", default="runs/compare", help="output folder")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("demo", help="the whole study on the embedded synthetic dataset")
    p.add_argument("--quick", action="store_true", help="a tiny, seconds-long version")
    p.add_argument("--out", default="runs/demo", help="report folder")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train each model once per seed; the report gives mean ± sd (default: one seed)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("coco-data", help="download COCO 2014 captions, images and the Karpathy split")
    p.add_argument("--dest", default="data/coco")
    p.add_argument("--base-url", default=None, help="mirror serving the same file names")
    p.add_argument("--parts", nargs="*", default=None,
                   help="subset of: annotations train2014 val2014 karpathy")
    p.set_defaults(func=cmd_coco_data)

    p = sub.add_parser("convert-weights", help="convert a published PyTorch checkpoint into Keras weights")
    p.add_argument("backbone", help="efficientnet_lite0 | efficientnet_lite1 | efficientnet_lite2")
    p.add_argument("--from", dest="source", required=True, help="the .pth checkpoint (data/README.md)")
    p.add_argument("--out", required=True, help="the .weights.h5 file to write")
    p.set_defaults(func=cmd_convert_weights)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.func(args)
    except CaptioningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
