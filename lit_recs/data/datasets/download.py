"""Fetching a zip archive: download next to its target folder, verify checksums, extract safely.

Nothing here knows a particular dataset: callers pass the URL, the checksums and the text that tells
a user how to provide the files by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import secrets
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60.0


class DownloadError(OSError):
    """An archive could not be fetched (offline, HTTP error, unwritable folder, bad zip)."""


class ChecksumError(DownloadError):
    """The downloaded archive does not match the recorded checksum."""


def _download(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Stream `url` into the file `dest`."""
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out, 1 << 20)


def digests(path: Path, algorithms: list[str]) -> dict[str, str]:
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def fetch_archive(name: str, url: str, folder: Path, checksums: dict[str, str], where: str) -> None:
    """Download the zip `url` next to `folder`, verify `checksums` ({algorithm: hex digest}) and
    extract it into `folder`. `name` labels errors; `where` tells how to place the files by hand."""
    root = folder.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{folder.name}-", suffix=".zip.part", dir=root)
        os.close(fd)
    except OSError as err:
        raise DownloadError(f"{name}: cannot write to {root} ({err}); {where}") from err
    tmp = Path(tmp_name)
    try:
        log.info("downloading %s to %s", url, folder)
        try:
            _download(url, tmp)
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets
            reason = getattr(err, "reason", None) or err
            raise DownloadError(
                f"could not download {name} from {url} ({reason}). If this machine is "
                f"offline, {where}."
            ) from err
        if not checksums:
            log.warning("no checksum recorded for %s; not verified", url)
        actual = digests(tmp, list(checksums))
        for algo, want in checksums.items():
            if actual[algo] != want.lower():
                raise ChecksumError(
                    f"checksum mismatch for {url}: expected {algo} {want}, got {actual[algo]} "
                    f"(downloaded file {tmp}, deleted). The download is corrupt or the archive "
                    f"changed upstream; retry, or {where}."
                )
        extract(tmp, folder, url)
    finally:
        tmp.unlink(missing_ok=True)


def extract(archive: Path, folder: Path, url: str) -> None:
    """Extract the archive's files into `folder`, dropping the single top-level directory."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            paths = [PurePosixPath(m.filename) for m in members]
            for p in paths:
                if p.is_absolute() or ".." in p.parts:
                    raise DownloadError(f"{url}: unsafe path {str(p)!r} in the archive")
            tops = {p.parts[0] for p in paths if len(p.parts) > 1}
            strip = len(tops) == 1 and all(len(p.parts) > 1 for p in paths)
            # not mkdtemp: its 0700 mode would stick to the final folder; mkdir respects umask
            staging = folder.parent / f".{folder.name}-extract-{os.getpid()}-{secrets.token_hex(4)}"
            staging.mkdir()
            try:
                for member, p in zip(members, paths, strict=True):
                    rel = Path(*p.parts[1:]) if strip else Path(*p.parts)
                    target = staging / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                if not folder.exists():
                    try:
                        os.replace(staging, folder)
                        return
                    except OSError:  # created meanwhile: fall back to moving file by file
                        pass
                folder.mkdir(parents=True, exist_ok=True)
                for src in sorted(staging.rglob("*")):
                    if src.is_file():
                        dst = folder / src.relative_to(staging)
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(src, dst)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except zipfile.BadZipFile as err:
        raise DownloadError(f"{url}: the download is not a valid zip archive ({err})") from err
