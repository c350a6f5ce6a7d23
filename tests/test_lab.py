"""rnnkit lab: each experiment runs in quick mode, writes JSON + PNG, and shows what it claims."""

import json
import subprocess
import sys

import pytest

from rnnkit.errors import RnnkitError
from rnnkit.lab import EXPERIMENTS, run_experiment
from rnnkit.lab.report import build_report


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory):
    """Every experiment once in quick mode, shared by the tests below (about a minute in all)."""
    out = tmp_path_factory.mktemp("lab")
    results = {name: run_experiment(name, out, quick=True, log=lambda m: None) for name in EXPERIMENTS}
    return out, results


def test_every_experiment_writes_json_and_png(lab_dir):
    out, results = lab_dir
    for name, result in results.items():
        saved = json.loads((out / f"{name}.json").read_text())
        assert saved["experiment"] == name and saved["mode"] == "quick"
        assert saved["command"].startswith(f"rnnkit lab {name}")
        assert saved["findings"], name
        for figure in saved["figures"]:
            assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not list(out.glob("*.tmp*")), "no half-written files left behind"


def test_basics_shapes_and_equalities(lab_dir):
    r = lab_dir[1]["basics"]
    assert r["shapes"]["input (batch_first=True)"] == [3, 5, 4]
    assert r["shapes"]["output (batch_first=True)"] == [3, 5, 2]
    assert r["shapes"]["output (batch_first=False)"] == [5, 3, 2]
    assert r["shapes"]["h_n (batch_first=True)"] == [1, 3, 2]
    assert r["all_as_expected"], [c for c in r["claims"] if c["observed"] != c["expected"]]
    assert max(r["scratch_vs_torch_max_abs_diff"].values()) < 1e-6


def test_gradients_vanish_for_elman_but_not_after_training_lstm_gru(lab_dir):
    ratios = lab_dir[1]["gradients"]["ratio_far_to_near"]
    assert ratios["Elman RNN (tanh)"]["init"] < 1e-4
    assert ratios["Elman RNN (tanh)"]["trained"] < 1e-4
    for gated in ("LSTM", "GRU"):
        assert ratios[gated]["trained"] > 1e3 * ratios["Elman RNN (tanh)"]["trained"], gated


def test_memory_short_sequences_are_learned_and_attention_holds(lab_dir):
    r = lab_dir[1]["memory"]
    rows = r["results"]
    assert {row["variant"] for row in rows} == set(r["variants"])
    for row in rows:
        if row["length"] == 5:
            assert row["test_accuracy"] > 0.9, row
    assert r["at_longest"]["Elman RNN + attention"] > 0.9
    assert r["task"]["chance"] == 0.25


def test_memory_task_label_is_the_key_token():
    from rnnkit.lab.memory import NUM_CLASSES, make_task
    import torch

    ids, labels = make_task(50, 20, torch.Generator().manual_seed(1))
    assert ids.shape == (50, 21)
    assert torch.equal(ids[:, 10], labels + 1)
    noise = torch.cat([ids[:, :10], ids[:, 11:]], dim=1)
    assert bool((noise > NUM_CLASSES).all()), "only the key position holds a class token"


def test_dropout_sites_and_one_layer_no_op(lab_dir):
    r = lab_dir[1]["dropout"]
    mech = r["mechanics"]
    assert mech["zero_share"]["train"]["embedding_dropout"] == pytest.approx(0.3, abs=0.05)
    assert mech["zero_share"]["train"]["head_dropout"] == pytest.approx(0.5, abs=0.1)
    assert mech["zero_share"]["eval"]["embedding_dropout"] == 0
    assert mech["zero_share"]["eval"]["head_dropout"] == 0
    assert mech["zero_share"]["eval"]["repeat_forward_identical"]
    assert not mech["zero_share"]["train"]["repeat_forward_identical"]
    one, two = mech["lstm_dropout_0.5_vs_0"][1], mech["lstm_dropout_0.5_vs_0"][2]
    assert one["identical"] and one["torch_warning"]
    assert not two["identical"]
    assert r["one_layer_inter_layer_dropout_is_a_no_op"]


def test_same_seed_same_numbers(tmp_path):
    a = run_experiment("gradients", tmp_path / "a", quick=True, log=lambda m: None)
    b = run_experiment("gradients", tmp_path / "b", quick=True, log=lambda m: None)
    assert a["results"] == b["results"]


def test_report_gathers_every_experiment(lab_dir):
    out, _ = lab_dir
    report = build_report(out).read_text()
    for name in EXPERIMENTS:
        assert f"## {name}:" in report
        assert f"]({name}.png)" in report
    assert "| Elman RNN |" in report


def test_report_on_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RnnkitError, match="no lab results"):
        build_report(tmp_path)


def test_unknown_experiment_is_a_clear_error(tmp_path):
    with pytest.raises(RnnkitError, match="unknown lab experiment"):
        run_experiment("attention", tmp_path)


def test_cli_lab_basics_and_report(tmp_path):
    out = tmp_path / "lab"
    res = subprocess.run([sys.executable, "-m", "rnnkit", "lab", "basics", "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "h_n" in res.stdout and (out / "basics.png").exists()
    res = subprocess.run([sys.executable, "-m", "rnnkit", "lab", "report", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and (out / "report.md").exists()
    res = subprocess.run([sys.executable, "-m", "rnnkit", "lab", "report", str(tmp_path / "nothing")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.startswith("error: lab folder not found")


def test_basics_hidden_size_need_not_equal_the_number_of_classes(lab_dir):
    study = lab_dir[1]["basics"]["hidden_size_study"]
    rows = {(r["hidden_size"], r["head"]): r for r in study["rows"]}
    # A head maps 8 hidden units to 3 classes, and more units learn the task better than 1.
    assert rows[(8, True)]["test_accuracy"] > max(0.8, rows[(1, True)]["test_accuracy"] + 0.2)
    # Read directly, tanh caps each logit at 1: no probability passes e / (e + 2/e).
    assert rows[(3, False)]["highest_probability"] <= study["probability_cap"] + 1e-4 < 0.79
    assert rows[(8, True)]["highest_probability"] > 0.9


def test_explain_bidirectional_looks_at_the_start_unidirectional_cannot(lab_dir):
    r = lab_dir[1]["explain"]
    uni, bi = r["attribution_share_by_fifth"]["unidirectional"], r["attribution_share_by_fifth"]["bidirectional"]
    # The first letter decides the class: the backward pass reads it last, the forward pass first.
    assert r["test_accuracy"]["bidirectional"] > 0.95
    assert bi[0] > 0.5 and bi[0] > uni[0] + 0.3
    example = r["examples"][1]
    assert example["bidirectional"]["label"] == "beta"
    assert max(example["bidirectional"]["tokens"], key=lambda ts: ts[1])[0] == "i"
