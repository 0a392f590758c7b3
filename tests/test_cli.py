"""The command line, run as users run it: ``python -m fer ...`` in a subprocess."""

import io
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

import fer

# A small network so each training run takes a second or two on 2 cores.
TINY = {
    "name": "tiny",
    "input_shape": [1, 48, 48],
    "layers": [
        {"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": "same", "activation": "relu"},
        {"type": "max_pool2d", "kernel": 2, "stride": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 7, "activation": "softmax"},
    ],
}
COMMANDS = ["train", "evaluate", "predict", "summary", "models", "demo"]


def run(*args, input=None, cwd=None):
    env = dict(os.environ, RAYON_NUM_THREADS="2", PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "fer", *map(str, args)],
        capture_output=True, text=True, input=input, cwd=cwd, env=env, timeout=300,
    )


def one_line_error(proc, *fragments):
    """Exit status 1, one ``fer: error: ...`` line (last on stderr), no traceback."""
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fer: error: ")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1] == errors[0]
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory, sample):
    root = tmp_path_factory.mktemp("cli")
    data = root / "fer2013_sample.csv.gz"
    sample.to_csv(data, index=False)
    spec = root / "tiny.json"
    spec.write_text(json.dumps(TINY))
    model = root / "tiny.fer"
    proc = run("train", "--data", data, "--model", spec, "--epochs", 2, "--batch-size", 32,
               "--seed", 3, "--out", model, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "data": data, "spec": spec, "model": model, "train": proc}


def test_train_writes_a_loadable_model_and_prints_history(files, sample):
    proc = files["train"]
    assert proc.stdout.split()[:7] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
    assert len(proc.stdout.strip().splitlines()) == 3  # header + 2 epochs
    assert f"read {len(sample):,} rows" in proc.stderr and "saved the model" in proc.stderr
    model = fer.load(files["model"])
    assert model.name == "tiny" and model.epochs_trained == 2 and model.seed == 3


def test_train_preset_with_options_and_progress_on_stderr(files):
    out = files["root"] / "s3.fer"
    proc = run("train", "--data", files["data"], "--model", "seed3x3", "--option", "pooling=stride2",
               "--epochs", 1, "--batch-size", 128, "--learning-rate", "0.002", "--validation", 0, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1" in proc.stderr  # the progress bar (tqdm) writes to stderr
    assert "epoch 1" not in proc.stdout
    model = fer.load(out)
    assert model.count_params() == fer.Model("seed3x3", pooling="stride2").count_params()
    assert model.history["learning_rate"].iloc[0] == pytest.approx(0.002)
    assert model.history["val_loss"].isna().all()


def test_evaluate_scores_the_test_rows(files, sample):
    proc = run("evaluate", "--model", files["model"], "--data", files["data"])
    assert proc.returncode == 0, proc.stderr
    n_test = int((sample.Usage == "PublicTest").sum())
    assert f"on {n_test:,} test rows" in proc.stdout
    assert "accuracy" in proc.stdout and "precision" in proc.stdout and "confusion matrix" in proc.stdout
    for name in fer.EMOTIONS:
        assert name in proc.stdout
    expected = fer.load(files["model"]).evaluate(sample)
    assert f"accuracy {expected.accuracy:.4f}" in proc.stdout

    proc = run("evaluate", "--model", files["model"], "--data", files["data"], "--json", "--all-rows")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["rows"] == len(sample)
    assert sum(map(sum, report["confusion_matrix"])) == len(sample)
    assert set(report["per_class"]) == set(fer.EMOTIONS)


def test_predict_keeps_columns_and_adds_predictions(files, sample):
    out = files["root"] / "pred.csv"
    proc = run("predict", "--model", files["model"], "--data", files["data"], "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {len(sample):,} predictions" in proc.stderr
    pred = pd.read_csv(out)
    assert len(pred) == len(sample)
    assert list(pred.columns) == list(sample.columns) + ["predicted", "predicted_emotion", *fer.EMOTIONS]
    pd.testing.assert_frame_equal(pred[list(sample.columns)], sample)
    model = fer.load(files["model"])
    assert (pred["predicted"].to_numpy() == model.predict(sample)).all()
    assert (pred["predicted_emotion"] == [fer.EMOTIONS[i] for i in pred["predicted"]]).all()
    proba = pred[list(fer.EMOTIONS)].to_numpy()
    assert proba.sum(axis=1) == pytest.approx(1.0, abs=1e-4)
    assert (proba.argmax(axis=1) == pred["predicted"].to_numpy()).all()


def test_predict_without_labels_to_stdout(files, sample):
    unlabelled = sample[["pixels"]].head(5).to_csv(index=False)
    proc = run("predict", "--model", files["model"], "--data", "-", "--out", "-", input=unlabelled)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == ",".join(["pixels", "predicted", "predicted_emotion", *fer.EMOTIONS])
    assert len(lines) == 6


def test_summary_of_preset_spec_and_saved_model(files):
    proc = run("summary", "--model", "seed3x3", "--option", "pooling=same")
    assert proc.returncode == 0, proc.stderr
    assert "Total params: 2,295,839" in proc.stdout and "Conv2D" in proc.stdout

    proc = run("summary", "--model", files["spec"])
    assert proc.returncode == 0, proc.stderr
    assert 'Model: "tiny"' in proc.stdout

    proc = run("summary", "--model", files["model"])
    assert proc.returncode == 0, proc.stderr
    assert 'Model: "tiny"' in proc.stdout and "Epochs trained: 2" in proc.stdout and "val_accuracy" in proc.stdout

    proc = run("summary", "--model", "pretrained")
    assert proc.returncode == 0, proc.stderr
    assert 'Model: "fer_vgg"' in proc.stdout and f"Epochs trained: {fer.pretrained().epochs_trained}" in proc.stdout


def test_models_lists_the_presets():
    proc = run("models")
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.strip().splitlines()]
    assert names == list(fer.models())


def test_demo_runs_on_the_bundled_sample():
    proc = run("demo", "--epochs", 1, "--no-progress", "--threads", 1)
    assert proc.returncode == 0, proc.stderr
    assert "bundled FER2013 sample, 998 rows" in proc.stdout
    assert "PublicTest rows of the sample" in proc.stdout and "confusion matrix" in proc.stdout
    assert "reloaded" in proc.stdout and "predicted" in proc.stdout


def test_help_for_every_command():
    proc = run("--help")
    assert proc.returncode == 0
    for command in COMMANDS:
        assert command in proc.stdout
    for command in COMMANDS:
        proc = run(command, "--help")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"usage: fer {command}")
    assert "--option" in run("train", "--help").stdout
    assert "predicted_emotion" in run("predict", "--help").stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "required: COMMAND"),
        (["fly"], "invalid choice: 'fly'"),
        (["train", "--data", "x.csv"], "required: --out"),
        (["train", "--data", "x.csv", "--out", "m.fer", "--epochs", "0"], "--epochs: must be >= 1"),
        (["train", "--data", "x.csv", "--out", "m.fer", "--learning-rate", "fast"], "expected a number"),
        (["train", "--data", "x.csv", "--out", "m.fer", "--option", "pooling"], "expected key=value"),
        (["evaluate", "--model", "m.fer"], "required: --data"),
    ],
)
def test_bad_arguments_exit_2(args, fragment):
    proc = run(*args)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: fer")
    assert fragment in proc.stderr


