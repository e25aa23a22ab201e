"""Process-level helpers used around a run, and the only reads of Lightning's private state
(`writes_logs_now`, `uses_distributed_sampler`, `started_wandb_run`, `logs_checkpoints`): one
place to update for a new Lightning."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc on Linux, else None (mallopt and malloc_trim are glibc's)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None  # not musl


def release_free_heap() -> bool:
    """Return the C heap's free memory to the OS (glibc's malloc_trim).

    Training allocates tensors of varying size (the logits at a batch's masked positions, say);
    glibc keeps the freed blocks in a fragmented heap, and the resident memory of a long fit grows
    epoch after epoch; trimming after each epoch bounds it at no measurable cost (lowering glibc's
    mmap threshold instead is slower). Returns whether memory was released (glibc on Linux only).
    """
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def hold_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Let the C heap keep freed blocks for the next allocation instead of handing them back to the
    OS at once (glibc's mallopt; process-wide, until changed).

    A CPU training step allocates and frees the same few-MB activations and gradients every step.
    With glibc's defaults a freed block above the (adaptive) mmap threshold, or a free heap top above
    the trim threshold, goes back to the OS, and the next step page-faults the same memory in again
    (a large share of a big-batch CPU step: README, Speed). Here blocks below
    `mmap_threshold` come from the heap and up to `trim_threshold` bytes of free heap top are kept.
    Pair it with `release_free_heap` between epochs (the `HeapPolicy` callback does both), which
    bounds what is kept. Returns whether both settings were taken (glibc on Linux only).
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and \
        bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))


def writes_logs_now(trainer: Any) -> bool:
    """Whether the Trainer writes step logs after the current training step (every
    `log_every_n_steps`), so that a model can skip `self.log` calls that would not be written.

    The one place lit_recs reads Lightning's private state (its logger connector); True when it
    cannot tell (no trainer, another Lightning version).
    """
    connector = getattr(trainer, "_logger_connector", None)
    return connector is None or bool(connector.should_update_logs)


def uses_distributed_sampler(trainer: Any) -> bool:
    """Whether the Trainer wraps dataloaders in a DistributedSampler (its
    `use_distributed_sampler` argument, kept only by its private accelerator connector)."""
    connector = getattr(trainer, "_accelerator_connector", None)
    return bool(getattr(connector, "use_distributed_sampler", False))


def started_wandb_run(logger: Any) -> Any | None:
    """The W&B run a WandbLogger has started, None before its first use (its public
    `experiment` would start one; the run is kept in the private `_experiment`)."""
    return getattr(logger, "_experiment", None)


def logs_checkpoints(logger: Any) -> bool:
    """Whether a WandbLogger uploads checkpoints itself (its `log_model` argument, kept only as
    the private `_log_model`)."""
    return bool(getattr(logger, "_log_model", False))


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux' MemAvailable), None elsewhere."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(model: str, needed: int, what: str, instead: str) -> None:
    """Refuse before allocating: a ValueError when `needed` bytes exceed the memory available
    now (Linux' MemAvailable; no check where it cannot be read)."""
    free = available_memory()
    if free is not None and needed > free:
        raise ValueError(f"{model} needs about {needed / 2**30:.1f} GiB ({what}); this machine "
                         f"has {free / 2**30:.1f} GiB available. {instead}")
