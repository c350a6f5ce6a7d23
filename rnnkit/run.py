"""The run folder on disk: atomic writes, the manifest, and resumable checkpoints.

A finished run folder holds::

    config.json        the resolved Config
    vectorizer.json    tokenizer settings, token and label vocabularies
    model.safetensors  the best weights (by the monitored validation metric)
    text_vectors.safetensors  with text_vectors set: the pretrained piece table and its tokenizer
    metrics.json       {"val": {...}, "test": {"accuracy", "macro_f1", ...}}
    history.jsonl      one line per epoch, appended as training goes
    confusion_matrix.png, history.png, reliability.png (calibration before/after temperature scaling)
    run.json           the manifest, written last: file sizes and sha256 sums

No file is ever pickled: weights are safetensors, everything else is JSON.
A folder without ``run.json`` is an unfinished run (resume it); a file whose
checksum no longer matches the manifest makes loading refuse the run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

from .data import sha256_of as sha256_file
from .errors import RnnkitError

MANIFEST = "run.json"
FORMAT_VERSION = 1
CHECKPOINT = "checkpoint"
LOADED_FILES = ("config.json", "vectorizer.json", "model.safetensors")
"""What loading a run reads: each must be listed, with its checksum, in the manifest."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; a run folder should be as readable as any
# other file this user writes (so a shared run can be served or loaded by others).
_FILE_MODE = 0o666 & ~_umask()


def check_out_folder(out: Path, flag: str = "--out") -> None:
    """Refuse an output folder that cannot be created, or exists and is not empty, before any work starts."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RnnkitError(f"{flag} {out} is a file; give a folder to create")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).exists() and not (out / CHECKPOINT).exists() and (out / "config.json").exists():
            raise RnnkitError(f"output folder {out} holds a run stopped before its first epoch ended (nothing to "
                              f"resume); delete it (rm -r {out}) or choose another {flag}")
        raise RnnkitError(f"output folder {out} is not empty; choose another {flag}"
                          + (f", or continue it with --resume {out}" if (out / CHECKPOINT).exists() else ""))
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RnnkitError(f"cannot create {flag} {out}: {parent} is a file; choose another {flag}")
    try:  # a probe says more than permission bits (root in /proc, read-only mounts, full disks)
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".rnnkit-probe-"))
    except OSError as exc:
        raise RnnkitError(f"cannot create {flag} {out}: {exc.strerror.lower()} in {parent}; "
                          f"choose another {flag}") from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + rename, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8"))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: Optional[dict] = None) -> None:
    from safetensors.torch import save

    # safetensors refuses shared or strided storage; cloning contiguous copies is cheap at our sizes.
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(path, save(flat, metadata={k: str(v) for k, v in (metadata or {}).items()}))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise RnnkitError(f"cannot read weights {path}: {exc}; the file is damaged, re-train or restore it") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RnnkitError(f"{path} is missing; the run folder is incomplete") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RnnkitError(f"{path} is not valid JSON ({exc}); the run folder is damaged") from None


def write_manifest(run_dir: Path, files: list[str], info: dict) -> None:
    entries = {name: {"bytes": (run_dir / name).stat().st_size, "sha256": sha256_file(run_dir / name)}
               for name in files}
    atomic_write_json(run_dir / MANIFEST, {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": entries,
        **info,
    })


def verify_run(run_dir: Path) -> dict:
    """Check a finished run folder against its manifest; return the manifest."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RnnkitError(f"run folder not found: {run_dir}")
    if not (run_dir / MANIFEST).exists():
        if (run_dir / CHECKPOINT).exists() or (run_dir / "config.json").exists():
            raise RnnkitError(f"{run_dir} is an unfinished run (no {MANIFEST}); "
                              f"finish it with: rnnkit train --resume {run_dir}")
        raise RnnkitError(f"{run_dir} is not an rnnkit run folder (no {MANIFEST})")
    manifest = read_json(run_dir / MANIFEST)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise RnnkitError(f"{run_dir} has run format {manifest.get('format_version')}, "
                          f"this rnnkit reads {FORMAT_VERSION}; re-train or use a matching rnnkit")
    files = manifest.get("files", {})
    unlisted = [name for name in LOADED_FILES if name not in files]
    if unlisted:  # a file the manifest does not list would load unchecked
        raise RnnkitError(f"{run_dir}: {MANIFEST} does not list {', '.join(unlisted)} (edited or damaged); "
                          "restore it or re-train")
    for name, entry in files.items():
        path = run_dir / name
        if not path.exists():
            raise RnnkitError(f"{run_dir}: {name} is missing; restore it or re-train")
        if sha256_file(path) != entry.get("sha256"):
            raise RnnkitError(f"{run_dir}: {name} does not match its checksum in {MANIFEST} "
                              "(modified or corrupted); restore it or re-train")
    return manifest


# ---------------------------------------------------------------------------
# Checkpoints: everything needed to continue training, without pickle.


def save_checkpoint(run_dir: Path, model: torch.nn.Module, best_state: dict, optimizer, scheduler,
                    state: dict, averaged: Optional[torch.nn.Module] = None) -> None:
    """Save model, best weights, optimizer, scheduler, RNG and loop state atomically.

    Written to ``checkpoint.tmp`` then swapped in, so a kill at any moment
    leaves either the previous checkpoint or the new one.
    """
    run_dir = Path(run_dir)
    tmp, final, old = run_dir / (CHECKPOINT + ".tmp"), run_dir / CHECKPOINT, run_dir / (CHECKPOINT + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in best_state.items()})
    if averaged is not None:
        tensors.update({f"average.{k}": v for k, v in averaged.state_dict().items()})
    opt = optimizer.state_dict()
    opt_json: dict = {"param_groups": opt["param_groups"], "state": {}}
    for pid, pstate in opt["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                opt_json["state"].setdefault(str(pid), {})[key] = value
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    save_tensors(tmp / "state.safetensors", tensors)
    atomic_write_json(tmp / "state.json", {
        "loop": state,
        "optimizer": opt_json,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    })
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_folder(run_dir: Path) -> Path:
    """The folder holding ``run_dir``'s last complete checkpoint; an error when there is none."""
    run_dir = Path(run_dir)
    folder = run_dir / CHECKPOINT
    if not (folder / "state.json").exists():
        folder = run_dir / (CHECKPOINT + ".old")  # killed between the two renames
    if not (folder / "state.json").exists():
        raise RnnkitError(f"{run_dir} has no checkpoint to resume from (it was stopped before the first "
                          f"epoch ended); delete it (rm -r {run_dir}) and start again without --resume")
    return folder


def load_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer, scheduler,
                    averaged: Optional[torch.nn.Module] = None) -> tuple[dict, dict]:
    """Restore what :func:`save_checkpoint` wrote; return ``(loop_state, best_state)``."""
    folder = checkpoint_folder(run_dir)
    meta = read_json(folder / "state.json")
    tensors = load_tensors(folder / "state.safetensors")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    if averaged is not None:
        averaged.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("average.")})
    opt_state: dict = {"param_groups": meta["optimizer"]["param_groups"], "state": {}}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt_state["state"].setdefault(int(pid), {})[name] = value
    for pid, extra in meta["optimizer"]["state"].items():
        opt_state["state"].setdefault(int(pid), {}).update(extra)
    optimizer.load_state_dict(opt_state)
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_states = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return meta["loop"], best


def remove_checkpoint(run_dir: Path) -> None:
    for name in (CHECKPOINT, CHECKPOINT + ".tmp", CHECKPOINT + ".old"):
        shutil.rmtree(Path(run_dir) / name, ignore_errors=True)
