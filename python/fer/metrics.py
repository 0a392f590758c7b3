"""Evaluation reports: accuracy, per-class precision/recall/F1/support and
the confusion matrix, labelled with the emotion names."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from fer.data import EMOTIONS, NUM_CLASSES


@dataclass(frozen=True)
class EvaluationReport:
    """What :meth:`fer.Model.evaluate` returns.

    Attributes
    ----------
    accuracy:
        Fraction of images whose predicted emotion is the true one.
    loss:
        Mean categorical cross-entropy (no label smoothing), or NaN if unknown.
    per_class:
        DataFrame indexed by emotion name with ``precision``, ``recall``,
        ``f1`` and ``support`` columns.
    confusion_matrix:
        DataFrame of counts, rows the true emotion, columns the predicted one.
    """

    accuracy: float
    loss: float
    per_class: pd.DataFrame = field(repr=False)
    confusion_matrix: pd.DataFrame = field(repr=False)

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the emotions that occur, as true or predicted labels
        (scikit-learn's ``f1_score(average="macro")``): an emotion absent
        from a small test set does not count as F1 = 0."""
        seen = (self.confusion_matrix.sum(axis=1) + self.confusion_matrix.sum(axis=0)).to_numpy() > 0
        return float(self.per_class["f1"].to_numpy()[seen].mean()) if seen.any() else float("nan")

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "macro_f1": self.macro_f1,
            "per_class": self.per_class.to_dict(orient="index"),
            "confusion_matrix": self.confusion_matrix.values.tolist(),
        }

    def __str__(self) -> str:
        lines = [
            f"accuracy {self.accuracy:.4f}   loss {self.loss:.4f}   macro F1 {self.macro_f1:.4f}",
            "",
            self.per_class.to_string(float_format=lambda v: f"{v:.3f}"),
            "",
            "confusion matrix (rows: true, columns: predicted)",
            self.confusion_matrix.to_string(),
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return (
            f"<p>accuracy <b>{self.accuracy:.4f}</b>, loss {self.loss:.4f}, macro F1 {self.macro_f1:.4f}</p>"
            + self.per_class.to_html(float_format=lambda v: f"{v:.3f}")
            + "<p>confusion matrix (rows: true, columns: predicted)</p>"
            + self.confusion_matrix.to_html()
        )


def confusion_matrix(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """7x7 counts, rows the true label and columns the predicted one."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(t * NUM_CLASSES + p, minlength=NUM_CLASSES * NUM_CLASSES).reshape(NUM_CLASSES, NUM_CLASSES)


def report(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, loss: float = float("nan")) -> EvaluationReport:
    """Build an :class:`EvaluationReport` from true and predicted labels."""
    cm = confusion_matrix(y_true, y_pred)
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    per_class = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support},
        index=pd.Index(EMOTIONS, name="emotion"),
    )
    total = cm.sum()
    matrix = pd.DataFrame(
        cm, index=pd.Index(EMOTIONS, name="true"), columns=pd.Index(EMOTIONS, name="predicted")
    )
    return EvaluationReport(
        accuracy=float(tp.sum() / total) if total else float("nan"),
        loss=float(loss),
        per_class=per_class,
        confusion_matrix=matrix,
    )
