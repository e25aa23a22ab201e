"""Reading checkpoints safely: weights only, never arbitrary pickles, and clear errors.

A Lightning checkpoint is a `torch.save` zip archive whose `data.pkl` is a pickle, and unpickling
calls whatever the pickle names: a crafted `.ckpt` can call `os.system`. So every checkpoint
lit_recs reads (`--ckpt_path`, NeuMF's `pretrained_gmf` / `pretrained_mlp`, the experiments'
scripts) goes through `load_checkpoint`, which passes `weights_only=True` explicitly (so that
`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` cannot turn it off): torch's restricted unpickler builds
tensors (dense and sparse), containers and primitives and refuses any other callable before
calling it. The checkpoints lit_recs writes need nothing more (checked for every model: states of
the model, the optimizers and schedulers, the loops and the callbacks, and hyper_parameters), so
no type is added to torch's allow-list.

When torch cannot read a file, its errors do not say what is wrong ("PytorchStreamReader failed
reading zip archive", "IndexError: pop from empty list", "Unsupported operand 149") or advise
retrying with `weights_only=False`, which would run the file's code. `load_checkpoint` replaces
them with a `CheckpointError` that names the file and the fault, found by looking at its bytes
(zip structure, pickle opcodes through `pickletools`, which parses and runs nothing).
"""

from __future__ import annotations

import _compat_pickle
import pickletools
import zipfile
from collections import deque
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

MAX_SCANNED_PICKLE = 1 << 28  # bytes of a data.pkl read for its names (a zip bomb stops here)
WHAT = ("Lightning checkpoints are the `.ckpt` files that `lit-recs fit` writes under "
        "<run>/checkpoints/ (torch.save zip archives)")


class CheckpointError(RuntimeError):
    """The file is not a readable lit_recs / Lightning checkpoint (missing, damaged, foreign)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The path names no file; also a FileNotFoundError, as Lightning's own loader raises."""


class UnsafeCheckpointError(CheckpointError):
    """The file names callables that a weights-only load refuses: loading it would run code."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint at `path`, loaded weights-only (nothing in it runs).

    Raises CheckpointError (naming the file and the fault) when the path is no file or the file
    is not a checkpoint, UnsafeCheckpointError when it names callables that loading would call.
    """
    file = Path(path)
    if not file.is_file():
        raise _not_a_file(file)
    damaged = _damaged_entry(file)
    if damaged:
        raise _unreadable(file, f"it is a damaged zip archive ({damaged} fails its checksum)")
    try:
        checkpoint = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as err:  # RuntimeError, EOFError, UnpicklingError, IndexError, ... by fault
        raise _diagnose(file, err) from None  # torch's message advises weights_only=False
    if not isinstance(checkpoint, dict):
        raise _unreadable(file, f"it holds a {type(checkpoint).__name__}, not a dict")
    return checkpoint


