"""What changes when ``torchrun`` starts N copies of ``rnnkit train``.

    torchrun --nproc-per-node 2 -m rnnkit train --dataset surnames --data-dir ../shared/data

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous
address in each process's environment; :func:`context` joins the process group
(gloo on CPU, nccl on CUDA) when ``WORLD_SIZE > 1`` and is a no-op otherwise.

The division of labour, chosen so the ranks never have to agree on anything by
accident:

* rank 0 fits the vectorizer, picks the run folder and writes every file; the
  others receive the vectorizer as JSON (nothing is pickled) and read the token
  cache rank 0 just filled;
* every rank walks the same seeded, length-bucketed *global* batches and trains
  on its strided share ``index[rank::world]`` of each (similar lengths, since a
  bucketed batch is sorted); the loss is scaled so that DDP's gradient average
  equals the gradient of the global batch's mean loss;
* rank 0 evaluates, decides (best epoch, early stop, the plateau scheduler's
  metric) and broadcasts the decision; the replicas stay bit-identical because
  DDP averages gradients before every optimizer step.

Whatever rank 0 does on behalf of all goes through :func:`on_main`, which
turns a failure there into a clean error on every rank instead of a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch

from .errors import RnnkitError


class PeerError(RnnkitError):
    """Raised on ranks > 0 when rank 0 failed; rank 0 has already printed why."""

    exit_code = 1


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> World:
    """The world torchrun describes in the environment; a single process otherwise."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise RnnkitError("WORLD_SIZE, RANK and LOCAL_RANK must be integers; start distributed runs with "
                          "torchrun --nproc-per-node N -m rnnkit train ...") from None
    if size < 1 or not 0 <= rank < size:
        raise RnnkitError(f"RANK={rank} does not fit WORLD_SIZE={size}; start with torchrun")
    return World(rank, size, local_rank)


def resolve_device(name: str, world: World = World()) -> torch.device:
    """``auto`` -> the GPU if one is visible; under torchrun each rank takes GPU ``LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RnnkitError(f"device {name!r} asked for but no CUDA GPU is visible; use --device cpu or auto")
        if world.enabled and name == "cuda":
            if world.local_rank >= torch.cuda.device_count():
                raise RnnkitError(f"rank {world.rank} wants GPU {world.local_rank} but only "
                                  f"{torch.cuda.device_count()} are visible; lower --nproc-per-node")
            name = f"cuda:{world.local_rank}"
    return torch.device(name)


@contextlib.contextmanager
def context(device_name: str, timeout_minutes: float = 30.0) -> Iterator[tuple[World, torch.device]]:
    """Join the process group for the duration of a training run (no-op for one process)."""
    world = from_env()
    device = resolve_device(device_name, world)
    if not world.enabled:
        yield world, device
        return
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if dist.is_initialized():  # the caller set the group up; leave it to them
        yield world, device
        return
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    try:
        yield world, device
        # A rank that tears the group down while a peer is still in its last collective can make
        # gloo abort the peer ("terminate called without an active exception"); meet first.
        # Only on success: after an error the peers may be gone, and waiting would hang.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _broadcast_bytes(payload: Optional[bytes], world: World, device: torch.device) -> bytes:
    import torch.distributed as dist

    # ``device`` is the training device: CUDA tensors for nccl, CPU ones for gloo, as each requires.
    size = torch.tensor([len(payload) if world.main else 0], dtype=torch.long, device=device)
    dist.broadcast(size, src=0)
    if world.main:
        buf = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
    else:
        buf = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(buf, src=0)
    return bytes(buf.cpu().numpy().tobytes())


def broadcast_json(obj: Any, world: World, device: torch.device) -> Any:
    """Rank 0's JSON-serialisable ``obj`` on every rank (JSON, never pickle)."""
    if not world.enabled:
        return obj
    data = _broadcast_bytes(json.dumps(obj).encode() if world.main else None, world, device)
    return json.loads(data)


def on_main(fn: Callable[[], Any], world: World, device: torch.device) -> Any:
    """Run ``fn`` on rank 0 only and hand its JSON result to every rank.

    If ``fn`` raises, rank 0 re-raises it and the other ranks raise
    :class:`PeerError`, so no rank is left waiting for a message that never comes.
    """
    if not world.enabled:
        return fn()
    result, error = None, None
    if world.main:
        try:
            result = fn()
        except BaseException as exc:  # noqa: B902 - tell the peers, then re-raise as is
            error = exc
    message = broadcast_json({"error": f"{type(error).__name__}: {error}" if error else None, "result": result},
                             world, device)
    if error is not None:
        raise error
    if message["error"] is not None:
        raise PeerError(f"rank {world.rank} stopped because rank 0 failed ({message['error']})")
    return message["result"]


def all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks."""
    if not world.enabled:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def shard(index: torch.Tensor, world: World) -> tuple[Optional[torch.Tensor], float]:
    """This rank's share of a global batch and the loss weight that keeps gradients exact.

    Returns ``(None, 0)`` for a batch too small to give every rank a row (only
    ever the epoch's last, short batch): every rank skips it alike, so the
    collective calls stay in step.
    """
    if not world.enabled:
        return index, 1.0
    if len(index) < world.size:
        return None, 0.0
    mine = index[world.rank :: world.size]
    # DDP averages the ranks' gradients; weighting each rank's mean loss by its
    # share of rows turns that average into the global batch's mean.
    return mine, len(mine) * world.size / len(index)


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """The model DDP trains (``model`` itself for one process)."""
    if not world.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def seed_epoch(seed: int, epoch: int, world: World) -> None:
    """Per-rank dropout randomness that depends only on (seed, epoch, rank), so resume replays it."""
    if world.enabled:
        torch.manual_seed((seed * 1_000_003 + epoch) * 1009 + world.rank)
