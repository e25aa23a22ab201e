"""MovieLens 100K / 1M / 20M (GroupLens): find or download the files, parse into `Interactions`.

Where the files are: `<root>/<name>`, with `root` the `data_dir` argument, else the `LIT_RECS_DATA`
environment variable, else the user cache dir (`$XDG_CACHE_HOME/lit_recs`, default
`~/.cache/lit_recs`). A folder that already holds the needed files is only read, never written
(it may be read-only or shared). Otherwise `<name>.zip` is downloaded from GroupLens, checked
against the archive checksums below and extracted there.

Parsed ratings of large files (ML-20M) are cached as parquet under the user cache dir, keyed by the
source folder path and the files' sizes and mtimes; a cache that cannot be written is skipped.

Checksums of the official archives (`files.grouplens.org/datasets/movielens/<name>.zip`): MD5 is
the value GroupLens publishes next to each archive (`<name>.zip.md5`); SHA-256 is the digest that
independent projects pin for the same archives. Both are checked after a download.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import polars as pl

from lit_recs.data.datasets.base import DataSource
from lit_recs.data.datasets.delimited import Col, read_table
from lit_recs.data.datasets.download import (  # noqa: F401  (DOWNLOAD_TIMEOUT_S: re-exported)
    DOWNLOAD_TIMEOUT_S,
    ChecksumError,
    DownloadError,
    digests,
    fetch_archive,
)
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

# ML-1M users.dat stores occupations as codes; names as listed in the ML-1M README.
ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)

# Ratings files at least this large get a parquet cache of their parsed, validated content.
CACHE_MIN_BYTES = 64 << 20
_CACHE_VERSION = "1"

_RATING_COLS = ("user_id", "item_id", "rating", "timestamp")
_YEAR_IN_TITLE = r"\((\d{4})\)\s*$"


def user_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/lit_recs`, default `~/.cache/lit_recs`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "lit_recs"


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
        ratings, users, items = _PARSERS[self.name](folder)
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


# ====================================================================== parsing
def _check_ratings(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Ratings must be finite and >= 0, timestamps >= 0; returns the four rating columns."""
    checks = [
        ("rating", ~pl.col("rating").is_finite() | (pl.col("rating") < 0)),
        ("timestamp", pl.col("timestamp") < 0),
    ]
    for col, bad_expr in checks:
        bad = df.filter(bad_expr)
        if len(bad):
            raise ValueError(
                f"{path}, line {bad['_line'][0]}: invalid {col} {bad[col][0]!r} "
                f"({len(bad)} such rows); {col}s must be finite and >= 0"
            )
    return df.select(_RATING_COLS)


def _check_unique(df: pl.DataFrame, key: str, path: Path) -> pl.DataFrame:
    dup = df.filter(~pl.col(key).is_first_distinct())
    if len(dup):
        raise ValueError(f"{path}, line {dup['_line'][0]}: duplicate {key} {dup[key][0]}")
    return df.drop("_line")


def _year_from_title(title: pl.Expr) -> pl.Expr:
    return title.str.extract(_YEAR_IN_TITLE, 1).cast(pl.Int32, strict=False)


def _ratings_cols(rating_dtype: type[pl.DataType] = pl.Float32) -> list[Col]:
    return [
        Col("user_id", pl.Int64),
        Col("item_id", pl.Int64),
        Col("rating", rating_dtype),
        Col("timestamp", pl.Int64),
    ]


def _read_ratings(
    folder: Path, fname: str, sep: str, header: tuple[str, ...] | None
) -> pl.DataFrame:
    path = folder / fname
    cache = _cache_path(folder, path)
    if cache is not None and cache.is_file():
        try:
            df = pl.read_parquet(cache)
            if df.columns == list(_RATING_COLS):
                log.debug("read parsed %s from the cache %s", path, cache)
                return df
        except Exception as err:  # a corrupt cache is just re-built
            log.debug("ignoring unreadable cache %s: %s", cache, err)
    df = _check_ratings(read_table(path, _ratings_cols(), sep, header=header), path)
    if cache is not None:
        _write_cache(df, cache)
    return df


def _cache_path(folder: Path, ratings_file: Path) -> Path | None:
    """Parquet cache of a large ratings file, keyed by folder path and the files' size/mtime."""
    try:
        if not ratings_file.is_file() or ratings_file.stat().st_size < CACHE_MIN_BYTES:
            return None
        h = hashlib.sha256(f"{_CACHE_VERSION}|{folder.resolve()}".encode())
        for f in sorted(folder.iterdir()):
            if f.is_file():
                st = f.stat()
                h.update(f"|{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    except OSError as err:
        log.debug("no ratings cache for %s: %s", folder, err)
        return None
    return user_cache_dir() / "processed" / f"{folder.name}-ratings-{h.hexdigest()[:16]}.parquet"


def _write_cache(df: pl.DataFrame, cache: Path) -> None:
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        df.write_parquet(tmp)
        os.replace(tmp, cache)
        log.debug("cached parsed ratings in %s", cache)
    except Exception as err:  # caching is best effort
        log.debug("could not write the ratings cache %s: %s", cache, err)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


_Parsed = tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame]


