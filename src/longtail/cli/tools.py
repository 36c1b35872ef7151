"""``longtail config``, ``data stats``, ``export``, ``predict`` and ``features``: tools around a run."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from ..config import EvalConfig, config_to_dict, load_config
from ..data.stats import class_size_stats, dataset_counts, format_stats, plot_class_sizes, split_file_counts
from ..errors import ConfigError, DataError
from ..export import export_methods, export_run, format_predictions, load_artifact, predict_with_prior
from ..export.deploy_prior import PRIOR_KEY, format_prior
from ..fs.figure_file import figure_format
from ..pipeline.features_export import FEATURE_DTYPES, export_features
from ..runs import check_output_path
from .common import HelpFormatter, split_config_and_overrides


def _cmd_config(args: argparse.Namespace) -> None:
    config_path, overrides = split_config_and_overrides(args.items)
    print(yaml.safe_dump(config_to_dict(load_config(config_path, overrides)), sort_keys=False), end="")


def _refuse_what_is_not_a_split_file(spec: str) -> None:
    """Name what ``data stats SPEC`` takes instead of a folder or a data file given as the split file.

    Before, a folder was "cannot read split file (IsADirectoryError)" and a features file "not UTF-8 text".
    """
    path = Path(spec)
    try:
        is_dir = path.is_dir()
    except OSError:  # a name too long to look at: the split-file reader says so in its own line
        return
    if is_dir:
        raise DataError(
            f"{spec}: a directory; expected a split file ('relative/path label' lines) or a YAML config "
            f"(an image folder: data.name=imagefolder data.root={spec})"
        )
    if path.suffix.lower() in (".npz", ".pt"):
        raise DataError(
            f"{spec}: not a split file; for a features file give data.name=features data.path={spec} "
            f"(an .npz of images: data.name=npz)"
        )


def _cmd_data_stats(args: argparse.Namespace) -> None:
    if args.plot:  # before the dataset is read: its format, and a path that may be written
        figure_format(args.plot)
        check_output_path(args.plot, overwrite=args.overwrite, what="--plot")
    spec, overrides = split_config_and_overrides([args.spec, *args.overrides])
    is_list = spec is not None and not spec.endswith((".yaml", ".yml")) and not overrides
    if is_list:
        _refuse_what_is_not_a_split_file(spec)
        if args.split is not None:  # a split file is one split: --split val printed the file's own counts
            raise ConfigError(
                f"--split {args.split}: {spec} is a split file, one split already; --split chooses a split of the "
                f"dataset a config describes (give the {args.split} split file itself, or a config)"
            )
        counts, source = split_file_counts(spec), spec
        many, few = args.many, args.few
    else:
        config = load_config(spec, overrides)
        counts, source, info = dataset_counts(config, args.split or "train")
        many = config.eval.many if args.many is None else args.many
        few = config.eval.few if args.few is None else args.few
    many = EvalConfig.many if many is None else many
    few = EvalConfig.few if few is None else few
    if few < 0:  # eval.few's own bound: "many-shot (> -1)" and "few-shot (< -5)" described nothing
        raise ConfigError(f"--few {few}: expected an integer >= 0, as eval.few")
    if few > many:
        raise ConfigError(f"--few {few}: expected at most --many ({many})")
    stats = {"source": source, **class_size_stats(counts, many=many, few=few)}
    if not is_list:
        stats["val_source"] = info.get("val_source", "unknown")
    unit = "images" if is_list else info.get("unit", "images")
    if args.plot:
        stats["plot"] = str(plot_class_sizes(counts, args.plot, title=source, many=many, few=few, unit=unit))
    if args.json:
        print(json.dumps(stats))
        return
    print(format_stats(stats, source, unit=unit))
    if args.plot:
        print(f"  class-size plot: {stats['plot']}")


def _cmd_export(args: argparse.Namespace) -> None:
    result = export_run(
        args.run_dir,
        args.method,
        args.out,
        onnx=args.onnx,
        overrides=args.overrides,
        overwrite=args.overwrite,
        prior=args.prior,
    )
    classifier = result.metadata["classifier"]
    what = f"auto (= {classifier['label']})" if args.method == "auto" else classifier["label"]
    print(f"exported {what} to {result.path}  ({result.path.stat().st_size / 1e6:.1f} MB)")
    prior = result.metadata[PRIOR_KEY]
    if prior["kind"] == "known":
        done = "folded into the last layer" if prior["applied"] else f"not folded: {prior['note']}"
        print(f"prior {prior['file']}: {done} (calibration {prior['calibration']}, T = {prior['temperature']:.3f})")
    if result.onnx_path is not None:
        print(f"ONNX: {result.onnx_path}")
    if result.removed_onnx is not None:
        print(f"removed {result.removed_onnx}: the replaced model's ONNX file (--onnx writes the new one's)")
    if result.metadata["input"].get("kind") == "features":
        print(f"it maps (N, {result.metadata['input']['features']}) feature vectors to logits: "
              f"torch.export.load('{result.path}').module()(features)")  # fmt: skip
    else:
        print(f"next: longtail predict {shlex.quote(str(result.path))} IMAGE...")


def _cmd_predict(args: argparse.Namespace) -> None:
    module, metadata = load_artifact(args.model)
    if metadata.get("input", {}).get("kind") == "features":
        raise ConfigError(
            f"{args.model}: takes (N, {metadata['input'].get('features')}) feature vectors, not images; "
            "call it from Python: torch.export.load(MODEL).module()(features)"
        )
    predictions, adapted = predict_with_prior(module, metadata, args.images, args.topk, args.prior, model=args.model)
    if args.json:
        rows = [p.to_dict() for p in predictions]
        print(json.dumps(rows if adapted is None else {"predictions": rows, "prior": adapted.summary()}))
        return
    print(format_predictions(predictions))
    if adapted is not None and args.prior == "em":
        print(format_prior(adapted, metadata["class_names"], len(predictions)))


def _cmd_features(args: argparse.Namespace) -> None:
    written = export_features(
        args.run_dir, args.out, overwrite=args.overwrite, overrides=args.overrides, dtype=args.dtype
    )
    counts = ", ".join(f"{split} {n}" for split, n in written.counts.items())
    joint = " and the joint classifier" if written.joint else ""
    print(f"{args.dtype} features (d = {written.num_features}; {counts}){joint} written to {written.path}")
    print(f"next: longtail train data.name=features {shlex.quote(f'data.path={written.path}')} --out RUN_DIR")


def config_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail config``: the resolved config."""
    p = commands.add_parser(
        "config",
        parents=[shared.common],
        help="print the resolved config (defaults, YAML file, overrides)",
        description="Print the config that `longtail train` would use, as YAML.",
        epilog=shared.keys,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "items",
        nargs="*",
        default=[],
        metavar="[CONFIG.yaml] [key=value]",
        help="an optional YAML config, then overrides",
    )
    p.set_defaults(func=_cmd_config)


