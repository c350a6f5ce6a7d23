"""The hybrid (``--hybrid``): the RNN mixed with its linear baseline, chosen on val, saved and predicted with."""

import json
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import rnnkit
from rnnkit.cli import app
from rnnkit.errors import RnnkitError
from rnnkit.hybrid import Hybrid, LinearNgramModel, _log_softmax

from conftest import tiny_config


def sentences(n=240, seed=0):
    rng = random.Random(seed)
    words = {0: "good great fine nice lovely".split(), 1: "bad awful poor dull boring".split(),
             2: "red blue green pink gray".split()}
    filler = "the a film was and it so very".split()
    y = [i % 3 for i in range(n)]
    texts = [" ".join(rng.choice(words[c] if rng.random() < 0.4 else filler) for _ in range(rng.randint(3, 9)))
             for c in y]
    return texts, np.array(y)


def test_the_linear_model_computes_scikit_learns_tfidf_and_svm_and_survives_saving(tmp_path):
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    from rnnkit.baseline import WORD_PATTERN

    texts, y = sentences()
    model = LinearNgramModel.fit(texts[:200], y[:200], 3, "char 1-3 + words 1-2", C=0.3)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, dtype=np.float32)
    word = TfidfVectorizer(analyzer="word", token_pattern=WORD_PATTERN, ngram_range=(1, 2), sublinear_tf=True,
                           dtype=np.float32)
    train = sparse.hstack([char.fit_transform(texts[:200]), word.fit_transform(texts[:200])], format="csr")
    held_out = sparse.hstack([char.transform(texts[200:]), word.transform(texts[200:])], format="csr")
    assert abs(model.features(texts[200:]) - held_out).max() < 1e-6
    svm = LinearSVC(C=0.3, random_state=0, max_iter=2000).fit(train, y[:200])
    np.testing.assert_allclose(model.scores(texts[200:]), svm.decision_function(held_out), atol=1e-5)

    rnn = torch.softmax(torch.randn(40, 3), 1)
    hybrid = Hybrid.choose(model, rnn, model.scores(texts[200:]), y[200:])
    hybrid.save(tmp_path)
    again = Hybrid.load(tmp_path)
    assert again.weight == hybrid.weight and again.temperature == hybrid.temperature
    torch.testing.assert_close(again.mix(rnn, texts[200:]), hybrid.mix(rnn, texts[200:]))
    assert Hybrid.load(tmp_path / "nothing-here") is None


def test_two_classes_get_the_svms_one_score_as_two_columns():
    texts, y = sentences()
    keep = y < 2
    texts2, y2 = [t for t, k in zip(texts, keep) if k], y[keep]
    model = LinearNgramModel.fit(texts2, y2, 2, "words 1-2", C=1.0)
    scores = model.scores(texts2)
    assert scores.shape == (len(texts2), 2)
    np.testing.assert_allclose(scores[:, 0], -scores[:, 1])
    assert (scores.argmax(1) == y2).mean() > 0.8


def test_the_mix_is_chosen_on_val_and_never_below_either_model_there():
    texts, y = sentences()
    model = LinearNgramModel.fit(texts[:200], y[:200], 3, "words 1-2", C=1.0)
    val_texts, y_val = texts[200:], y[200:]
    scores = model.scores(val_texts)

    def val_accuracy(hybrid, rnn, linear_scores):
        return (hybrid._mixed(rnn.numpy(), linear_scores).argmax(1) == y_val).mean()

    rng = np.random.default_rng(0)
    half_right = torch.softmax(torch.from_numpy(rng.normal(size=(len(y_val), 3))).float(), 1)
    half_right[::2] = torch.nn.functional.one_hot(torch.from_numpy(y_val[::2]), 3).float() * 0.6 + 0.4 / 3
    noise = rng.normal(size=scores.shape).astype(np.float32)
    for rnn, linear_scores in ((half_right, noise), (half_right, scores), (torch.full((len(y_val), 3), 1 / 3), scores)):
        hybrid = Hybrid.choose(model, rnn, linear_scores, y_val)
        assert 0.0 <= hybrid.weight <= 1.0
        mixed = val_accuracy(hybrid, rnn, linear_scores)
        assert mixed >= (rnn.argmax(1).numpy() == y_val).mean() - 1e-12  # weight 1, the RNN alone, was a choice
        assert mixed >= (linear_scores.argmax(1) == y_val).mean() - 1e-12  # and so was weight 0
    # An RNN that knows nothing: the linear model decides every text.
    clueless = torch.full((len(y_val), 3), 1 / 3)
    hybrid = Hybrid.choose(model, clueless, scores, y_val)
    probs = hybrid.mix(clueless, val_texts)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(y_val), dtype=probs.dtype))
    assert (probs.argmax(1).numpy() == scores.argmax(1)).all()
    np.testing.assert_allclose(_log_softmax(np.array([[0.0, np.log(3.0)]])), np.log([[0.25, 0.75]]), atol=1e-12)
    # Without errors on val a temperature would grow without end: it stays 1, as the RNN's does.
    from rnnkit.hybrid import _best_temperature

    separable = np.eye(3)[y_val] * 2.0
    assert _best_temperature(separable, y_val) == 1.0
    assert _best_temperature(separable[::-1].copy(), y_val) != 1.0


