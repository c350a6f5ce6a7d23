import json

import pytest
import torch

import rnnkit
from rnnkit.errors import RnnkitError

from conftest import tiny_config


@pytest.fixture
def trained(toy_run):
    return toy_run


def test_predict_top_k_probabilities(trained):
    run = rnnkit.load(trained)
    preds = run.predict(["abcdefg", "hijklmn", "opqrstu"], top_k=2)
    assert [p.label for p in preds] == ["alpha", "beta", "gamma"]
    for p in preds:
        assert len(p.top) == 2 and p.top[0][1] >= p.top[1][1] and p.top[0] == (p.label, p.probability)
    probs = run.predict_proba(["abc", "hij"])
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    assert len(run.predict("abc", top_k=99)[0].top) == 3  # capped at the number of classes


def test_prediction_is_independent_of_batch_company(trained):
    run = rnnkit.load(trained)
    texts = ["a", "abcdefgabcdefgabcdefg", "hij", "opq" * 9]
    together = run.predict_proba(texts)
    alone = torch.cat([run.predict_proba([t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)


def test_bad_prediction_input(trained):
    run = rnnkit.load(trained)
    with pytest.raises(RnnkitError, match="text #2 is empty"):
        run.predict(["abc", "  "])
    with pytest.raises(RnnkitError, match="no texts"):
        run.predict([])
    with pytest.raises(RnnkitError, match="top_k"):
        run.predict(["abc"], top_k=0)
    with pytest.raises(RnnkitError, match="top_k"):
        run.predict(["abc"], top_k=True)
    with pytest.raises(RnnkitError, match="2 texts but 1 labels"):
        run.evaluate(["abc", "hij"], ["alpha"])


def test_evaluate_and_unknown_label(trained):
    run = rnnkit.load(trained)
    report = run.evaluate(["abcdef", "hijklm"], ["alpha", "beta"])
    assert report["accuracy"] == 1.0
    with pytest.raises(RnnkitError, match="label 'delta'.*not seen in training"):
        run.evaluate(["abc"], ["delta"])


def test_tampered_or_missing_files_are_refused(trained, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    rnnkit.load(copy)
    vec = copy / "vectorizer.json"
    vec.write_text(vec.read_text().replace('"alpha"', '"omega"'))
    with pytest.raises(RnnkitError, match="vectorizer.json does not match its checksum"):
        rnnkit.load(copy)
    shutil.copy(trained / "vectorizer.json", vec)
    (copy / "model.safetensors").unlink()
    with pytest.raises(RnnkitError, match="model.safetensors is missing"):
        rnnkit.load(copy)
    with pytest.raises(RnnkitError, match="run folder not found"):
        rnnkit.load(tmp_path / "nothing")
    # Dropping a file from the manifest must not let an edited copy of it load unchecked.
    shutil.copy(trained / "model.safetensors", copy / "model.safetensors")
    manifest = json.loads((copy / "run.json").read_text())
    del manifest["files"]["model.safetensors"]
    (copy / "run.json").write_text(json.dumps(manifest))
    with pytest.raises(RnnkitError, match="does not list model.safetensors"):
        rnnkit.load(copy)


def test_run_folder_holds_no_pickle(trained):
    for path in trained.iterdir():
        head = path.read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"\x80\x02", f"{path.name} looks like a pickle"
    assert json.loads((trained / "metrics.json").read_text())["test"]["accuracy"] > 0.8


def test_predictions_use_the_arithmetic_the_run_trained_in(trained, monkeypatch):
    from rnnkit import predict

    run = rnnkit.load(trained)
    assert run.amp == predict.autocast_dtype(run.config, torch.device("cpu"))
    texts = ["abcdefg", "hijklmn", "opqrstu", "abqcdez"]
    bf16, fp32 = rnnkit.load(trained, precision="bf16"), rnnkit.load(trained, precision="fp32")
    assert bf16.amp is torch.bfloat16 and fp32.amp is None
    p16, p32 = bf16.predict_proba(texts), fp32.predict_proba(texts)
    assert p16.dtype == p32.dtype == torch.float32
    assert not torch.equal(p16, p32)  # really computed in bf16 ...
    torch.testing.assert_close(p16, p32, atol=2e-2, rtol=0)  # ... to bf16's rounding
    monkeypatch.setattr(predict, "cpu_has_native_bf16", lambda: False)
    assert rnnkit.load(trained, precision="auto").amp is None  # bf16 would be emulated: fp32
    with pytest.raises(RnnkitError, match="precision must be one of auto, fp32, bf16"):
        rnnkit.load(trained, precision="fp16")


def test_a_run_predicts_in_what_its_training_recorded_not_in_what_this_machine_would_pick(trained, monkeypatch):
    from rnnkit import predict

    cpu, auto = torch.device("cpu"), rnnkit.Config(precision="auto")
    recorded = json.loads((trained / "metrics.json").read_text())["precision"]
    assert recorded == predict.precision_name(predict.autocast_dtype(rnnkit.load(trained).config, cpu))
    monkeypatch.setattr(predict, "cpu_has_native_bf16", lambda: True)
    # "auto" trained in fp32 on a CPU without bf16 stays fp32 on one with it, and the reverse below.
    assert predict.inference_dtype(auto, cpu, None, "fp32") is None
    assert predict.inference_dtype(auto, cpu, None, "bf16") is torch.bfloat16
    assert predict.inference_dtype(auto, cpu, None, None) is torch.bfloat16  # older runs: resolved here
    assert predict.inference_dtype(auto, cpu, "fp32", "bf16") is None  # asked for: as asked
    monkeypatch.setattr(predict, "cpu_has_native_bf16", lambda: False)
    assert predict.inference_dtype(auto, cpu, None, "bf16") is None  # emulated bf16 would be slow: fp32
    assert predict.inference_dtype(auto, cpu, None, "fp16") is None  # fp16 autocast is for GPUs


def test_cli_precision_option(trained):
    from typer.testing import CliRunner

    from rnnkit.cli import app

    # bf16, not fp32: a machine without native bf16 predicts in fp32 anyway, so only asking for bf16
    # shows that the flag reached the model everywhere.
    bf16, fp32 = (float(rnnkit.load(trained, precision=p).predict_proba(["abqcdez"]).max()) for p in ("bf16", "fp32"))
    assert abs(bf16 - fp32) > 1e-5  # the two are told apart at the tolerance below
    out = CliRunner().invoke(app, ["predict", str(trained), "abqcdez", "--json", "--precision", "bf16"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.splitlines()[0])["probability"] == pytest.approx(bf16, abs=1e-6)
    bad = CliRunner().invoke(app, ["evaluate", str(trained), "--precision", "fp16"])
    assert bad.exit_code == 2 and "precision must be one of auto, fp32, bf16" in bad.output


def test_evaluate_reads_many_texts_through_the_token_cache(trained, monkeypatch):
    from rnnkit import predict

    run = rnnkit.load(trained)
    texts, labels = ["abcdefg", "hijklmn", "opqrstu", "abcxyz"] * 3, ["alpha", "beta", "gamma", "alpha"] * 3
    monkeypatch.setattr(predict, "CACHED_FROM", 10**9)
    direct = run.evaluate(texts, labels)
    monkeypatch.setattr(predict, "CACHED_FROM", 5)
    calls = []
    batch = run.vectorizer.tokenizer.batch
    monkeypatch.setattr(run.vectorizer.tokenizer, "batch", lambda t: calls.append(len(t)) or batch(t))
    assert run.evaluate(texts, labels) == direct
    assert run.evaluate(texts, labels) == direct and calls == [12]  # the second time from the cache
    assert run.evaluate(texts, labels, cache_tokens=False) == direct and calls == [12, 12]  # asked not to
    with pytest.raises(RnnkitError, match="text #2 is empty"):
        run.evaluate(["abc", " "] * 3, ["alpha"] * 6)


@pytest.mark.parametrize("flag, expected", [([], None), (["--no-cache-tokens"], False), (["--cache-tokens"], True)])
def test_cli_evaluate_passes_the_token_cache_choice(trained, monkeypatch, flag, expected):
    from typer.testing import CliRunner

    from rnnkit import predict
    from rnnkit.cli import app

    seen = []
    real = predict.Run.evaluate
    monkeypatch.setattr(predict.Run, "evaluate",
                        lambda self, *a, cache_tokens=None, **k: seen.append(cache_tokens) or real(self, *a, **k))
    out = CliRunner().invoke(app, ["evaluate", str(trained), *flag])
    assert out.exit_code == 0, out.output
    assert seen == [expected]
