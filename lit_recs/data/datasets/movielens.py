"""MovieLens 100K / 1M / 20M (GroupLens): find or download the files, parse into `Interactions`.

Where the files are: `<root>/<name>`, with `root` the `data_dir` argument, else the `LIT_RECS_DATA`
environment variable, else the user cache dir (`$XDG_CACHE_HOME/lit_recs`, default
`~/.cache/lit_recs`). A folder that already holds the needed files is only read, never written
(it may be read-only or shared). Otherwise `<name>.zip` is downloaded from GroupLens, checked
against the archive checksums below and extracted there.

Parsing the files (and the parquet cache of large ratings files) is `movielens_files`.

Checksums of the official archives (`files.grouplens.org/datasets/movielens/<name>.zip`): MD5 is
the value GroupLens publishes next to each archive (`<name>.zip.md5`); SHA-256 is the digest that
independent projects pin for the same archives. Both are checked after a download.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from lit_recs.data.datasets.base import DataSource
from lit_recs.data.datasets.download import (  # noqa: F401  (DOWNLOAD_TIMEOUT_S: re-exported)
    DOWNLOAD_TIMEOUT_S,
    ChecksumError,
    DownloadError,
    digests,
    fetch_archive,
)
from lit_recs.data.datasets.movielens_files import PARSERS, user_cache_dir
from lit_recs.data.interactions import Interactions

log = logging.getLogger(__name__)

BASE_URL = "https://files.grouplens.org/datasets/movielens"
ENV_VAR = "LIT_RECS_DATA"

# Checksums of the official GroupLens archives; every algorithm listed is verified.
ARCHIVE_CHECKSUMS: dict[str, dict[str, str]] = {
    "ml-100k": {
        "md5": "0e33842e24a9c977be4e0107933c0723",
        "sha256": "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    },
    "ml-1m": {
        "md5": "c4d9eecfca2ab87c1945afe126590906",
        "sha256": "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    },
    "ml-20m": {
        "md5": "cd245b17a1ae2cc31bb14903e1204af3",
        "sha256": "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
    },
}

# SHA-256 of extracted files, checked when reading a folder with `verify=True`.
FILE_SHA256: dict[str, dict[str, str]] = {
    "ml-100k": {"u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"},
}

REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "ml-100k": ("u.data", "u.user", "u.item", "u.genre"),
    "ml-1m": ("ratings.dat", "users.dat", "movies.dat"),
    "ml-20m": ("ratings.csv", "movies.csv"),
}
NAMES = tuple(REQUIRED_FILES)


class MovieLens(DataSource):
    """A GroupLens MovieLens data set as `Interactions` with user / item side features.

    Item features: `item_id`, `title`, `year`, `genres` (list of genre names). `year` is the
    "(1995)" of the title for 1M / 20M and the year of u.item's release date for 100K (the title's
    when that date is empty); null when neither has one. User features (100K, 1M): `user_id`,
    `age`, `gender`, `occupation`, `zip`; ML-1M ages are the README's age-group codes (1, 18, 25,
    ...) and its occupation codes are mapped to the README's names. ML-20M has no user table.

    `verify=True` checks the SHA-256 of files with a recorded digest (ML-100K's u.data) when reading
    an existing folder; a downloaded archive is always checked.
    """

    def __init__(
        self,
        name: str = "ml-100k",
        data_dir: str | os.PathLike | None = None,
        download: bool = True,
        verify: bool = False,
    ) -> None:
        if name not in REQUIRED_FILES:
            raise ValueError(
                f"unknown MovieLens data set {name!r}: valid names are {', '.join(NAMES)}"
            )
        self.name = name
        self.data_dir = data_dir
        self.download = download
        self.verify = verify

    def __repr__(self) -> str:
        return (
            f"MovieLens(name={self.name!r}, data_dir={self.data_dir!r}, "
            f"download={self.download}, verify={self.verify})"
        )

    # ------------------------------------------------------------------ location
    @property
    def root(self) -> Path:
        if self.data_dir is not None:
            return Path(self.data_dir).expanduser()
        env = os.environ.get(ENV_VAR)
        return Path(env).expanduser() if env else user_cache_dir()

    @property
    def folder(self) -> Path:
        """The folder that holds (or will hold) the extracted files."""
        return self.root / self.name

    @property
    def url(self) -> str:
        return f"{BASE_URL}/{self.name}.zip"

    def _missing(self, folder: Path) -> list[str]:
        return [f for f in REQUIRED_FILES[self.name] if not (folder / f).is_file()]

    def prepare(self) -> Path:
        """Return the folder with the needed files, downloading them if they are not there."""
        folder = self.folder
        missing = self._missing(folder)
        if not missing:
            if self.verify:
                _verify_files(self.name, folder)
            return folder
        if not self.download:
            raise FileNotFoundError(
                f"MovieLens {self.name}: missing {', '.join(str(folder / f) for f in missing)} "
                f"(download=False). Download {self.url}, extract it and put its files in {folder} "
                f"(or point data_dir / the {ENV_VAR} environment variable at the folder that "
                f"contains '{self.name}/')."
            )
        _fetch(self.name, self.url, folder)
        missing = self._missing(folder)
        if missing:
            raise DownloadError(
                f"{self.url} was extracted into {folder} but it lacks {', '.join(missing)}"
            )
        return folder

    # ------------------------------------------------------------------ loading
    def load(self) -> Interactions:
        folder = self.prepare()
        ratings, users, items = PARSERS[self.name](folder)
        inter = Interactions.from_raw(
            ratings["user_id"].to_numpy(),
            ratings["item_id"].to_numpy(),
            ratings["rating"].to_numpy().astype(np.float32, copy=False),
            ratings["timestamp"].to_numpy().astype(np.int64, copy=False),
            user_features=users,
            item_features=items,
            user_key="user_id",
            item_key="item_id",
            name=self.name,
        )
        log.info("%s (from %s)", inter.summary(), folder)
        return inter


# ====================================================================== download
def _fetch(name: str, url: str, folder: Path) -> None:
    where = (
        f"download {url} yourself, extract it and put its files "
        f"({', '.join(REQUIRED_FILES[name])}) in {folder}, or point data_dir / the {ENV_VAR} "
        f"environment variable at a folder that contains '{name}/'"
    )
    fetch_archive(f"MovieLens {name}", url, folder, ARCHIVE_CHECKSUMS.get(name, {}), where)


def _verify_files(name: str, folder: Path) -> None:
    for fname, want in FILE_SHA256.get(name, {}).items():
        path = folder / fname
        got = digests(path, ["sha256"])["sha256"]
        if got != want:
            raise ValueError(
                f"{path}: SHA-256 {got} does not match the official {name} release "
                f"({want}); the file was modified or is from another release"
            )
    if name not in FILE_SHA256:
        log.debug("%s: no per-file checksums recorded, nothing to verify", name)
