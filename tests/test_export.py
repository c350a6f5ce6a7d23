"""rnnkit export: ONNX and TorchScript graphs equal PyTorch on variable-length batches."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from rnnkit.errors import RnnkitError
from rnnkit.export import PaddedClassifier, example_batch, export_model, max_difference
from rnnkit.padded import reverse_within_length
from rnnkit.model import SequenceClassifier
from rnnkit.predict import predict_proba

pytest.importorskip("onnxruntime")


def test_reverse_within_length_keeps_padding_in_place():
    x = torch.arange(8.0).view(2, 4, 1)
    out = reverse_within_length(x, torch.tensor([4, 2]))
    assert out.squeeze(-1).tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]
    assert torch.equal(reverse_within_length(out, torch.tensor([4, 2])), x), "an involution"


@pytest.mark.parametrize("backend", ["torch", "scratch"])
@pytest.mark.parametrize("pooling", ["last", "maxmean", "attention"])
def test_padded_classifier_equals_packed_model(backend, pooling):
    torch.manual_seed(0)
    for cell in ("rnn", "lstm", "gru"):
        for bidirectional in (False, True):
            model = SequenceClassifier(40, 3, cell=cell, backend=backend, embedding_dim=8, hidden_size=5,
                                       num_layers=2, bidirectional=bidirectional, pooling=pooling).eval()
            ids, lengths = example_batch(40, batch=9, max_len=13, seed=3)
            with torch.no_grad():
                got = PaddedClassifier(model)(ids, lengths)
            torch.testing.assert_close(got, predict_proba(model, ids, lengths), atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_onnx_runtime_equals_pytorch(tmp_path, cell, bidirectional):
    # Each cell x direction with a different pooling, so every pooling goes through onnxruntime.
    pooling = {("rnn", False): "last", ("rnn", True): "attention", ("lstm", False): "maxmean",
               ("lstm", True): "last", ("gru", False): "attention", ("gru", True): "maxmean"}[cell, bidirectional]
    torch.manual_seed(1)
    # The GRU models carry hashed n-gram embeddings: their integer hashing must export too.
    model = SequenceClassifier(50, 4, cell=cell, embedding_dim=8, hidden_size=6, num_layers=2,
                               bidirectional=bidirectional, pooling=pooling,
                               ngram_order=3 if cell == "gru" else 1, ngram_buckets=97).eval()
    model.temperature.fill_(1.7)  # a calibrated model: the exported probabilities must carry it
    path = export_model(model, tmp_path / "m.onnx", "onnx")
    assert max_difference(model, path, "onnx", trials=5) < 1e-4
    assert not model.training, "export leaves the caller's model alone"


@pytest.mark.parametrize("cell,pooling", [("lstm", "last"), ("gru", "attention"), ("rnn", "mean")])
def test_torchscript_equals_pytorch(tmp_path, cell, pooling):
    torch.manual_seed(2)
    model = SequenceClassifier(50, 4, cell=cell, embedding_dim=8, hidden_size=6, bidirectional=True,
                               pooling=pooling).eval()
    path = export_model(model, tmp_path / "m.pt", "torchscript")
    assert max_difference(model, path, "torchscript", trials=5) < 1e-4


@pytest.mark.parametrize("backend", ["torch", "scratch"])
def test_lstm_with_projections_exports_to_torchscript_and_says_why_not_onnx(tmp_path, backend):
    torch.manual_seed(3)
    model = SequenceClassifier(50, 4, cell="lstm", backend=backend, embedding_dim=8, hidden_size=6, proj_size=3,
                               num_layers=2, bidirectional=True, pooling="last").eval()
    path = export_model(model, tmp_path / "m.pt", "torchscript")
    assert max_difference(model, path, "torchscript", trials=3) < 1e-4
    with pytest.raises(RnnkitError, match="ONNX has no LSTM with projections.*--format torchscript"):
        export_model(model, tmp_path / "m.onnx", "onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_export_run_folder_and_use_it_without_pytorch_model_code(toy_run, tmp_path):
    from rnnkit.export import export_run, load_onnx
    import rnnkit

    info = export_run(toy_run, tmp_path / "onnx", "onnx")
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["export.json", "model.onnx", "vectorizer.json"]
    assert info["labels"] == ["alpha", "beta", "gamma"] and info["max_abs_difference_vs_pytorch"] < 1e-4
    clf = load_onnx(tmp_path / "onnx")
    texts = ["abcdefg", "hijklmn", "opqrstu", "ab"]
    run = rnnkit.load(toy_run, precision="fp32")  # an ONNX model computes in fp32
    expected = run.predict_proba(texts).numpy()
    # The export carries the calibration: its probabilities are the calibrated ones predict gives.
    assert info["temperature"] == pytest.approx(float(run.model.temperature))
    np.testing.assert_allclose(clf.predict_proba(texts), expected, atol=1e-5)
    assert clf.predict_proba("abcdefg").shape == (1, 3)  # one string is one text, not its characters
    with pytest.raises(RnnkitError, match="not empty"):
        export_run(toy_run, tmp_path / "onnx", "onnx")


def test_cli_export_and_bad_format(toy_run, tmp_path):
    res = subprocess.run([sys.executable, "-m", "rnnkit", "export", str(toy_run), "--format", "torchscript",
                          "--out", str(tmp_path / "ts")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "ts" / "export.json").read_text())["format"] == "torchscript"
    res = subprocess.run([sys.executable, "-m", "rnnkit", "export", str(toy_run), "--format", "tflite",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "onnx, torchscript" in res.stderr
    assert not (tmp_path / "x").exists(), "nothing half-written"
    (tmp_path / "file").write_text("x")
    res = subprocess.run([sys.executable, "-m", "rnnkit", "export", str(toy_run), "--out", str(tmp_path / "file")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "is a file" in res.stderr
