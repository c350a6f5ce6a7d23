"""The user's own data: raw files with no flags, tokenizer=auto, the binary head, multi-label runs."""

import json
import random

import pytest
import torch

import rnnkit
from rnnkit.errors import RnnkitError
from rnnkit.metrics import multilabel_report, tune_thresholds
from rnnkit.model import BinaryLoss, SequenceClassifier
from rnnkit.tokenizers import choose_tokenizer

from conftest import ALPHABETS, make_rows, tiny_config

WORDS = {"ham": "see you at home later ok lor call me when free".split(),
         "spam": "win free prize cash now claim urgent text reply award".split()}


def write_sms(path, n=300, seed=0):
    """label<TAB>message lines, no header: the SMS spam collection's raw layout."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            label = "spam" if rng.random() < 0.35 else "ham"
            f.write(label + "\t" + " ".join(rng.choice(WORDS[label]) for _ in range(rng.randint(3, 9))) + "\n")
    return path


# --- tokenizer=auto --------------------------------------------------------------

@pytest.mark.parametrize("texts,tokenizer", [
    (["영화 정말 재밌어요", "별로였다 지루함"] * 5, "kiwi"),
    (["東京の天気は晴れ", "今日はいい日だ"] * 5, "char"),
    (["Nakamura", "Schmidt", "O'Neill"] * 5, "char"),
    (["see you at home later", "win a free prize now, reply"] * 5, "sentencepiece"),
])
def test_auto_tokenizer_follows_the_texts(texts, tokenizer):
    settings, why = choose_tokenizer(texts)
    assert settings["tokenizer"] == tokenizer and why.startswith(tokenizer)


def test_raw_file_trains_with_no_flags_and_saves_what_auto_chose(tmp_path):
    path = write_sms(tmp_path / "SMSSpamCollection")
    lines = []
    cfg = rnnkit.Config(dataset=str(path), out=str(tmp_path / "run"), epochs=2, batch_size=4, embedding_dim=16,
                        hidden_size=16, head_hidden=16, progress=False)
    run = rnnkit.train(cfg, log=lines.append)
    log = "\n".join(lines)
    assert "no header" in log and "label = col1" in log and "text = col2" in log
    assert "auto: tokenizer = sentencepiece" in log and "auto: max_len" in log
    assert "time: about" in log and "per epoch" in log  # forecast from the first batches
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["tokenizer"] == "sentencepiece" and saved["max_len"] >= 5
    assert "sentencepiece" in saved["extra"]["auto"]["tokenizer"]
    assert run.metrics["test"]["accuracy"] > 0.9
    assert rnnkit.load(tmp_path / "run").predict(["claim your free cash prize now"])[0].label == "spam"


def test_python_pairs_train_and_the_run_says_where_its_data_came_from(tmp_path):
    pairs = [(text, label) for text, label in make_rows(60)]
    run = rnnkit.train(tiny_config("ignored", tmp_path / "run"), data=pairs)
    assert run.config.dataset == "<data>" and run.config.tokenizer == "char"
    assert run.metrics["test"]["accuracy"] > 0.7


# --- the binary head ----------------------------------------------------------------

def test_binary_head_is_one_logit_whose_softmax_pair_is_its_sigmoid():
    torch.manual_seed(0)
    model = SequenceClassifier(20, 2, embedding_dim=8, hidden_size=8, head_hidden=8, head="binary").eval()
    assert model.fc2.out_features == 1
    ids, lengths = torch.randint(1, 20, (4, 6)), torch.tensor([6, 3, 1, 5])
    logits = model(ids, lengths)
    z = logits[:, 1]
    assert torch.equal(logits[:, 0], torch.zeros(4))
    torch.testing.assert_close(model.probabilities(logits)[:, 1], torch.sigmoid(z))
    y = torch.tensor([1, 0, 1, 1])
    torch.testing.assert_close(BinaryLoss()(logits, y),
                               torch.nn.functional.binary_cross_entropy_with_logits(z, y.float()))
    with pytest.raises(RnnkitError, match="head=binary needs exactly two classes"):
        SequenceClassifier(20, 3, head="binary")


def test_binary_head_trains_and_reports_like_any_run(tmp_path):
    path = write_sms(tmp_path / "sms.tsv")
    run = rnnkit.train(tiny_config(path, tmp_path / "run", head="binary", epochs=3, tokenizer="whitespace"))
    assert run.model.fc2.out_features == 1 and run.metrics["test"]["accuracy"] > 0.9
    probs = run.predict_proba(["win cash now", "see you later"])
    torch.testing.assert_close(probs.sum(1), torch.ones(2))


# --- multi-label -----------------------------------------------------------------------

def write_multilabel(path, n=400, seed=0):
    """Which alphabets a text draws from: one or two of alpha/beta/gamma, '|'-joined."""
    rng = random.Random(seed)
    names = list(ALPHABETS)
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,labels\n")
        for _ in range(n):
            chosen = sorted(rng.sample(names, 1 if rng.random() < 0.6 else 2))
            letters = "".join(ALPHABETS[c] for c in chosen)
            f.write("".join(rng.choice(letters) for _ in range(rng.randint(6, 14))) + "," + "|".join(chosen) + "\n")
    return path


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory):
    """A multi-label run on the alphabet data, and its training log."""
    tmp = tmp_path_factory.mktemp("multi")
    path = write_multilabel(tmp / "multi.csv")
    lines = []
    run = rnnkit.train(tiny_config(path, tmp / "run", epochs=6, hidden_size=32, head_hidden=32), log=lines.append)
    return run, lines


def test_multilabel_run_tunes_thresholds_and_predicts_every_label_above_them(multi_run):
    run, lines = multi_run
    tmp_path = run.path.parent
    assert any("multi-label" in line for line in lines) and any("thresholds (tuned on val)" in l for l in lines)
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert {"micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"} <= set(test)
    assert set(test["per_class"]) == set(ALPHABETS) and "threshold" in test["per_class"]["beta"]
    assert test["micro_f1"] > 0.8 and test["accuracy"] == test["subset_accuracy"]
    assert "baseline" in run.metrics and "micro_f1" in run.metrics["baseline"]["test"]
    saved = json.loads((tmp_path / "run" / "vectorizer.json").read_text())
    assert saved["multilabel"] and len(saved["thresholds"]) == 3
    assert not (tmp_path / "run" / "confusion_matrix.png").exists()

    loaded = rnnkit.load(tmp_path / "run")
    pred = loaded.predict(["abcabcabcopqopq"], top_k=3)[0]
    assert {l for l, _ in pred.labels} == {"alpha", "gamma"}
    assert [p for _, p in pred.labels] == sorted((p for _, p in pred.labels), reverse=True)
    assert "labels" in pred.to_dict() and len(pred.top) == 3
    report = loaded.evaluate(["abcdabcd", "hijkopqr"], [("alpha",), ("beta", "gamma")])
    assert report["n"] == 2 and "micro_f1" in report


def test_multilabel_run_serves_and_exports_its_labels(multi_run, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("onnxruntime")
    import numpy as np
    from fastapi.testclient import TestClient

    from rnnkit.export import export_run, load_onnx
    from rnnkit.serve import create_app

    run, _ = multi_run
    text = "abcabcabcopqopq"
    with TestClient(create_app(run.path)) as client:
        assert client.get("/health").json()["multilabel"] is True
        served = client.post("/predict", json={"texts": [text], "top_k": 2}).json()["predictions"][0]
    local = rnnkit.load(run.path).predict([text], top_k=2)[0].to_dict()
    assert served["labels"] == local["labels"] and [l["label"] for l in served["labels"]] == ["alpha", "gamma"]
    info = export_run(run.path, tmp_path / "onnx", "onnx")
    assert info["multilabel"] and info["thresholds"] == run.vectorizer.thresholds
    fp32 = rnnkit.load(run.path, precision="fp32")  # an export computes in fp32
    np.testing.assert_allclose(load_onnx(tmp_path / "onnx").predict_proba([text]),
                               fp32.predict_proba([text]).numpy(), atol=1e-5)


def test_binary_head_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from rnnkit.export import export_model, max_difference

    torch.manual_seed(3)
    model = SequenceClassifier(30, 2, embedding_dim=8, hidden_size=6, head_hidden=8, head="binary").eval()
    assert max_difference(model, export_model(model, tmp_path / "m.onnx", "onnx"), "onnx") < 1e-4


def test_multilabel_metrics_and_threshold_tuning():
    y = [[1, 0], [1, 1], [0, 1], [0, 0]]
    probs = [[0.9, 0.2], [0.6, 0.35], [0.1, 0.4], [0.2, 0.1]]
    report = multilabel_report(y, probs, [0.5, 0.5], ["a", "b"])
    assert report["per_class"]["b"]["recall"] == 0 and report["subset_accuracy"] == 0.5
    assert report["micro_f1"] == pytest.approx(2 * 2 / (4 + 2))
    th = tune_thresholds(y, probs)
    assert th[0] == 0.5 and 0.15 <= th[1] <= 0.35  # b's positives sit at 0.35 and 0.4, its negatives below 0.2
    assert multilabel_report(y, probs, th, ["a", "b"])["subset_accuracy"] == 1.0


# --- bad input from the command line ----------------------------------------------------

@pytest.mark.parametrize("content,flags,match", [
    ("text\tlabel\n", [], "has a header but no rows"),
    ("text\tlabel\nhi there\tx\nhow are\tyou\tz\n", [], "line 3 has 3 fields but the header has 2"),
    ("text,labels\nabc,x|y\nabd,x\nabe,\n", [], "row 4 has an empty 'labels'"),
    ("text,a,b\nabc,1,0\n", ["--label-columns", "a,c"], "no column 'c' named in --label-columns"),
    ("text,label\n" + "".join(f"t{i} u{i},{'xyz'[i % 3]}\n" for i in range(60)), ["--head", "binary"],
     "head=binary needs exactly two classes"),
])
def test_bad_own_data_exits_2_and_writes_nothing(tmp_path, content, flags, match):
    from typer.testing import CliRunner

    from rnnkit.cli import app

    data = tmp_path / "data.txt"
    data.write_text(content, encoding="utf-8")
    out = tmp_path / "run"
    argv = ["train", "--dataset", str(data), "--out", str(out), "--epochs", "1", "--no-progress", *flags]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and match in errors[0], result.output
    assert not out.exists()