def checkpoint_weights(path: str | Path) -> dict[str, Tensor]:
    """The model weights (`state_dict`) of the checkpoint at `path`, loaded weights-only."""
    state = load_checkpoint(path).get("state_dict")
    if not isinstance(state, dict):
        raise _unreadable(Path(path), "it has no state_dict (model weights)")
    return state


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO (`--ckpt_path`, `ckpt_path="best"`) through `load_checkpoint`.

    Saving is TorchCheckpointIO's; loading is weights-only whatever the caller asks, so that
    `trainer.fit(..., weights_only=False)` (the CLI's `--weights_only false`) cannot unpickle.
    """

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None
                        ) -> dict[str, Any]:
        if weights_only is False:
            rank_zero_warn(f"weights_only=False ignored for {path}: lit_recs loads checkpoints "
                           f"weights-only")
        # None: onto the CPU, as TorchCheckpointIO's default (lambda storage, loc: storage) does
        return load_checkpoint(path, "cpu" if map_location is None else map_location)


# ------------------------------------------------------------------ what is wrong with a file
def _unreadable(file: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{file} is not a readable lit_recs/Lightning checkpoint: {reason}. "
                           f"{WHAT}")


def _not_a_file(file: Path) -> CheckpointError:
    if file.is_dir():
        return _unreadable(file, "it is a directory, not a file")
    return CheckpointNotFoundError(f"{file} is not a readable lit_recs/Lightning checkpoint: no "
                                   f"such file")


def _damaged_entry(file: Path) -> str | None:
    """The first entry of a zip whose bytes fail their CRC, else None (also for no zip at all).

    torch does not check the CRCs: a flipped bit in a tensor loads silently as a wrong weight.
    Reading the file once more is cheap next to loading it. Entries with CRC 0 (torch's
    `set_crc32_options(False)` writes no CRC) and compressed ones (not torch's) are skipped.
    """
    try:
        with zipfile.ZipFile(file) as archive:
            for entry in archive.infolist():
                if entry.CRC and entry.compress_type == zipfile.ZIP_STORED:
                    with archive.open(entry) as stream:
                        while stream.read(1 << 24):  # ZipExtFile checks the CRC at the end
                            pass
    except zipfile.BadZipFile as err:
        return str(err).removeprefix("Bad CRC-32 for file ") if "CRC" in str(err) else None
    except (OSError, EOFError, ValueError):
        return None  # torch.load fails on it next, and _diagnose says why
    return None


def _diagnose(file: Path, err: Exception) -> CheckpointError:
    """The error for a file torch could not load, from its bytes (nothing is unpickled)."""
    fault = _fault(file)
    if isinstance(fault, set):
        return UnsafeCheckpointError(
            f"Refused to load {file}: it is not a readable lit_recs/Lightning checkpoint, and "
            f"loading it would run code (it names {', '.join(sorted(fault))}, which a "
            f"weights-only load does not allow). Nothing in it was run; do not load it with "
            f"weights_only=False unless you trust where it came from.")
    return _unreadable(file, fault or f"torch could not load it ({type(err).__name__}: "
                                      f"{_first_line(err)})")


def _fault(file: Path) -> str | set[str] | None:
    """What is wrong: a reason, the disallowed callables it names, or None (nothing found)."""
    with file.open("rb") as stream:
        head = stream.read(4)
        if not head:
            return "the file is empty"
        if head.startswith(b"PK"):
            return _zip_fault(file)
        stream.seek(0)
        names = _pickle_globals(stream)
    if names is None:
        return "it is neither a zip archive nor a pickle (damaged or foreign data)"
    return _disallowed(names) or "it is a plain pickle, not a torch.save zip archive"


def _zip_fault(file: Path) -> str | set[str] | None:
    """A zip: damaged, not torch's layout (<dir>/data.pkl), or a pickle naming disallowed code."""
    try:
        with zipfile.ZipFile(file) as archive:
            pickles = [n for n in archive.namelist() if n.count("/") == 1
                       and n.endswith("/data.pkl")]
            if not pickles:
                return "it is a zip archive but not a torch.save one (no <dir>/data.pkl)"
            if archive.getinfo(pickles[0]).file_size > MAX_SCANNED_PICKLE:
                return None  # a checkpoint's data.pkl holds no tensor bytes: KBs to a few MBs
            with archive.open(pickles[0]) as stream:
                names = _pickle_globals(stream)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return "it is a damaged or truncated zip archive (cut short while written or copied?)"
    if names is None:
        return "it is a torch.save archive whose data.pkl is damaged"
    return _disallowed(names) or None


def _pickle_globals(stream: IO[bytes]) -> set[str] | None:
    """The callables ("module.name") a pickle would import, or None if it is no whole pickle.

    `pickletools.genops` only parses opcodes. GLOBAL / INST carry the name; STACK_GLOBAL (protocol
    4+) takes it from the two strings pushed before it, possibly fetched back from the memo.
    """
    names: set[str] = set()
    pushed: deque[Any] = deque(maxlen=2)  # the last two values pushed (strings, else None)
    memo: dict[int, Any] = {}
    try:
        for op, arg, _ in pickletools.genops(stream):
            if op.name in ("GLOBAL", "INST"):
                names.add(_python3_name(*str(arg).split(" ", 1)))
            elif op.name == "STACK_GLOBAL":
                module, name = (str(v) for v in pushed) if len(pushed) == 2 else ("?", "?")
                names.add(_python3_name(module, name))
            if op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                memo[len(memo) if op.name == "MEMOIZE" else arg] = pushed[-1] if pushed else None
            elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(arg))
            elif op.stack_after:
                pushed.append(arg if isinstance(arg, str) else None)
    except (ValueError, EOFError, IndexError, KeyError, UnicodeDecodeError):
        return None
    return names


def _python3_name(module: str, name: str = "?") -> str:
    """"module.name" as unpickling would import it (protocol 2 writes Python 2's __builtin__)."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _disallowed(names: set[str]) -> set[str]:
    """The names torch's weights-only unpickler does not allow (its default and added globals).

    Only chooses the message: the refusal itself is torch's, which has already happened.
    """
    unpickler: Any = torch._weights_only_unpickler  # what get_unsafe_globals_in_checkpoint reads
    allowed: set[str] = set()
    for lister in ("_get_allowed_globals", "_get_user_allowed_globals"):
        allowed |= set(getattr(unpickler, lister, dict)())  # private: gone -> all names listed
    return names - allowed


def _first_line(err: Exception) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), "")
