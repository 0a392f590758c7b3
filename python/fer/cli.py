"""The ``fer`` command line (``python -m fer`` or the ``fer`` script).

Subcommands: ``train``, ``evaluate``, ``predict``, ``summary``, ``models``
and ``demo``; ``fer COMMAND --help`` describes each. Results go to stdout,
progress and notes to stderr. Exit status: 0 on success, 2 for bad
arguments, 1 for any other error (a one-line ``fer: error: ...`` message;
``--verbose`` adds the traceback), 130 when interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, Sequence

import pandas as pd

import fer
from fer.errors import FerInternalError

PROG = "fer"
TEST_USAGES = ("PublicTest", "PrivateTest")


class CliError(Exception):
    """An error with a message meant for the user (exit status 1)."""


# ------------------------------------------------------------ arg types
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _option(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON when it parses (numbers,
    true/false, null, lists), else kept as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.replace("-", "_"), value


def _options(pairs: list[tuple[str, Any]] | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in pairs or []:
        if key in options:
            raise CliError(f"--option {key} is given twice")
        options[key] = value
    return options


# ----------------------------------------------------------- I/O helpers
def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _read_csv(path: str) -> pd.DataFrame:
    """Read a FER CSV (``.csv`` or compressed ``.csv.gz``/``.zip``/...); ``-`` is stdin."""
    if path != "-" and not os.path.isfile(path):
        raise CliError(f"data file {path!r} not found" if not os.path.exists(path) else f"{path!r} is not a file")
    try:
        return pd.read_csv(sys.stdin if path == "-" else path)
    except pd.errors.EmptyDataError:
        raise CliError(f"data file {path!r} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise CliError(f"cannot read {path!r} as a CSV file: {exc}") from None


def _model_spec_or_name(value: str) -> str | dict:
    """A preset name, or the spec dict in a ``.json`` file."""
    if value.endswith(".json"):
        if not os.path.isfile(value):
            raise CliError(f"model spec file {value!r} not found")
        try:
            with open(value, encoding="utf-8") as f:
                spec = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise CliError(f"cannot read the model spec {value!r}: {exc}") from None
        if not isinstance(spec, dict):
            raise CliError(f"the model spec {value!r} must be a JSON object, got {type(spec).__name__}")
        return spec
    return value


def _history_text(model: fer.Model) -> str:
    history = model.history.astype({"epoch": "int64"})
    return history.to_string(index=False, float_format=lambda v: f"{v:.4f}")


def _load_model(path: str) -> fer.Model:
    if path == "pretrained" and not os.path.exists(path):
        return fer.pretrained()
    if not os.path.isfile(path):
        hint = "" if path.endswith(".fer") else " (a saved model file, as written by 'fer train --out')"
        raise CliError(f"model file {path!r} not found{hint}")
    try:
        return fer.load(path)
    except fer.ModelFileError as exc:
        raise CliError(f"cannot load the model {path!r}: {exc}") from None


def _looks_like_model_file(value: str) -> bool:
    return value.endswith(".fer") or value == "pretrained" or (os.path.isfile(value) and not value.endswith(".json"))


# -------------------------------------------------------------- commands
def cmd_models(args: argparse.Namespace) -> int:
    presets = fer.models()
    width = max(len(name) for name in presets)
    for name, description in presets.items():
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    options = _options(args.option)
    if _looks_like_model_file(args.model):
        if options:
            raise CliError("--option applies to a preset name, not to a saved model file")
        model = _load_model(args.model)
        model.summary()
        print(f"Epochs trained: {model.epochs_trained}")
        if model.epochs_trained:
            last = model.history.iloc[-1]
            metrics = "  ".join(
                f"{k} {last[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy") if pd.notna(last[k])
            )
            print(f"Last epoch: {metrics}")
        return 0
    fer.Model(_model_spec_or_name(args.model), **options).summary()
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    options = _options(args.option)
    spec = _model_spec_or_name(args.model)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if os.path.isdir(args.out) or args.out.endswith(("/", os.sep)):
        raise CliError(f"--out {args.out!r} is a directory: give the model's file name, e.g. {os.path.join(args.out, 'model.fer')!r}")
    if not os.path.isdir(out_dir):
        raise CliError(f"cannot write {args.out!r}: directory {out_dir!r} does not exist")
    if not os.access(out_dir, os.W_OK):
        raise CliError(f"cannot write {args.out!r}: directory {out_dir!r} is not writable")
    if args.threads is not None:
        fer.set_num_threads(args.threads)
    df = _read_csv(args.data)
    _note(f"read {len(df):,} row{'' if len(df) == 1 else 's'} from {args.data}")
    model = fer.train(
        df,
        spec,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        optimizer=args.optimizer,
        validation=args.validation,
        seed=args.seed,
        progress=not args.no_progress,
        **options,
    )
    model.save(args.out)
    print(_history_text(model))
    _note(f"saved the model ({model.count_params():,} params, {model.epochs_trained} epochs) to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.threads is not None:
        fer.set_num_threads(args.threads)
    model = _load_model(args.model)
    df = _read_csv(args.data)
    if "Usage" in df.columns and df["Usage"].isin(TEST_USAGES).any() and not args.all_rows:
        rows = df[df["Usage"].isin(TEST_USAGES)]
        where = "test rows (Usage PublicTest/PrivateTest)"
    else:
        rows = df.drop(columns="Usage") if "Usage" in df.columns else df
        where = "all rows"
    report = model.evaluate(rows, batch_size=args.batch_size, tta=args.tta)
    if args.json:
        print(json.dumps({"rows": len(rows), **report.to_dict()}, indent=2))
    else:
        print(f"{args.model} on {len(rows):,} {where} of {args.data}")
        print(report)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.threads is not None:
        fer.set_num_threads(args.threads)
    model = _load_model(args.model)
    df = _read_csv(args.data)
    proba = model.predict_proba(df, batch_size=args.batch_size, tta=args.tta)
    values = proba.to_numpy() if isinstance(proba, pd.DataFrame) else proba
    labels = values.argmax(axis=1)
    out = df.assign(predicted=labels, predicted_emotion=[fer.EMOTIONS[i] for i in labels])
    for i, name in enumerate(fer.EMOTIONS):
        out[name] = values[:, i].astype("float64").round(6)
    if args.out == "-":
        out.to_csv(sys.stdout, index=False)
    else:
        try:
            out.to_csv(args.out, index=False)
        except OSError as exc:
            raise CliError(f"cannot write {args.out!r}: {exc.strerror or exc}") from None
        _note(f"wrote {len(out):,} predictions to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    if args.threads is not None:
        fer.set_num_threads(args.threads)
    df = fer.load_sample()
    print(f"fer {fer.__version__}: bundled FER2013 sample, {len(df)} rows")
    counts = df.groupby(["Usage", "emotion"]).size().unstack(fill_value=0)
    counts.columns = [fer.EMOTIONS[c] for c in counts.columns]
    print(counts.to_string(), "\n")
    model = fer.train(
        df, "seed3x3", pooling="stride2", epochs=args.epochs, seed=args.seed, progress=not args.no_progress
    )
    print(_history_text(model), "\n")
    print("PublicTest rows of the sample:")
    print(model.evaluate(df), "\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seed3x3.fer")
        model.save(path)
        reloaded = fer.load(path)
        print(f"saved {os.path.getsize(path):,} bytes and reloaded them")
    test = df[df.Usage == "PublicTest"].head(8)
    out = test.assign(
        actual=[fer.EMOTIONS[i] for i in test.emotion],
        predicted=[fer.EMOTIONS[i] for i in fer.predict(test, model=reloaded)],
    )[["actual", "predicted"]]
    print(out.to_string())
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for ``fer`` (exposed for documentation and tests)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show the traceback on errors"
    )
    # --model and --tta of the subcommands that score a saved model.
    scoring = argparse.ArgumentParser(add_help=False)
    scoring.add_argument(
        "--model", default="pretrained", metavar="PATH",
        help="saved model file (from 'fer train --out'), or 'pretrained' (default): the model shipped with fer",
    )
    scoring.add_argument("--tta", choices=("flip", "crops"), default=None, help="average over flipped (and shifted) views")
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument(
        "--threads", type=_non_negative_int, default=None, metavar="N",
        help="threads for the native code (default: all cores, or RAYON_NUM_THREADS)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train and run facial-emotion CNNs on FER2013-style CSV files "
        "(columns emotion, pixels and optionally Usage).",
        epilog="Run 'fer COMMAND --help' for a command's options. Exit status: 0 ok, "
        "1 error, 2 bad arguments, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"fer {fer.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", default=False, help="show the traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "train", parents=[common, threads], help="train a model on a CSV file and save it",
        description="Train a model on the Training rows of a FER2013 CSV file and save it. "
        "A validation fraction of them is held out (stratified) to report val_loss/val_accuracy; "
        "PublicTest/PrivateTest rows are never trained on. Progress goes to stderr, the history to stdout.",
    )
    p.add_argument("--data", required=True, metavar="CSV", help="fer2013.csv or .csv.gz (columns emotion, pixels, Usage)")
    p.add_argument(
        "--model", default="fer_vgg", metavar="NAME",
        help="preset name (see 'fer models'; default fer_vgg) or a .json file holding a model spec",
    )
    p.add_argument(
        "--option", "-o", action="append", type=_option, metavar="KEY=VALUE",
        help="preset option, repeatable (e.g. pooling=stride2), or a training option: "
        "augment (true/false or a JSON object), lr_schedule (cosine, one_cycle, constant), warmup_epochs, "
        "label_smoothing, class_weight (balanced, sqrt or a JSON object), weight_decay, momentum, nesterov, time_limit. "
        "Defaults are fer.train's recipe: augment=true lr_schedule=cosine warmup_epochs=1 label_smoothing=0.1 "
        "class_weight=sqrt",
    )
    p.add_argument(
        "--epochs", type=_positive_int, default=None, metavar="N",
        help="epochs (default 10, or with -o time_limit=SECONDS as many as fit in it)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=64, metavar="N", help="batch size (default 64)")
    p.add_argument("--learning-rate", type=_positive_float, default=1e-3, metavar="X", help="learning rate (default 0.001)")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam", help="optimizer (default adam)")
    p.add_argument(
        "--validation", type=_fraction, default=0.1, metavar="F",
        help="fraction of Training rows held out for validation (default 0.1; 0 for none)",
    )
    p.add_argument("--seed", type=_non_negative_int, default=0, metavar="N", help="seed for weights and shuffling (default 0)")
    p.add_argument("--out", required=True, metavar="PATH", help="where to save the trained model (e.g. model.fer)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", parents=[common, threads, scoring], help="accuracy, per-class table and confusion matrix",
        description="Evaluate a saved model on a labelled CSV file: accuracy, loss, per-class "
        "precision/recall/F1/support and the confusion matrix. When the file has a Usage column with "
        "test rows (PublicTest/PrivateTest) only those are scored, unless --all-rows.",
    )
    p.add_argument("--data", required=True, metavar="CSV", help="CSV with emotion and pixels columns")
    p.add_argument("--all-rows", action="store_true", help="score every row, whatever its Usage")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--batch-size", type=_positive_int, default=256, metavar="N", help="inference batch size (default 256)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict", parents=[common, threads, scoring], help="predict emotions for the rows of a CSV file",
        description="Predict the emotion of each row of a CSV file with a pixels column. The output "
        "CSV keeps the input's columns and adds 'predicted' (label 0-6), 'predicted_emotion' (its name) "
        f"and one probability column per emotion ({', '.join(fer.EMOTIONS)}).",
    )
    p.add_argument("--data", required=True, metavar="CSV", help="input CSV with a pixels column ('-' for stdin)")
    p.add_argument("--out", required=True, metavar="CSV", help="output CSV ('.gz' compresses; '-' for stdout)")
    p.add_argument("--batch-size", type=_positive_int, default=256, metavar="N", help="inference batch size (default 256)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "summary", parents=[common], help="layer table of a preset or a saved model",
        description="Print the layer table (output shapes, parameter counts) of a preset, a .json "
        "model spec, or a saved model file (plus how long it was trained).",
    )
    p.add_argument(
        "--model", required=True, metavar="NAME|PATH",
        help="preset name, .json spec, saved .fer model, or 'pretrained' (the model shipped with fer)",
    )
    p.add_argument("--option", "-o", action="append", type=_option, metavar="KEY=VALUE", help="preset option, repeatable")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "models", parents=[common], help="list the model presets",
        description="List the named model presets with a one-line description each.",
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "demo", parents=[common, threads], help="train and evaluate on the bundled sample",
        description="The main job on the bundled 998-row sample: train the study's 3x3 model "
        "(stride-2 pooling), evaluate it on the PublicTest rows, save, reload and predict.",
    )
    p.add_argument("--epochs", type=_positive_int, default=3, metavar="N", help="epochs (default 3)")
    p.add_argument("--seed", type=_non_negative_int, default=0, metavar="N", help="seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, (CliError, ValueError, FileNotFoundError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fer`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 on bad arguments
    verbose = getattr(args, "verbose", False)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if verbose:
            traceback.print_exc()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # e.g. 'fer predict ... --out - | head': the reader went away; not an error
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except Exception as exc:  # noqa: BLE001 - the command line reports every error in one line
        if verbose:
            traceback.print_exc()
        message = _one_line(exc)
        if isinstance(exc, FerInternalError):
            message += " (this is a bug in fer; please report it)"
        elif not isinstance(exc, (CliError, ValueError, OSError)) and not verbose:
            message += " (run with --verbose for the traceback)"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
