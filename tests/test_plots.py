"""fer.plots: each plot renders headless (Agg) to a real PNG and returns its Figure."""

import builtins
import sys

import numpy as np
import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import fer  # noqa: E402
from fer import plots  # noqa: E402
from fer.errors import FerValueError  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

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


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def trained(sample):
    return fer.Model(TINY, seed=1).fit(sample, epochs=2, progress=False)


def save_png(fig, path) -> bytes:
    assert isinstance(fig, Figure)
    fig.savefig(path, dpi=60)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 2_000, f"{path.name} is only {len(data)} bytes"
    return data


def image_std(fig) -> float:
    """Pixel spread of the rendered figure: ~0 for a blank canvas."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba(), dtype=float)
    return float(rgba[..., :3].std())


# ----------------------------------------------------------------- history
def test_plot_history_from_model_and_method(trained, tmp_path):
    fig = plots.plot_history(trained)
    save_png(fig, tmp_path / "history.png")
    assert len(fig.axes) == 2
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_title() == "loss" and acc_ax.get_title() == "accuracy"
    # training and validation curves, with the recorded values
    labels = [line.get_label() for line in loss_ax.get_lines()]
    assert labels == ["train", "validation"]
    np.testing.assert_allclose(loss_ax.get_lines()[0].get_ydata(), trained.history["loss"])
    np.testing.assert_allclose(acc_ax.get_lines()[1].get_ydata(), trained.history["val_accuracy"])
    assert image_std(fig) > 5

    fig2 = trained.plot_history(metrics=("loss",))
    assert isinstance(fig2, Figure) and len(fig2.axes) == 1


def test_plot_history_accepts_frames_dicts_and_several_models(trained, tmp_path):
    hist = trained.history
    fig = plots.plot_history(hist, metrics="learning_rate")
    assert len(fig.axes) == 1 and len(fig.axes[0].get_lines()) == 1

    no_val = {"epoch": [1, 2, 3], "loss": [2.0, 1.5, 1.2], "accuracy": [0.2, 0.3, 0.4]}
    fig = plots.plot_history(no_val)
    assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1]

    fig = plots.plot_history({"a": trained, "b": hist})
    save_png(fig, tmp_path / "compare.png")
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["a train", "a validation", "b train", "b validation"]


def test_plot_history_bad_inputs(trained):
    untrained = fer.Model(TINY)
    with pytest.raises(FerValueError, match="empty"):
        plots.plot_history(untrained)
    with pytest.raises(FerValueError, match=r"no values for metric 'f1'.*available: loss, accuracy"):
        plots.plot_history(trained, metrics=("loss", "f1"))
    with pytest.raises(FerValueError, match="metrics is empty"):
        plots.plot_history(trained, metrics=())
    with pytest.raises(TypeError, match="fer.Model"):
        plots.plot_history(42)


# -------------------------------------------------------- confusion matrix
def test_plot_confusion_matrix_from_report(trained, sample, tmp_path):
    report = trained.evaluate(sample)
    fig = plots.plot_confusion_matrix(report)
    save_png(fig, tmp_path / "cm.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(fer.EMOTIONS)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(fer.EMOTIONS)
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == 49
    assert cells == [str(v) for v in report.confusion_matrix.to_numpy().ravel()]
    assert fer.plot_confusion_matrix is plots.plot_confusion_matrix


def test_plot_confusion_matrix_normalized_and_on_given_axes(tmp_path):
    counts = np.arange(49).reshape(7, 7)
    counts[1] = 0  # an emotion with no images: its row stays 0, not NaN
    fig, ax = plt.subplots()
    returned = plots.plot_confusion_matrix(counts, normalize=True, ax=ax)
    assert returned is fig
    save_png(fig, tmp_path / "cm_norm.png")
    values = np.array([float(t.get_text()) for t in ax.texts]).reshape(7, 7)
    np.testing.assert_allclose(values[0], counts[0] / counts[0].sum(), atol=0.005)
    assert (values[1] == 0).all()
    np.testing.assert_allclose(values[[0, 2, 3, 4, 5, 6]].sum(axis=1), 1, atol=0.02)

    frame = pd.DataFrame(counts, index=list("ABCDEFG"), columns=list("abcdefg"))
    fig = plots.plot_confusion_matrix(frame, normalize="pred")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list("abcdefg")
    cols = np.array([float(t.get_text()) for t in fig.axes[0].texts]).reshape(7, 7)
    np.testing.assert_allclose(cols.sum(axis=0), 1, atol=0.02)


@pytest.mark.parametrize(
    "matrix, normalize, error, match",
    [
        (np.ones((6, 7)), False, FerValueError, r"7x7.*\(6, 7\)"),
        (-np.ones((7, 7)), False, FerValueError, "finite counts >= 0"),
        (np.full((7, 7), np.nan), False, FerValueError, "finite counts"),
        (np.ones((7, 7)), "rows", FerValueError, "normalize must be"),
        ("not a matrix", False, TypeError, "EvaluationReport"),
    ],
)
def test_plot_confusion_matrix_bad_inputs(matrix, normalize, error, match):
    with pytest.raises(error, match=match):
        plots.plot_confusion_matrix(matrix, normalize=normalize)


# ------------------------------------------------------------------- faces
def test_show_faces_titles_and_colours(sample, tmp_path):
    rows = sample.head(10)
    preds = rows["emotion"].to_numpy().copy()
    preds[:3] = (preds[:3] + 1) % 7  # three wrong predictions
    fig = plots.show_faces(rows, predictions=preds, ncols=5)
    save_png(fig, tmp_path / "faces.png")
    axes = fig.axes
    assert len(axes) == 10
    titles = [ax.get_title() for ax in axes]
    true_names = [fer.EMOTIONS[e] for e in rows["emotion"]]
    assert titles[5] == f"true: {true_names[5]}\npred: {fer.EMOTIONS[preds[5]]}"
    colours = [matplotlib.colors.to_hex(ax.title.get_color()) for ax in axes]
    red, green = matplotlib.colors.to_hex("red"), matplotlib.colors.to_hex("tab:green")
    assert colours == [red] * 3 + [green] * 7
    # the face is drawn as given: pixel (0, 0) of the image equals the data's
    first = fer.parse_pixels(rows.pixels.iloc[:1])[0] / 255
    np.testing.assert_allclose(axes[0].get_images()[0].get_array()[0, 0], first[0, 0], atol=1e-6)
    assert fer.show_faces is plots.show_faces


def test_show_faces_arrays_probabilities_and_limits(sample, tmp_path):
    x = fer.parse_pixels(sample.pixels.head(40))
    fig = plots.show_faces(x, max_faces=12, ncols=4)
    save_png(fig, tmp_path / "grid.png")
    assert len(fig.axes) == 12 and all(ax.get_title() == "" for ax in fig.axes)

    proba = np.zeros((3, 7))
    proba[:, 3] = 1.0
    fig = plots.show_faces(x[:3] / 255.0, predictions=proba)
    assert [ax.get_title() for ax in fig.axes] == ["Happy"] * 3

    fig = plots.show_faces(sample.head(2), labels=False)
    assert [ax.get_title() for ax in fig.axes] == ["", ""]
    fig = plots.show_faces(x[0], labels=["Sad"])
    assert fig.axes[0].get_title() == "Sad"


def test_show_faces_bad_inputs(sample):
    x = fer.parse_pixels(sample.pixels.head(4))
    with pytest.raises(FerValueError, match="got 4 images but 3 labels"):
        plots.show_faces(x, labels=[0, 1, 2])
    with pytest.raises(FerValueError, match=r"predictions\[1\] is 9"):
        plots.show_faces(x, predictions=[0, 9, 1, 2])
    with pytest.raises(FerValueError, match=r"labels\[0\] is 'happy'"):
        plots.show_faces(x, labels=["happy", "Sad", "Sad", "Sad"])
    with pytest.raises(FerValueError, match="ncols must be"):
        plots.show_faces(x, ncols=0)
    with pytest.raises(FerValueError, match="shape"):
        plots.show_faces(np.zeros((2, 10, 10), dtype=np.uint8))


def test_missing_matplotlib_gives_install_hint(monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plots.plot_confusion_matrix(np.ones((7, 7)))
