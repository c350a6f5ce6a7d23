"""rnnkit serve: the JSON API, its limits and error answers, batching, and the CLI."""

import asyncio
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit.serve import Limits, create_app  # noqa: E402


@pytest.fixture
def client(toy_run):
    with TestClient(create_app(toy_run, Limits(max_texts=4, max_chars=50))) as c:
        yield c


def test_health_and_openapi(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["labels"] == ["alpha", "beta", "gamma"]
    assert h["limits"] == {"max_texts": 4, "max_chars": 50}
    assert 0 < h["baseline_test_accuracy"] <= 1
    assert h["hybrid"] is None  # a run trained without --hybrid predicts with the RNN alone
    schema = client.get("/openapi.json").json()
    assert "/predict" in schema["paths"]
    assert client.get("/docs").status_code == 200


def test_predict_matches_python_api(client, toy_run):
    r = client.post("/predict", json={"texts": ["abcdefg", "hijklmn", "opqrstu"], "top_k": 2})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["label"] for p in preds] == ["alpha", "beta", "gamma"]
    local = rnnkit.load(toy_run).predict(["abcdefg", "hijklmn", "opqrstu"], top_k=2)
    for p, q in zip(preds, local):
        assert len(p["top"]) == 2
        assert p["probability"] == pytest.approx(q.probability, abs=1e-5)
        assert p["top"][0]["label"] == p["label"]


def test_bad_requests_get_clear_answers_and_server_keeps_serving(client):
    cases = [
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 422, "invalid request"),
        (dict(json={"text": ["abc"]}), 422, "texts"),
        (dict(json={"texts": "abc"}), 422, "texts"),
        (dict(json={"texts": []}), 422, "empty"),
        (dict(json={"texts": ["abc"], "top_k": 0}), 422, "top_k"),
        (dict(json={"texts": ["abc"] * 5}), 413, "limit is 4"),
        (dict(json={"texts": ["a" * 51]}), 413, "limit is 50"),
        (dict(json={"texts": ["   "]}), 422, "empty"),
        (dict(content=b'{"texts": ["ab\\ud800"]}', headers={"content-type": "application/json"}), 422, "Unicode"),
        (dict(content=b'{"texts": ["' + b"a" * 2_000_000 + b'"]}', headers={"content-type": "application/json"}),
         413, "too large"),
    ]
    for kwargs, status, words in cases:
        r = client.post("/predict", **kwargs)
        assert r.status_code == status, (kwargs, r.text)
        assert words in r.json()["detail"], (kwargs, r.json())
        assert client.post("/predict", json={"texts": ["abc"]}).status_code == 200


def test_concurrent_requests_share_forward_passes(toy_run):
    import httpx

    app = create_app(toy_run, Limits(max_wait_ms=20))

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                texts = [f"{'abcdefg'[i % 7:]}x" for i in range(40)]
                answers = await asyncio.gather(*(c.post("/predict", json={"texts": [t]}) for t in texts))
        return texts, answers

    texts, answers = asyncio.run(main())
    assert all(a.status_code == 200 for a in answers)
    batcher = app.state.batcher
    assert batcher.texts == 40 and batcher.batches < 40 / 2, "requests were batched together"
    local = rnnkit.load(toy_run).predict(texts)
    assert [a.json()["predictions"][0]["label"] for a in answers] == [p.label for p in local]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_binds_loopback_and_answers(toy_run):
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rnnkit", "serve", str(toy_run), "--port", str(port),
                             "--precision", "bf16"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        r = None
        for _ in range(300):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    pytest.fail(proc.stdout.read())
                time.sleep(0.1)
        assert r is not None, "the server did not answer within 30 s"
        assert r.json()["status"] == "ok"
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"texts": ["hijklmn"], "top_k": 3})
        assert r.json()["predictions"][0]["label"] == "beta"
        # bf16: the one precision that differs from the default on every machine (without native bf16
        # the default is fp32), so matching it shows that --precision reached the model.
        bf16, fp32 = (float(rnnkit.load(toy_run, precision=p).predict_proba(["hijklmn"])[0].max())
                      for p in ("bf16", "fp32"))
        assert abs(bf16 - fp32) > 1e-5
        assert r.json()["predictions"][0]["probability"] == pytest.approx(bf16, abs=1e-6)
        assert "text/html" in httpx.get(f"http://127.0.0.1:{port}/").headers["content-type"]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "127.0.0.1" in out


def test_cli_serve_refuses_a_missing_run(tmp_path):
    res = subprocess.run([sys.executable, "-m", "rnnkit", "serve", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error:")


def test_serve_refuses_a_tampered_run(toy_run, tmp_path):
    import shutil

    from rnnkit.errors import RnnkitError

    bad = tmp_path / "run"
    shutil.copytree(toy_run, bad)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(RnnkitError, match="model.safetensors"):
        create_app(bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(RnnkitError, match="model.safetensors"):
        create_app(bad)


def test_app_survives_restart_and_runs_without_lifespan(toy_run):
    app = create_app(toy_run)
    for _ in range(2):  # startup, shutdown, startup again: the batcher restarts
        with TestClient(app) as c:
            assert c.post("/predict", json={"texts": ["abc"]}).status_code == 200
    bare = TestClient(create_app(toy_run))  # no `with`: no lifespan events
    assert bare.post("/predict", json={"texts": ["hij"]}).json()["predictions"][0]["label"] == "beta"


def test_unknown_fields_chunked_bodies_and_explain_token_limit(toy_run):
    """A misspelled option is a 422, a chunked body past the limit a 413, and /explain has a token budget."""
    from fastapi.testclient import TestClient

    from rnnkit.serve import Limits, create_app

    app = create_app(toy_run, Limits(max_texts=4, max_chars=40, max_explain_tokens=30))
    with TestClient(app) as client:
        res = client.post("/predict", json={"texts": ["abc"], "topk": 3})
        assert res.status_code == 422 and "topk" in res.json()["detail"]
        assert client.post("/predict", json={"texts": ["abc"], "top_k": "3"}).status_code == 422
        res = client.post("/predict", content=b'{"texts": ["abc"]}',  # curl -d without a content-type header
                          headers={"content-type": "application/x-www-form-urlencoded"})
        assert res.status_code == 422 and "content-type: application/json" in res.json()["detail"]

        def chunks():  # no Content-Length: the server has to count
            yield b'{"texts": ["abc"], "pad": "'
            for _ in range(40):
                yield b"a" * 10_000
            yield b'"}'

        res = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert res.status_code == 413 and "too large" in res.json()["detail"]
        res = client.post("/explain", json={"texts": ["abcdefghij" * 4] * 4})
        assert res.status_code == 413 and "/explain takes at most 30" in res.json()["detail"]
        assert client.post("/explain", json={"texts": ["abcdefg"]}).status_code == 200
