"""Calibrated confidence: temperature scaling, ECE, the reliability diagram, abstaining."""

import json

import pytest
import torch
from typer.testing import CliRunner

import rnnkit
from rnnkit.calibration import (expected_calibration_error, fit_temperature, probabilities, reliability,
                                risk_coverage)
from rnnkit.cli import app
from rnnkit.predict import autocast


def _sampled(n=20000, temperature=2.0, seed=0):
    """Logits whose labels were drawn from softmax(logits / temperature): calibrated at exactly that T."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 4, generator=g) * 4
    y = torch.multinomial(torch.softmax(logits / temperature, 1), 1, generator=g).squeeze(1)
    return logits, y


def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at():
    for true_t in (0.5, 2.0):
        logits, y = _sampled(temperature=true_t)
        assert fit_temperature(logits, y) == pytest.approx(true_t, rel=0.05)


def test_nothing_to_fit_when_val_has_no_errors():
    logits = torch.tensor([[3.0, -1.0], [-2.0, 2.0], [0.5, 0.0]])
    y = torch.tensor([0, 1, 0])
    assert fit_temperature(logits, y) == 1.0  # else it would run to the lower bound, 0.05
    assert fit_temperature(logits, torch.tensor([0, 1, 1])) != 1.0
    multi = torch.tensor([[2.0, -2.0]])
    assert fit_temperature(multi, torch.tensor([[1.0, 0.0]])) == 1.0


def test_scaling_lowers_ece_and_keeps_every_argmax():
    logits, y = _sampled(temperature=2.0)
    t = fit_temperature(logits, y)
    before, after = probabilities(logits), probabilities(logits, t)
    assert expected_calibration_error(before, y) > 0.1
    assert expected_calibration_error(after, y) < 0.02
    assert torch.equal(before.argmax(1), after.argmax(1))


def test_ece_by_hand():
    # Two bins used: confidence 0.9 (right 1 of 2 -> gap 0.4) and 0.6 (right 2 of 2 -> gap 0.4).
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = torch.tensor([0, 1, 0, 1])
    assert expected_calibration_error(probs, y) == pytest.approx(0.4)
    table = reliability(probs, y)
    assert sum(table["count"]) == 4 and len(table["count"]) == 15


def test_multilabel_ece_counts_each_label_decision():
    probs = torch.tensor([[0.9, 0.2], [0.8, 0.7]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Decisions: conf 0.9 right, 0.8 right, 0.8 wrong, 0.7 right -> per bin |acc - conf|.
    expected = (abs(1 - 0.9) + 2 * abs(0.5 - 0.8) + abs(1 - 0.7)) / 4
    assert expected_calibration_error(probs, y) == pytest.approx(expected)


def test_risk_coverage_table():
    probs = torch.tensor([[0.95, 0.05], [0.55, 0.45], [0.7, 0.3], [0.2, 0.8]])
    y = torch.tensor([0, 1, 0, 1])
    rows = {r["threshold"]: r for r in risk_coverage(probs, y, (0.0, 0.6, 0.9, 0.99))}
    assert rows[0.0]["coverage"] == 1 and rows[0.0]["accuracy"] == 0.75
    assert rows[0.6]["answered"] == 3 and rows[0.6]["accuracy"] == 1.0
    assert rows[0.9]["coverage"] == 0.25
    assert rows[0.99]["answered"] == 0 and rows[0.99]["accuracy"] is None


def test_run_is_calibrated_and_reports_it(toy_run):
    metrics = json.loads((toy_run / "metrics.json").read_text())
    manifest = json.loads((toy_run / "run.json").read_text())
    run = rnnkit.load(toy_run)
    for split in ("val", "test"):
        cal = metrics[split]["calibration"]
        assert set(cal) == {"temperature", "ece_before", "ece_after"}
        assert 0 <= cal["ece_before"] <= 1 and 0 <= cal["ece_after"] <= 1
        assert cal["temperature"] == pytest.approx(float(run.model.temperature), abs=1e-5)
        assert metrics[split]["risk_coverage"][0]["coverage"] == 1.0
    assert "reliability.png" in manifest["files"]
    assert (toy_run / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    # predict uses the calibrated probabilities: softmax(logits / T).
    run.model.temperature.fill_(2.5)
    ids, lengths = run.vectorizer.encode_texts(["vwxyz"])
    with torch.no_grad(), autocast(run.device, run.amp):  # in the arithmetic the run predicts in
        logits = run.model(ids.long(), lengths).float()
    expected = torch.softmax(logits / 2.5, 1)[0]
    torch.testing.assert_close(run.predict_proba(["vwxyz"])[0], expected, atol=1e-6, rtol=0)


def test_temperature_is_fitted_on_val_errors(tmp_path):
    # Labels with noise: val has errors, so a temperature is fitted and saved with the weights.
    import random

    from conftest import tiny_config, write_toy_csv

    path = write_toy_csv(tmp_path / "noisy.csv", 60)
    rows = path.read_text().splitlines()
    rng = random.Random(1)
    noisy = [rows[0]] + [r.rsplit(",", 1)[0] + "," + rng.choice(["alpha", "beta", "gamma"])
                         if rng.random() < 0.3 else r for r in rows[1:]]
    path.write_text("\n".join(noisy) + "\n")
    run = rnnkit.train(tiny_config(path, tmp_path / "run", epochs=3, baseline=False), log=lambda m: None)
    cal = run.metrics["val"]["calibration"]
    assert run.metrics["val"]["accuracy"] < 1.0
    assert cal["temperature"] != 1.0 and cal["temperature"] == pytest.approx(float(run.model.temperature), abs=1e-5)
    assert cal["ece_after"] <= cal["ece_before"] + 0.02


def test_runs_saved_before_calibration_load_uncalibrated(toy_run):
    run = rnnkit.load(toy_run)
    state = {k: v for k, v in run.model.state_dict().items() if k != "temperature"}
    run.model.load_state_dict(state)
    assert float(run.model.temperature) == 1.0


def test_abstain_below_labels_uncertain_but_keeps_probabilities(toy_run):
    run = rnnkit.load(toy_run)
    # Letters of no class's alphabet: the toy model is least sure of these.
    sure = run.predict(["vwxyz"], top_k=2)[0]
    assert sure.probability < 0.99
    unsure = run.predict(["vwxyz"], top_k=2, abstain_below=sure.probability + 1e-3)[0]
    assert unsure.label == "uncertain"
    assert unsure.probability == sure.probability and unsure.top == sure.top
    assert run.predict(["vwxyz"], abstain_below=sure.probability - 1e-3)[0].label == sure.label
    with pytest.raises(rnnkit.RnnkitError, match="abstain_below"):
        run.predict(["abcdefg"], abstain_below=1.5)


def test_cli_abstain_and_risk_coverage(toy_run):
    runner = CliRunner()
    unsure, sure = (p.probability for p in rnnkit.load(toy_run).predict(["vwxyz", "abcdefg"]))
    assert unsure < sure
    cut = f"{(unsure + sure) / 2:.6f}"
    r = runner.invoke(app, ["predict", str(toy_run), "vwxyz", "abcdefg", "--abstain-below", cut, "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert rows[0]["label"] == "uncertain" and rows[0]["top"][0]["probability"] == pytest.approx(unsure, abs=1e-6)
    assert rows[1]["label"] == "alpha"
    r = runner.invoke(app, ["predict", str(toy_run), "vwxyz", "--abstain-below", cut])
    assert r.output.startswith("vwxyz\tuncertain\t")
    r = runner.invoke(app, ["predict", str(toy_run), "abcdefg", "--abstain-below", "0"])
    assert r.exit_code == 2 and "abstain_below must be a probability" in r.output
    r = runner.invoke(app, ["evaluate", str(toy_run)])
    assert r.exit_code == 0, r.output
    assert "abstain below  coverage  accuracy" in r.output and "calibration error (ECE" in r.output
    r = runner.invoke(app, ["evaluate", str(toy_run), "--json"])
    report = json.loads(r.output)
    assert [row["threshold"] for row in report["risk_coverage"]][:2] == [0.0, 0.5]
    coverages = [row["coverage"] for row in report["risk_coverage"]]
    assert coverages == sorted(coverages, reverse=True)


def test_abstain_refuses_what_it_cannot_mean():
    from rnnkit.predict import check_abstain

    check_abstain(0.8, ["pos", "neg"])
    with pytest.raises(rnnkit.RnnkitError, match="single-label runs"):
        check_abstain(0.8, ["a", "b"], multilabel=True)
    with pytest.raises(rnnkit.RnnkitError, match="class named 'uncertain'"):
        check_abstain(0.8, ["certain", "uncertain"])
    for bad in (0, 1.5, True, float("nan"), "0.8"):
        with pytest.raises(rnnkit.RnnkitError, match=r"probability in \(0, 1\]"):
            check_abstain(bad)
