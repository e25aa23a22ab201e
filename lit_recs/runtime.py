"""Process-level helpers the CLI uses around a run."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys


def release_free_heap() -> bool:
    """Return the C heap's free memory to the OS (glibc's malloc_trim).

    Training allocates tensors of varying size (the logits at a batch's masked positions, say);
    glibc keeps the freed blocks in a fragmented heap, and a BERT4Rec fit on ML-100K grew from 0.66
    to 0.97 GB RSS over 20 epochs (0.73 GB when trimmed after each epoch, at no measurable cost;
    fixing glibc's mmap threshold instead kept 0.59 GB but doubled the epoch time). Returns whether
    memory was released (glibc on Linux only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return False
