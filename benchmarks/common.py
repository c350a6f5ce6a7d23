"""Shared bits of the benchmark scripts: machine description and result files."""

import json
import os
import platform
import subprocess
import time
from pathlib import Path


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True).stdout.strip()
    except OSError:
        pass
    return info


def gemm_peak(dtype, device, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n`` matrix product ``a @ b`` in ``dtype``, best of ``repeats``: how fast
    this machine multiplies right now (a shared box drifts by 20% or more within an hour)."""
    import torch

    device = torch.device(device)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * n ** 3 / best / 1e9


def run_scores(run) -> dict:
    """A finished run's validation and test accuracy and macro-F1, and the epochs it ran (the sweeps' columns)."""
    m = run.metrics
    return {"val": m["val"]["accuracy"], "val_f1": m["val"]["macro_f1"], "test": m["test"]["accuracy"],
            "test_f1": m["test"]["macro_f1"], "epochs": m["epochs_run"]}


def save(name: str, result: dict, out_dir: str = "benchmarks/results") -> Path:
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "machine": machine(), **result}
    dest = path / f"{name}.json"
    dest.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return dest