def data_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail data``: dataset tools (`data stats`)."""
    p = commands.add_parser(
        "data",
        help="inspect a dataset: `longtail data stats`",
        description="Dataset tools. `longtail data stats SPEC_OR_LIST` prints class-size statistics.",
    )
    data_commands = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = data_commands.add_parser(
        "stats",
        parents=[shared.common],
        help="classes, images, imbalance factor, many/medium/few; --plot for a chart",
        description="Class-size statistics of a split file (one 'relative/path label' per line) or of "
        "the dataset a config describes (a YAML file and/or key=value overrides; --split chooses "
        "which split): classes, images, largest and smallest class, imbalance factor (largest / "
        "smallest), and how many classes are many-shot (> --many), medium or few-shot (< --few).",
        epilog=shared.keys,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "spec",
        metavar="SPEC_OR_LIST",
        help="a split file, or a YAML config (or, without one, overrides such as data.name=cifar10_lt)",
    )
    p.add_argument(
        "overrides", nargs="*", default=[], metavar="key=value", help="config overrides, after a YAML config"
    )
    p.add_argument("--json", action="store_true", help="print only JSON on standard output")
    p.add_argument("--plot", metavar="FILE.png", help="write a class-size plot (.png, .svg or .pdf, as its name ends)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE.png if it exists")
    p.add_argument(
        "--split", choices=("train", "val", "test"), help="for a config (default: train); a split file is one split"
    )
    p.add_argument("--many", type=int, metavar="N", help="many-shot: more than N images (default: eval.many, 100)")
    p.add_argument("--few", type=int, metavar="N", help="few-shot: fewer than N images (default: eval.few, 20)")
    p.set_defaults(func=_cmd_data_stats)


def export_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail export``: one model file."""
    p = commands.add_parser(
        "export",
        parents=[shared.common],
        help="one self-contained model file: backbone + re-balanced classifier (+ ONNX)",
        description="Write RUN_DIR's backbone with one classifier folded into a linear layer (tau, LWS scales, "
        "logit adjustment or NCM centroids baked in) as a torch.export program (.pt2) that loads with plain "
        "PyTorch: torch.export.load(MODEL).module() maps (N, C, H, W) float images in [0, 1] to logits. The class "
        "names and the input transform are stored in the file. The run's data must be readable (data.root=DIR "
        "if it moved): the export is checked against the pipeline on validation images. See docs/export.md.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (after `longtail decouple`)")
    p.add_argument(
        "--method",
        default="auto",
        choices=export_methods(),
        help="the classifier to export (default: auto, the best on val of `longtail decouple --method auto`)",
    )
    p.add_argument("--out", metavar="MODEL", help="the file to write (default: RUN_DIR/export/METHOD.pt2)")
    p.add_argument("--overwrite", action="store_true", help="replace MODEL (and MODEL.onnx) if it exists")
    p.add_argument(
        "--onnx", action="store_true", help="also write MODEL.onnx beside it (needs pip install 'longtail[export]')"
    )
    p.add_argument(
        "--prior",
        metavar="FILE",
        help="a deployment prior (one weight per class: text, .json, .npy or .npz) folded into the exported bias "
        "after the calibration fitted on validation: the model predicts for that prior (docs/statistics.md)",
    )
    p.add_argument(
        "overrides", nargs="*", default=[], metavar="key=value", help="where the data lives, e.g. data.root=DIR"
    )
    p.set_defaults(func=_cmd_export)