def _parse_100k(folder: Path) -> _Parsed:
    ratings = _read_ratings(folder, "u.data", "\t", None)
    users_path = folder / "u.user"
    users = read_table(
        users_path,
        [
            Col("user_id", pl.Int64),
            Col("age", pl.Int32),
            Col("gender", pl.String),
            Col("occupation", pl.String),
            Col("zip", pl.String, required=False),
        ],
        "|",
    )
    users = _check_unique(users, "user_id", users_path)

    genre_path = folder / "u.genre"
    genre_df = read_table(genre_path, [Col("genre", pl.String), Col("index", pl.Int64)], "|")
    genre_df = genre_df.sort("index")
    if genre_df["index"].to_list() != list(range(len(genre_df))):
        raise ValueError(
            f"{genre_path}: column 'index' must number the genres 0..n-1, found "
            f"{genre_df['index'].to_list()}"
        )
    genres = genre_df["genre"].to_list()
    flags = [f"_g{i}" for i in range(len(genres))]
    items_path = folder / "u.item"
    items = read_table(
        items_path,
        [
            Col("item_id", pl.Int64),
            Col("title", pl.String),
            Col("release_date", pl.String, required=False),
            Col("video_release_date", pl.String, required=False),
            Col("url", pl.String, required=False),
        ]
        + [Col(f, pl.Int8) for f in flags],
        "|",
        encoding="latin-1",
    )
    items = items.select(
        "_line",
        "item_id",
        "title",
        pl.coalesce(
            pl.col("release_date").str.extract(r"(\d{4})\s*$", 1).cast(pl.Int32, strict=False),
            _year_from_title(pl.col("title")),
        ).alias("year"),
        pl.concat_list(
            [pl.when(pl.col(f) != 0).then(pl.lit(g)) for f, g in zip(flags, genres, strict=True)]
        )
        .list.drop_nulls()
        .alias("genres"),
    )
    return ratings, users, _check_unique(items, "item_id", items_path)


def _parse_1m(folder: Path) -> _Parsed:
    ratings = _read_ratings(folder, "ratings.dat", "::", None)
    users_path = folder / "users.dat"
    users = read_table(
        users_path,
        [
            Col("user_id", pl.Int64),
            Col("gender", pl.String),
            Col("age", pl.Int32),
            Col("occupation", pl.Int64),
            Col("zip", pl.String, required=False),
        ],
        "::",
    )
    codes = users.filter(~pl.col("occupation").is_between(0, len(ML1M_OCCUPATIONS) - 1))
    if len(codes):
        raise ValueError(
            f"{users_path}, line {codes['_line'][0]}: column 'occupation' has the "
            f"unknown code {codes['occupation'][0]} (expected 0..20)"
        )
    users = users.select(
        "_line",
        "user_id",
        "age",
        "gender",
        pl.col("occupation").replace_strict(
            dict(enumerate(ML1M_OCCUPATIONS)), return_dtype=pl.String
        ),
        "zip",
    )
    users = _check_unique(users, "user_id", users_path)
    items_path = folder / "movies.dat"
    items = read_table(
        items_path,
        [
            Col("item_id", pl.Int64),
            Col("title", pl.String),
            Col("genres", pl.String, required=False),
        ],
        "::",
        encoding="latin-1",
    )
    return ratings, users, _check_unique(_items_from_titles(items), "item_id", items_path)


def _parse_20m(folder: Path) -> _Parsed:
    ratings = _read_ratings(
        folder, "ratings.csv", ",", ("userId", "movieId", "rating", "timestamp")
    )
    items_path = folder / "movies.csv"
    items = read_table(
        items_path,
        [
            Col("item_id", pl.Int64),
            Col("title", pl.String),
            Col("genres", pl.String, required=False),
        ],
        ",",
        header=("movieId", "title", "genres"),
        quoted=True,
    )
    return ratings, None, _check_unique(_items_from_titles(items), "item_id", items_path)


def _items_from_titles(items: pl.DataFrame) -> pl.DataFrame:
    """`MovieID, Title (Year), Genre|Genre` -> item_id, title, year, genres (list)."""
    genres = (
        pl.col("genres")
        .fill_null("")
        .str.split("|")
        .list.eval(
            pl.element().filter((pl.element() != "") & (pl.element() != "(no genres listed)"))
        )
    )
    return items.select(
        "_line",
        "item_id",
        pl.col("title").str.strip_chars(),
        _year_from_title(pl.col("title")).alias("year"),
        genres.alias("genres"),
    )


_PARSERS = {"ml-100k": _parse_100k, "ml-1m": _parse_1m, "ml-20m": _parse_20m}