def test_errors_exit_1_with_one_line(files, tmp_path):
    one_line_error(run("evaluate", "--model", tmp_path / "nope.fer", "--data", files["data"]), "nope.fer", "not found")
    one_line_error(run("train", "--data", tmp_path / "none.csv", "--out", tmp_path / "m.fer"), "none.csv", "not found")
    one_line_error(run("summary", "--model", "seed5x5"), "seed5x5")
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,image\n0,1 2 3\n")
    one_line_error(run("predict", "--model", files["model"], "--data", bad, "--out", tmp_path / "o.csv"), "pixels")
    one_line_error(run("train", "--data", bad, "--out", tmp_path / "m.fer", "--no-progress"), "pixels")
    garbage = tmp_path / "garbage.fer"
    garbage.write_bytes(b"not a model at all")
    one_line_error(run("summary", "--model", garbage), "garbage.fer")
    one_line_error(
        run("train", "--data", files["data"], "--model", "seed3x3", "--option", "pooling=sideways",
            "--out", tmp_path / "m.fer", "--no-progress"),
        "sideways",
    )
    one_line_error(
        run("predict", "--model", files["model"], "--data", files["data"], "--out", tmp_path / "no" / "dir.csv"),
        "dir.csv",
    )
    # Caught before training, not when the trained model is saved.
    one_line_error(run("train", "--data", files["data"], "--out", tmp_path, "--no-progress"), "is a directory", "model.fer")
    assert not (tmp_path / "m.fer").exists()


def test_verbose_shows_the_traceback(tmp_path):
    proc = run("summary", "--model", tmp_path / "nope.fer", "--verbose")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and proc.stderr.rstrip().splitlines()[-1].startswith("fer: error: ")
    proc = run("--verbose", "summary", "--model", tmp_path / "nope.fer")
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_ctrl_c_exits_130_with_one_line(files, monkeypatch, capsys):
    from fer import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fer, "train", interrupted)
    status = cli.main(["train", "--data", str(files["data"]), "--out", str(files["root"] / "x.fer"), "--no-progress"])
    assert status == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "fer: interrupted" and not any("Traceback" in line for line in err)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_during_training_exits_130(files, tmp_path):
    import signal
    import time

    env = dict(os.environ, RAYON_NUM_THREADS="2")
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fer", "train", "--data", str(files["data"]), "--model", "seed3x3",
             "--epochs", "50", "--out", str(tmp_path / "m.fer")],
            stdout=subprocess.DEVNULL, stderr=err_file, env=env,
        )
        deadline = time.monotonic() + 120
        while "epoch 1" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # wait until training is under way
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    err = log.read_text()
    assert proc.returncode == 130, err
    assert err.rstrip().splitlines()[-1].split("\r")[-1] == "fer: interrupted"
    assert "Traceback" not in err
    assert not (tmp_path / "m.fer").exists()


def test_predict_and_evaluate_default_to_the_pretrained_model(files, sample):
    test = sample[sample.Usage == "PublicTest"]
    proc = run("predict", "--data", "-", "--out", "-", "--tta", "flip", input=test[["pixels"]].head(6).to_csv(index=False))
    assert proc.returncode == 0, proc.stderr
    pred = pd.read_csv(io.StringIO(proc.stdout))
    expected = fer.pretrained().predict(test.head(6), tta="flip")
    assert (pred["predicted"].to_numpy() == expected).all()
    proc = run("evaluate", "--data", files["data"], "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] == pytest.approx(fer.pretrained().evaluate(sample).accuracy)
