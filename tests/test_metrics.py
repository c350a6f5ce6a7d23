import json
import os
import random

import numpy as np
import pytest

from rnnkit.metrics import classification_report, plot_confusion_matrix, plot_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as fh:
        return fh.read(8) == PNG_MAGIC


# --------------------------------------------------------------------------- #
# classification_report
# --------------------------------------------------------------------------- #
def test_class_never_predicted():
    # class "c" has support 2 but is never predicted
    r = classification_report([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 0], ["a", "b", "c"])
    assert r["n"] == 6
    assert r["labels"] == ["a", "b", "c"]
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [2, 0, 0]]
    assert r["accuracy"] == pytest.approx(0.5)
    a, b, c = (r["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == pytest.approx((1 / 3, 0.5, 0.4, 2))
    assert (b["precision"], b["recall"], b["f1"], b["support"]) == pytest.approx((2 / 3, 1.0, 0.8, 2))
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 2)
    # c has support, so it counts in the macro mean with F1 = 0
    assert r["macro_f1"] == pytest.approx((0.4 + 0.8 + 0.0) / 3)
    assert r["weighted_f1"] == pytest.approx((0.4 * 2 + 0.8 * 2) / 6)


def test_label_never_appears_is_excluded_from_macro():
    # "d" is neither in y_true nor in y_pred
    r = classification_report([0, 1, 1, 2], [0, 1, 2, 2], ["a", "b", "c", "d"])
    assert r["confusion_matrix"] == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert r["accuracy"] == pytest.approx(0.75)
    assert r["per_class"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    b, c, d = (r["per_class"][k] for k in "bcd")
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((1.0, 0.5, 2 / 3))
    assert (c["precision"], c["recall"], c["f1"]) == pytest.approx((0.5, 1.0, 2 / 3))
    assert d == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert r["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)  # d excluded
    assert r["weighted_f1"] == pytest.approx((1 * 1 + 2 / 3 * 2 + 2 / 3 * 1) / 4)


def test_predicted_class_without_support_is_included_in_macro():
    # "c" is predicted once but never true: F1 = 0 and it counts in the macro mean
    r = classification_report([0, 0, 1], [0, 2, 1], ["a", "b", "c"])
    assert r["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert r["per_class"]["a"]["f1"] == pytest.approx(2 / 3)
    assert r["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert r["weighted_f1"] == pytest.approx((2 / 3 * 2 + 1) / 3)


def test_perfect_and_numpy_input_and_json():
    y = np.array([2, 0, 1, 1, 0], dtype=np.int64)
    r = classification_report(y, y.copy(), ["x", "y", "z"])
    assert r["accuracy"] == 1.0 and r["macro_f1"] == 1.0 and r["weighted_f1"] == 1.0
    assert r["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 1]]
    text = json.dumps(r)  # must be JSON-serialisable (no numpy scalars)
    assert json.loads(text) == r
    assert type(r["accuracy"]) is float and type(r["n"]) is int
    assert all(type(v) is int for row in r["confusion_matrix"] for v in row)


def _reference(y_true, y_pred, k):
    """Loop-based reference of the documented (scikit-learn) rules."""
    f1s, present, weighted = [], [], 0.0
    for c in range(k):
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == c and p != c)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        f1s.append(f1)
        if tp + fp + fn:
            present.append(f1)
        weighted += f1 * (tp + fn)
    acc = sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true)
    return acc, sum(present) / len(present), weighted / len(y_true), f1s


def test_matches_reference_on_random_inputs():
    rng = random.Random(0)
    for _ in range(50):
        k = rng.randint(1, 6)
        n = rng.randint(1, 40)
        y_true = [rng.randrange(k) for _ in range(n)]
        y_pred = [rng.randrange(k) for _ in range(n)]
        r = classification_report(y_true, y_pred, [f"c{i}" for i in range(k)])
        acc, macro, weighted, f1s = _reference(y_true, y_pred, k)
        assert r["accuracy"] == pytest.approx(acc)
        assert r["macro_f1"] == pytest.approx(macro)
        assert r["weighted_f1"] == pytest.approx(weighted)
        assert [r["per_class"][f"c{i}"]["f1"] for i in range(k)] == pytest.approx(f1s)
        assert np.array(r["confusion_matrix"]).sum() == n


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        classification_report([], [], ["a", "b"])
    with pytest.raises(ValueError, match="length"):
        classification_report([0, 1], [0], ["a", "b"])
    with pytest.raises(ValueError, match="outside"):
        classification_report([0, 2], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="outside"):
        classification_report([0, 1], [0, -1], ["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        classification_report([0], [0], ["a", "a"])
    with pytest.raises(ValueError, match="integer"):
        classification_report([0.5], [0], ["a", "b"])


# --------------------------------------------------------------------------- #
# plots
# --------------------------------------------------------------------------- #
def test_plot_confusion_matrix_writes_png(tmp_path):
    r = classification_report([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 0], ["a", "b", "c"])
    out = tmp_path / "cm.png"
    ret = plot_confusion_matrix(r["confusion_matrix"], r["labels"], out, title="test")
    assert os.fspath(ret) == os.fspath(out)
    assert _is_png(out)
    assert sorted(os.listdir(tmp_path)) == ["cm.png"]  # no temp files left


def test_plot_confusion_matrix_large_unnormalised(tmp_path):
    rng = np.random.default_rng(0)
    k = 40  # too many classes to annotate
    cm = rng.integers(0, 50, size=(k, k))
    out = tmp_path / "sub" / "big.png"  # folder is created
    plot_confusion_matrix(cm, [f"label {i}" for i in range(k)], out, normalize=False)
    assert _is_png(out)
    assert os.listdir(tmp_path / "sub") == ["big.png"]


def test_plot_confusion_matrix_empty_row_and_overwrite(tmp_path):
    out = tmp_path / "cm.png"
    cm = [[3, 1, 0], [0, 0, 0], [1, 0, 2]]  # class with no samples: no NaNs
    plot_confusion_matrix(cm, ["a", "b", "c"], out)
    first = out.read_bytes()
    plot_confusion_matrix(cm, ["a", "b", "c"], out, normalize=False)
    assert _is_png(out) and out.read_bytes() != first
    assert os.listdir(tmp_path) == ["cm.png"]


def test_plot_confusion_matrix_shape_mismatch(tmp_path):
    with pytest.raises(ValueError):
        plot_confusion_matrix([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "x.png")
    assert os.listdir(tmp_path) == []


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    out = tmp_path / "cm.png"
    plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], out)
    before = out.read_bytes()

    def boom(self, fh, *args, **kwargs):
        fh.write(b"\x89PNG half written")
        raise RuntimeError("crash while saving")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError):
        plot_confusion_matrix([[5, 0], [1, 1]], ["a", "b"], out)
    with pytest.raises(RuntimeError):
        plot_history([{"epoch": 1, "train_loss": 1.0}], tmp_path / "h.png")
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["cm.png"]


def test_plot_history(tmp_path):
    history = [
        {"epoch": 1, "train_loss": 1.2, "train_accuracy": 0.4, "val_loss": 1.1,
         "val_accuracy": 0.45, "val_macro_f1": 0.40, "lr": 1e-3},
        {"epoch": 2, "train_loss": 0.9, "train_accuracy": 0.6, "val_loss": 0.95,
         "val_accuracy": 0.58, "val_macro_f1": 0.55, "lr": 1e-3},
        {"epoch": 3, "train_loss": 0.7, "train_accuracy": 0.7, "lr": 5e-4},  # no val
        {"epoch": 4, "train_loss": float("nan"), "val_loss": None},
    ]
    out = tmp_path / "history.png"
    plot_history(history, out)
    assert _is_png(out)
    assert sorted(os.listdir(tmp_path)) == ["history.png"]


def test_plot_history_sparse_and_empty(tmp_path):
    plot_history([{"train_loss": 0.5}], tmp_path / "one.png")  # no epoch, no accuracy
    plot_history([], tmp_path / "empty.png")
    assert _is_png(tmp_path / "one.png") and _is_png(tmp_path / "empty.png")
    assert sorted(os.listdir(tmp_path)) == ["empty.png", "one.png"]


def test_import_is_light():
    """metrics/words must not import matplotlib, torch or wordfreq at import time.

    The module files are loaded directly so that whatever the package
    ``__init__`` imports does not interfere.
    """
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import importlib.util, sys\n"
        "for name in ('metrics', 'words'):\n"
        "    spec = importlib.util.spec_from_file_location(\n"
        "        'm_' + name, sys.argv[1] + '/rnnkit/' + name + '.py')\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "bad = [m for m in ('matplotlib', 'torch', 'wordfreq') if m in sys.modules]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, root], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
