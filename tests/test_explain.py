"""Explanations: Integrated Gradients and occlusion scores per token, from Python, the CLI and HTTP."""

import json

import pytest
import torch
from typer.testing import CliRunner

import rnnkit
from rnnkit.cli import app
from rnnkit.explain import integrated_gradients, occlusion


def _probability(run, text, label):
    # Explanations compute in fp32 (IG's gradients add up to the probability change only there), so
    # they give the probabilities of the run loaded in fp32, whatever arithmetic it predicts in.
    fp32 = rnnkit.load(run.path, precision="fp32")
    return float(fp32.predict_proba([text])[0, fp32.labels.index(label)])


def test_one_score_per_token_as_the_tokenizer_split_the_text(toy_run):
    run = rnnkit.load(toy_run)
    e = run.explain(["abcdefg", "hijklmn"])
    assert [t for t, _ in e[0].tokens] == list("abcdefg")
    assert e[0].label == "alpha" and e[1].label == "beta"
    assert e[0].probability == pytest.approx(_probability(run, "abcdefg", "alpha"), abs=1e-5)
    d = e[0].to_dict()
    assert set(d) >= {"text", "label", "probability", "tokens"} and d["tokens"][0]["token"] == "a"


def test_letters_of_the_class_score_above_foreign_letters(toy_run):
    # o, p, q are gamma's letters: they must count against alpha, alpha's own letters for it.
    run = rnnkit.load(toy_run)
    e = run.explain("abcdopq")[0]
    assert e.label == "alpha"
    scores = [s for _, s in e.tokens]
    assert max(scores[4:]) < 0 < min(scores[:4]), e.tokens
    # Occlusion: deleting a class letter loses more of alpha than deleting a foreign one.
    e = run.explain("abcopq", method="occlusion")[0]
    scores = [s for _, s in e.tokens]
    assert e.label == "alpha" and max(scores[:3]) > max(scores[3:]) + 0.1, e.tokens


def test_ig_is_complete_and_refines_until_it_is(toy_run):
    run = rnnkit.load(toy_run)
    model = run.model
    ids, _ = run.vectorizer.encode_texts(["abqcdez"])
    ids = ids.long()
    e = run.explain("abqcdez", tolerance=1e-3)[0]
    with torch.no_grad():
        x = model.embed(ids)
        baseline = x.clone()
        baseline[:, 1:-1] = 0  # every token zeroed, <bos> and <eos> kept
        lengths = torch.tensor([ids.shape[1]])
        full = model.probabilities(model(ids, lengths, embedded=x))[0, 0]
        empty = model.probabilities(model(ids, lengths, embedded=baseline))[0, 0]
    # The shown tokens alone carry P(text) - P(baseline): the markers are not varied, so score 0.
    assert sum(s for _, s in e.tokens) == pytest.approx(float(full - empty) + e.delta, abs=1e-5)
    assert abs(e.delta) <= 1e-3, (e.delta, e.steps)
    scores, _ = integrated_gradients(model, ids, 0, 32, positions=range(1, ids.shape[1] - 1))
    assert scores[0] == 0 and scores[-1] == 0


def test_long_texts_run_in_bounded_chunks(toy_run):
    # More rows than one chunk holds, for both methods: the same scores as computed in one piece.
    from rnnkit import explain as ex

    run = rnnkit.load(toy_run)
    text = "abcdefg" * 12
    whole = {m: [s for _, s in run.explain(text, method=m, steps=64)[0].tokens] for m in ("ig", "occlusion")}
    chunk, ex.CHUNK = ex.CHUNK, 16
    try:
        for method, expected in whole.items():
            got = [s for _, s in run.explain(text, method=method, steps=64)[0].tokens]
            assert got == pytest.approx(expected, abs=1e-5), method
    finally:
        ex.CHUNK = chunk


@pytest.fixture(scope="module")
def captum_attr():
    return pytest.importorskip("captum.attr")


def test_ig_equals_captums_integrated_gradients(toy_run, captum_attr):
    run = rnnkit.load(toy_run)
    model = run.model
    ids, _ = run.vectorizer.encode_texts(["hijqklmn"])
    ids = ids.long()
    n = ids.shape[1]
    x = model.embed(ids).detach()
    baseline = x.clone()
    baseline[:, 1:-1] = 0

    def forward(e):
        return model.probabilities(model(ids.expand(len(e), -1), torch.full((len(e),), n), embedded=e))

    theirs, their_delta = captum_attr.IntegratedGradients(forward).attribute(
        x, baselines=baseline, target=1, n_steps=50, method="gausslegendre", return_convergence_delta=True)
    ours, our_delta = integrated_gradients(model, ids, 1, 50, positions=range(1, n - 1))
    torch.testing.assert_close(ours, theirs.sum(-1)[0], atol=1e-5, rtol=1e-4)
    assert our_delta == pytest.approx(float(their_delta), abs=1e-5)


def test_occlusion_is_the_probability_lost_by_deleting_each_token(toy_run):
    run = rnnkit.load(toy_run)
    e = run.explain("abcxdef", method="occlusion")[0]
    full = _probability(run, "abcxdef", "alpha")
    for i, (token, score) in enumerate(e.tokens):
        without = "abcxdef"[:i] + "abcxdef"[i + 1:]
        assert score == pytest.approx(full - _probability(run, without, "alpha"), abs=1e-5), token


