"""Load test of `rnnkit serve` on loopback: N concurrent clients for S seconds, then single-text latency.

    python benchmarks/loadtest.py runs/surnames --data-dir ../shared/data --clients 32 --seconds 30

Each client sends one text per request (texts from the run's dataset, test split) and waits for
the answer before sending the next. Reports requests/s, p50/p90/p99 latency and errors, then the
latency of one text at a time: over HTTP (sequential requests) and in process (`Run.predict`).
Server and clients share this machine's cores; the numbers include that contention.
"""

import argparse
import asyncio
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def hammer(url: str, texts: list, clients: int, seconds: float) -> dict:
    import httpx

    latencies, errors, statuses = [], 0, {}
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def one_client(seed: int):
            nonlocal errors
            rng = random.Random(seed)
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    r = await client.post("/predict", json={"texts": [rng.choice(texts)], "top_k": 3})
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code != 200:
                        errors += 1
                        continue
                except Exception:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        elapsed = time.perf_counter() - began
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(latencies) + errors,
            "errors": errors, "statuses": {str(k): v for k, v in statuses.items()},
            "requests_per_second": round(len(latencies) / elapsed, 1),
            "latency_ms": {q: round(1000 * percentile(latencies, p), 2)
                           for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}}


def sequential(url: str, texts: list, n: int) -> dict:
    import httpx

    lat = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(n):
            started = time.perf_counter()
            r = client.post("/predict", json={"texts": [texts[i % len(texts)]]})
            r.raise_for_status()
            lat.append(time.perf_counter() - started)
    return {"requests": n, "p50_ms": round(1000 * percentile(lat, 0.5), 2),
            "p99_ms": round(1000 * percentile(lat, 0.99), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--data-dir")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--single", type=int, default=300, help="sequential single-text requests")
    parser.add_argument("--tag", default=None)
    parser.add_argument("--server-threads", type=int, default=None, help="passed to rnnkit serve --threads")
    args = parser.parse_args()

    import httpx
    import torch

    import rnnkit
    from rnnkit.data import load_dataset

    run = rnnkit.load(args.run_dir)
    texts = load_dataset(run.config.dataset, args.data_dir, progress=False).test.texts[:2000]
    # In-process latency of one text: tokenizing + one forward pass, no HTTP.
    torch.set_num_threads(1)
    for t in texts[:20]:
        run.predict([t])
    lat = []
    for t in texts[:500]:
        started = time.perf_counter()
        run.predict([t])
        lat.append(time.perf_counter() - started)
    in_process = {"texts": len(lat), "p50_ms": round(1000 * percentile(lat, 0.5), 3),
                  "p99_ms": round(1000 * percentile(lat, 0.99), 3), "threads": 1}

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "rnnkit", "serve", args.run_dir, "--port", str(port)]
    if args.server_threads:
        command += ["--threads", str(args.server_threads)]
    server = subprocess.Popen(command,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                if server.poll() is not None:
                    raise SystemExit(server.stderr.read())
                time.sleep(0.1)
        single_http = sequential(url, texts, args.single)
        load = asyncio.run(hammer(url, texts, args.clients, args.seconds))
        health = httpx.get(url + "/health").json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    load["texts_per_forward_pass"] = round(health["texts"] / max(health["batches"], 1), 2)
    name = f"loadtest-{args.tag or run.config.dataset}"
    save(name, {"command": "benchmarks/loadtest.py " + " ".join(sys.argv[1:]), "run": Path(args.run_dir).name,
                "model": {k: getattr(run.config, k) for k in ("dataset", "tokenizer", "cell", "hidden_size",
                                                             "bidirectional", "num_layers")},
                "load": load, "single_text_http": single_http, "single_text_in_process": in_process})
    if load["errors"]:
        raise SystemExit(f"{load['errors']} requests failed")


if __name__ == "__main__":
    main()