def predict_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail predict``: top-k classes with an exported model."""
    p = commands.add_parser(
        "predict",
        parents=[shared.common],
        help="top-k classes of images with an exported model",
        description="Read each IMAGE (PNG, JPEG or anything Pillow reads, or .npy: uint8 or floats in [0, 1]), "
        "apply the input transform recorded in MODEL (channels, resize or resize + centre crop), and print the "
        "top-k classes with their probabilities.",
    )
    p.add_argument("model", metavar="MODEL", help="a .pt2 file written by `longtail export`")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--topk", type=int, metavar="K", help="classes per image (default: 5, or all if fewer)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument(
        "--prior",
        default="none",
        metavar="none|em|FILE",
        help="the class prior of these images: none (default: the model's own), em (estimated from the images "
        "given, after the calibration fitted on validation; prints the estimate; needs a batch of at least 2 images), "
        "or a prior file (one weight per class: text, .json, .npy or .npz)",
    )
    p.set_defaults(func=_cmd_predict)


def features_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail features``: a run's features as an .npz."""
    p = commands.add_parser(
        "features",
        parents=[shared.common],
        help="write a run's frozen-backbone features of every split to an .npz (for data.name=features)",
        description="Write the test-time features of RUN_DIR's train, val and test splits by its frozen backbone "
        "(the ones stage 2 fits on, from RUN_DIR/features or computed there) to --out: x_train, y_train, x_val, "
        "y_val, x_test, y_test, class_names, and the joint classifier (joint_weight, joint_bias) when it is "
        "linear. `longtail train data.name=features data.path=FILE` trains a linear probe on them; with "
        "model.joint=file it keeps this run's joint classifier, and its stage 2 gives this run's numbers.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `longtail train`")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="the .npz file to write")
    p.add_argument("--overwrite", action="store_true", help="replace FILE.npz if it exists")
    p.add_argument(
        "--dtype",
        choices=FEATURE_DTYPES,
        default="float32",
        help="dtype of the features written (default float32); float16 halves the file and the memory of "
        "data.name=features, which casts each batch to float32",
    )
    p.add_argument(
        "overrides", nargs="*", default=[], metavar="key=value", help="run-time overrides such as data.root=DIR"
    )
    p.set_defaults(func=_cmd_features)