def test_target_truncation_and_errors(toy_run, tmp_path):
    run = rnnkit.load(toy_run)
    e = run.explain("abcdefg", target="gamma")[0]
    assert e.label == "alpha" and e.target == "gamma"
    assert e.target_probability == pytest.approx(_probability(run, "abcdefg", "gamma"), abs=1e-5)
    with pytest.raises(rnnkit.RnnkitError, match="unknown target label 'delta'.*alpha, beta, gamma"):
        run.explain("abc", target="delta")
    with pytest.raises(rnnkit.RnnkitError, match="method must be one of ig, occlusion"):
        run.explain("abc", method="lime")
    with pytest.raises(rnnkit.RnnkitError, match="empty"):
        run.explain(["  "])
    with pytest.raises(rnnkit.RnnkitError, match="no texts given to explain"):
        run.explain([])
    run.vectorizer.max_len = 4
    e = run.explain("abcdefg")[0]
    assert [t for t, _ in e.tokens] == list("abcd") and e.truncated == 3


def test_cli_explain_json_and_terminal(toy_run):
    runner = CliRunner()
    r = runner.invoke(app, ["explain", str(toy_run), "abcdefg", "opqrstu", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["label"] for row in rows] == ["alpha", "gamma"]
    assert [t["token"] for t in rows[1]["tokens"]] == list("opqrstu")
    r = runner.invoke(app, ["explain", str(toy_run), "abcdefg", "--method", "occlusion"])
    assert r.exit_code == 0 and "alpha" in r.output and "abcdefg" in r.output and "strongest:" in r.output
    r = runner.invoke(app, ["explain", str(toy_run), "abc", "--target", "nope"])
    assert r.exit_code == 2 and "unknown target label" in r.output
    r = runner.invoke(app, ["explain", str(toy_run)])
    assert r.exit_code == 2 and "give texts to explain" in r.output


def test_http_explain(toy_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from rnnkit.serve import Limits, create_app

    with TestClient(create_app(toy_run, Limits(max_texts=2, max_chars=20), abstain_below=0.99)) as c:
        r = c.post("/explain", json={"texts": ["hijklmn"]})
        assert r.status_code == 200, r.text
        e = r.json()["explanations"][0]
        local = rnnkit.load(toy_run).explain("hijklmn")[0]
        assert e["label"] == "beta" and [t["token"] for t in e["tokens"]] == list("hijklmn")
        assert [t["score"] for t in e["tokens"]] == pytest.approx([s for _, s in local.tokens], abs=1e-5)
        assert c.post("/explain", json={"texts": ["abc"], "method": "occlusion"}).json()["explanations"][0][
            "method"] == "occlusion"
        for body, status, words in [({"texts": ["a"] * 3}, 413, "limit is 2"), ({"texts": ["a" * 21]}, 413, "limit"),
                                    ({"texts": [" "]}, 422, "empty"), ({"texts": ["abc"], "target": "x"}, 422,
                                                                       "unknown target"),
                                    ({"texts": ["abc"], "method": "lime"}, 422, '"method": "ig"')]:
            r = c.post("/explain", json=body)
            assert r.status_code == status and words in r.json()["detail"], (body, r.text)
        # The server's abstain default, and a request's own.
        assert c.post("/predict", json={"texts": ["vwxyz"]}).json()["predictions"][0]["label"] == "uncertain"
        p = c.post("/predict", json={"texts": ["abcdefg"], "abstain_below": 0.2}).json()["predictions"][0]
        assert p["label"] == "alpha"
        assert c.get("/health").json()["abstain_below"] == 0.99


def test_refinement_leaves_an_accurate_first_pass_alone_and_fixes_a_poor_one(toy_run):
    from rnnkit.explain import adaptive_integrated_gradients

    run = rnnkit.load(toy_run)
    ids, _ = run.vectorizer.encode_texts(["abqcdez"])
    ids, positions = ids.long(), range(1, ids.shape[1] - 1)
    plain, gap = integrated_gradients(run.model, ids, 0, 4, positions=positions)
    # Tolerance above the 4-point gap: nothing to refine, the plain rule's scores come back.
    scores, delta, used = adaptive_integrated_gradients(run.model, ids, 0, 4, abs(gap) + 1e-6, positions=positions)
    assert used == 4 and delta == pytest.approx(gap) and torch.allclose(scores, plain)
    # A tight tolerance: the halved pieces bring the gap under it, with far fewer than 512 points.
    scores, delta, used = adaptive_integrated_gradients(run.model, ids, 0, 4, 1e-4, positions=positions)
    assert abs(delta) <= 1e-4 < abs(gap) and 4 < used < 512


def test_a_run_without_markers_explains_every_character(tmp_path):
    # The demo's words model trains without <bos>/<eos>: every position is a character, so every one is
    # scored and varied, and the scores still add up to P(text) - P(all zero).
    from conftest import tiny_config, write_toy_csv

    rnnkit.train(tiny_config(write_toy_csv(tmp_path / "toy.csv"), tmp_path / "run", epochs=4, add_bos_eos=False))
    run = rnnkit.load(tmp_path / "run")
    ids, _ = run.vectorizer.encode_texts(["abqcdez"])
    assert ids.shape[1] == 7
    e = run.explain("abqcdez", tolerance=1e-3)[0]
    assert [t for t, _ in e.tokens] == list("abqcdez") and e.label == "alpha"
    model = run.model
    with torch.no_grad():
        x = model.embed(ids.long())
        lengths = torch.tensor([7])
        full = model.probabilities(model(ids.long(), lengths, embedded=x))[0, 0]
        empty = model.probabilities(model(ids.long(), lengths, embedded=torch.zeros_like(x)))[0, 0]
    assert sum(s for _, s in e.tokens) == pytest.approx(float(full - empty) + e.delta, abs=1e-5)
    assert abs(e.delta) <= 1e-3
    assert e.probability == pytest.approx(_probability(run, "abqcdez", "alpha"), abs=1e-5)
