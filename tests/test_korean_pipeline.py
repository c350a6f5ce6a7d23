"""Korean sentence classification end to end, on a tiny NSMC-format corpus (fast tokenizers only)."""

import json
import random
import subprocess
import sys

import pytest

import rnnkit
from rnnkit.data import load_dataset

from conftest import tiny_config

POS = ["정말 재밌어요", "최고의 영화", "감동적이다 ㅋㅋㅋㅋㅋ", "배우 연기 좋아요", "또 보고 싶다", "추천합니다!!!!"]
NEG = ["시간 낭비", "최악의 영화", "지루하다", "돈이 아깝다", "별로였어요", "보다가 잤다"]


@pytest.fixture
def nsmc_root(tmp_path):
    rng = random.Random(0)
    root = tmp_path / "data"
    (root / "nsmc").mkdir(parents=True)
    for name, n in (("ratings_train.txt", 400), ("ratings_test.txt", 100)):
        lines = ["id\tdocument\tlabel"]
        for i in range(n):
            label = i % 2
            words = rng.sample(POS if label else NEG, 2)
            lines.append(f"{i}\t{' '.join(words)}\t{label}")
        lines.append(f"{n}\t\t1")  # the original files have a few empty documents
        (root / "nsmc" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_nsmc_loader_skips_empty_documents_and_names_labels(nsmc_root):
    splits = load_dataset("nsmc", str(nsmc_root))
    assert len(splits.test) == 100 and len(splits.train) + len(splits.val) == 400
    assert any("skipped 1 rows with empty text" in n for n in splits.notes)


@pytest.mark.parametrize("tokenizer", ["syllable", "sentencepiece"])
def test_train_and_predict_positive_negative(nsmc_root, tmp_path, tokenizer):
    cfg = tiny_config("nsmc", tmp_path / "run", data_dir=str(nsmc_root), tokenizer=tokenizer, sp_vocab_size=60,
                      squeeze_repeats=2, epochs=4, max_len=40)
    run = rnnkit.train(cfg)
    assert run.labels == ["negative", "positive"]
    assert run.metrics["test"]["accuracy"] > 0.9
    vec = json.loads((run.path / "vectorizer.json").read_text())
    assert vec["tokenizer"]["name"] == tokenizer
    if tokenizer == "sentencepiece":
        assert vec["tokenizer"]["model"]  # the trained model travels inside the run folder
    loaded = rnnkit.load(run.path)
    assert [p.label for p in loaded.predict(["정말 재밌어요 최고", "최악 지루하다"])] == ["positive", "negative"]


def test_cli_prints_positive_with_probability(nsmc_root, tmp_path):
    cfg = tiny_config("nsmc", tmp_path / "run", data_dir=str(nsmc_root), tokenizer="syllable", epochs=4)
    rnnkit.train(cfg)
    # Only positive phrases: "이 영화 정말 재밌어요" shares 영화 with a negative one, and a 4-epoch toy model's
    # answer to it turned with the CPU (negative on an Intel Xeon with AMX, positive on an AMD EPYC).
    res = subprocess.run([sys.executable, "-m", "rnnkit", "predict", str(tmp_path / "run"), "정말 재밌어요 또 보고 싶다"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text, top = res.stdout.strip().split("\t")
    label, prob = top.split()
    assert label == "positive" and 0.5 < float(prob) <= 1.0


def test_char_branch_trains_predicts_explains_and_exports(nsmc_root, tmp_path):
    from rnnkit.export import export_run, load_onnx
    from rnnkit.tokenizers import CHARS

    # The NSMC default's pieces: two layers with one dropout mask per review, and adversarial training.
    cfg = tiny_config("nsmc", tmp_path / "run", data_dir=str(nsmc_root), tokenizer="whitespace", char_branch=8,
                      pooling="maxmean", adversarial=0.1, epochs=4, max_len=60, baseline=False, num_layers=2,
                      rnn_dropout=0.2, locked_dropout=True)
    said = []
    run = rnnkit.train(cfg, log=said.append)
    assert any("character BiLSTM of 8" in line for line in said if line.startswith("model:"))
    assert run.metrics["test"]["accuracy"] > 0.9
    assert json.loads((run.path / "vectorizer.json").read_text())["tokenizer"]["append_chars"] is True
    loaded = rnnkit.load(run.path, precision="fp32")
    assert int(loaded.model.char_separator) == loaded.vectorizer.vocab.index(CHARS)
    assert [p.label for p in loaded.predict(["정말 재밌어요 최고", "최악 지루하다"])] == ["positive", "negative"]
    # One score per token, the characters included; together they are the probability the text adds.
    e = loaded.explain("정말 재밌어요", tolerance=1e-3)[0]
    assert [t for t, _ in e.tokens] == ["정말", "재밌어요", CHARS, "정", "말", "▁", "재", "밌", "어", "요"]
    assert e.tokens[2][1] == 0 and any(abs(s) > 1e-4 for _, s in e.tokens[3:])
    assert abs(e.delta) <= 1e-3
    info = export_run(run.path, tmp_path / "onnx", "onnx")
    assert info["config"]["char_branch"] == 8 and info["max_abs_difference_vs_pytorch"] < 1e-4
    texts = ["정말 재밌어요", "시간 낭비 최악의 영화", "또"]
    np = pytest.importorskip("numpy")
    np.testing.assert_allclose(load_onnx(tmp_path / "onnx").predict_proba(texts), loaded.predict_proba(texts).numpy(),
                               atol=1e-5)
