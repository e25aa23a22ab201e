"""GroupLens MovieLens file formats: the ratings, users and items files of ML-100K / 1M / 20M
parsed into polars frames and checked (every error names the file and line), and the parquet cache
of large parsed ratings files.

Parsed ratings of large files (ML-20M) are cached as parquet under the user cache dir, keyed by the
source folder path and the files' sizes and mtimes; a cache that cannot be written is skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import polars as pl

from lit_recs.data.datasets.delimited import Col, read_table

log = logging.getLogger(__name__)

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


PARSERS = {"ml-100k": _parse_100k, "ml-1m": _parse_1m, "ml-20m": _parse_20m}