def test_a_hybrid_run_reports_saves_and_predicts_with_the_mix(toy_csv, tmp_path, monkeypatch):
    import rnnkit.hybrid

    # A mix for certain: on the toy data validation may choose the RNN alone (weight 1) on some CPUs.
    monkeypatch.setattr(rnnkit.hybrid, "WEIGHTS", np.array([0.5]))
    logs = []
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "run", epochs=2, hybrid=True), log=logs.append)
    entry = run.metrics["hybrid"]
    assert {"val", "test", "weight", "temperature", "linear_temperature", "settings", "seconds"} <= set(entry)
    assert entry["settings"] == run.metrics["baseline"]["settings"]
    assert any(l.startswith("hybrid (RNN weight") for l in logs)
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {"hybrid.json", "hybrid.safetensors"} <= set(manifest["files"])

    loaded = rnnkit.load(tmp_path / "run")
    assert loaded.hybrid is not None and loaded.hybrid.weight == entry["weight"]
    splits = rnnkit.load_dataset(str(toy_csv))
    report = loaded.evaluate(splits.test.texts, splits.test.labels)
    assert report["accuracy"] == pytest.approx(entry["test"]["accuracy"])
    assert report["rnn_alone"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    shown = CliRunner().invoke(app, ["evaluate", str(tmp_path / "run"), "--input", str(toy_csv)])
    assert shown.exit_code == 0 and "the RNN alone: accuracy" in shown.output
    probs = loaded.predict_proba(splits.test.texts)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(probs), dtype=probs.dtype))
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from rnnkit.serve import Limits, create_app

    texts = list(splits.test.texts[:3])
    with TestClient(create_app(tmp_path / "run", Limits())) as client:
        assert client.get("/health").json()["hybrid"]["weight"] == entry["weight"]
        served = client.post("/predict", json={"texts": texts, "top_k": 1}).json()["predictions"]
    for answer, local in zip(served, loaded.predict(texts, top_k=1)):
        assert answer["label"] == local.label and answer["probability"] == pytest.approx(local.probability, abs=1e-5)
    loaded.hybrid = None  # the RNN alone: the run's headline numbers
    assert loaded.evaluate(splits.test.texts, splits.test.labels)["accuracy"] == pytest.approx(
        run.metrics["test"]["accuracy"])


def test_a_manifest_that_drops_the_hybrid_is_refused_and_an_export_says_it_holds_the_rnn_alone(toy_csv, tmp_path,
                                                                                               monkeypatch):
    import rnnkit.hybrid

    monkeypatch.setattr(rnnkit.hybrid, "WEIGHTS", np.array([0.5]))
    rnnkit.train(tiny_config(toy_csv, tmp_path / "run", epochs=1, hybrid=True), log=lambda m: None)
    if __import__("importlib").util.find_spec("onnxruntime") is not None:
        result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "onnx")])
        assert result.exit_code == 0, result.output
        assert "holds the RNN alone" in result.output
        assert json.loads((tmp_path / "onnx" / "export.json").read_text())["hybrid_not_exported"] is True
    path = tmp_path / "run" / "run.json"
    manifest = json.loads(path.read_text())
    for dropped in ("hybrid.json", "hybrid.safetensors"):  # either file unlisted would load unchecked
        damaged = json.loads(json.dumps(manifest))
        del damaged["files"][dropped]
        path.write_text(json.dumps(damaged))
        with pytest.raises(RnnkitError, match="does not list both hybrid.json and hybrid.safetensors"):
            rnnkit.load(tmp_path / "run")


def test_hybrid_settings_that_cannot_work_are_one_line_errors(toy_csv, tmp_path):
    with pytest.raises(RnnkitError, match="needs the baseline"):
        rnnkit.Config(hybrid=True, baseline=False).validate()
    with pytest.raises(RnnkitError, match="softmax head"):
        rnnkit.Config(hybrid=True, head="binary").validate()
    result = CliRunner().invoke(app, ["train", "--dataset", str(toy_csv), "--hybrid", "--no-baseline",
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "needs the baseline" in result.output
    assert not (tmp_path / "x").exists()
    multi = tmp_path / "multi.csv"
    multi.write_text("text,labels\n" + "".join(f"{w}{i},{'a|b' if i % 2 else 'a'}\n"
                                               for i in range(40) for w in ("abc", "xyz")), encoding="utf-8")
    with pytest.raises(RnnkitError, match="single-label"):
        rnnkit.train(tiny_config(multi, tmp_path / "m", epochs=1, hybrid=True, label_sep="|"), log=lambda m: None)
    assert not (tmp_path / "m").exists()


def test_when_val_picks_the_rnn_alone_nothing_is_saved_and_the_run_predicts_as_any_other(toy_csv, tmp_path,
                                                                                         monkeypatch):
    import rnnkit.hybrid

    monkeypatch.setattr(rnnkit.hybrid, "WEIGHTS", np.array([1.0]))  # as if validation had chosen weight 1
    logs = []
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "run", epochs=1, hybrid=True), log=logs.append)
    entry = run.metrics["hybrid"]
    assert entry["weight"] == 1.0 and entry["saved"] is False
    assert entry["test"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    assert any("[the RNN alone: weight 1" in l for l in logs)
    assert not (tmp_path / "run" / "hybrid.json").exists() and run.hybrid is None


def test_a_hybrid_that_fails_leaves_the_trained_rnn_saved(toy_csv, tmp_path, monkeypatch):
    import rnnkit.hybrid
    from rnnkit.baseline import behind_note

    def broken(*args, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(rnnkit.hybrid, "build", broken)
    logs = []
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "run", epochs=1, hybrid=True), log=logs.append)
    assert any(l.startswith("hybrid: failed (MemoryError: out of memory)") for l in logs)
    assert "hybrid" not in run.metrics and run.hybrid is None and (tmp_path / "run" / "run.json").exists()
    behind = {"val": {"accuracy": 0.70, "n": 400}}
    base = {"val": {"accuracy": 0.7675, "n": 400}}
    assert "--hybrid" in behind_note(behind, base)
    assert "--hybrid" not in behind_note({**behind, "hybrid": {}}, base)  # a run that has one is not told of it
