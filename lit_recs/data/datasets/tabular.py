"""`Tabular`: an interaction log from any CSV / TSV / parquet file with named columns.

Read with polars (lazy scan, only the needed columns); `.csv.gz` / `.tsv.gz` (gzip'd text) are
read the same way. Every value is checked: a null id, a null / NaN / negative rating, a null or
negative timestamp, a missing column or an unreadable file is an error that names the file, the
column and an offending value with its row (0-based, header excluded); no row is ever dropped, and
rows keep the file's order (which breaks time ties in the splits).

Ids follow `lit_recs.data.datasets.ids`: integers, or text; in a text file a column of numbers
gives integer ids (`1.0` is 1), zero-padded codes stay text ("007" and "7" are two ids), and a
column that mixes numbers and text is an error naming the first odd value (`text_ids=True` reads
every id as text). The raw ids are kept in `Interactions.user_ids` / `item_ids`. Timestamps are
integers, or datetime / date columns (a datetime in a CSV is text, parsed with the format of its
first value), stored as int64 seconds since the epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from lit_recs.data.datasets.base import DataSource, file_suffix, file_title
from lit_recs.data.datasets.ids import index_ids
from lit_recs.data.interactions import Interactions

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
TAB_SUFFIXES = (".tsv", ".tab")
DEFAULT_RATING = "rating"
DEFAULT_TIMESTAMP = "timestamp"
INFER_ROWS = 10_000  # CSV rows used to infer column types (the whole file if that fails)


class Tabular(DataSource):
    """A (user, item[, rating][, timestamp]) log from a CSV / TSV / parquet file.

    Args:
        path: the file; ``.parquet`` / ``.pq`` is parquet, anything else delimited text, gzip'd
            when it ends in ``.gz`` (``.csv.gz``, ``.tsv.gz``).
        user_col, item_col: id columns (required).
        rating_col, timestamp_col: optional columns. ``None`` means absent; left at the default
            name ("rating" / "timestamp") and missing from the file, they are absent too (logged).
            Any other name must exist.
        separator: field separator of a text file; default tab for ``.tsv`` / ``.tab`` (also
            gzip'd), else comma.
        has_header: whether a text file starts with column names; without one, polars names the
            columns by position (``column_0``, ``column_1``, ... in polars 2).
        name: dataset name (default: the file name without its suffixes: ``log`` for
            ``log.csv.gz``).
        text_ids: read every id of a text file as text, verbatim (codes that may look like
            numbers); default: the rule of `lit_recs.data.datasets.ids`.
    """

    def __init__(
        self,
        path: str,
        user_col: str = "user_id",
        item_col: str = "item_id",
        rating_col: str | None = DEFAULT_RATING,
        timestamp_col: str | None = DEFAULT_TIMESTAMP,
        separator: str | None = None,
        has_header: bool = True,
        name: str | None = None,
        text_ids: bool = False,
    ) -> None:
        named = [c for c in (user_col, item_col, rating_col, timestamp_col) if c is not None]
        if len(set(named)) < len(named):
            raise ValueError(f"{path}: the id, rating and timestamp columns must differ: {named}")
        self.path = Path(path)
        self.user_col = user_col
        self.item_col = item_col
        self.rating_col = rating_col
        self.timestamp_col = timestamp_col
        self.separator = separator
        self.has_header = has_header
        self.name = name if name is not None else file_title(self.path)
        self.suffix = file_suffix(self.path)  # ".csv" for both log.csv and log.csv.gz
        self.is_parquet = self.suffix in PARQUET_SUFFIXES
        self.text_ids = text_ids

    def __repr__(self) -> str:
        return (
            f"Tabular({str(self.path)!r}, user_col={self.user_col!r}, item_col={self.item_col!r}, "
            f"rating_col={self.rating_col!r}, timestamp_col={self.timestamp_col!r}"
            f"{', text_ids=True' if self.text_ids else ''})"
        )

    # ---------------------------------------------------------------- reading
    def _scan(self, infer_rows: int | None = INFER_ROWS, ids_as_text: bool = False) -> pl.LazyFrame:
        if self.is_parquet:
            return pl.scan_parquet(self.path)
        sep = self.separator
        if sep is None:
            sep = "\t" if self.suffix in TAB_SUFFIXES else ","
        text = {self.user_col: pl.String, self.item_col: pl.String} if ids_as_text else None
        return pl.scan_csv(
            self.path,
            separator=sep,
            has_header=self.has_header,
            infer_schema_length=infer_rows,
            schema_overrides=text,
        )

    def _columns(self, available: list[str]) -> dict[str, str]:
        """Role -> column name of the columns to read; errors name the missing column."""
        cols = {"user": self.user_col, "item": self.item_col}
        optional = (
            ("rating", self.rating_col, DEFAULT_RATING),
            ("timestamp", self.timestamp_col, DEFAULT_TIMESTAMP),
        )
        for role, col, default in optional:
            if col is None:
                continue
            if col in available or col != default:
                cols[role] = col
            else:
                log.info("%s: no column '%s': loading without %ss", self.path, col, role)
        hint = "" if self.has_header else " (no header: polars names the columns by position)"
        for role, col in cols.items():
            if col not in available:
                raise ValueError(
                    f"{self.path}: no column '{col}' ({role}_col); the file has columns "
                    f"{available}{hint}"
                )
        return cols

    def _read(self) -> tuple[pl.DataFrame, dict[str, str]]:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.name}: file not found: {self.path}")
        if not self.path.is_file():
            raise ValueError(f"{self.name}: not a file: {self.path}")
        if self.is_parquet and (self.separator is not None or not self.has_header):
            log.warning("%s: separator / has_header ignored for parquet", self.path)
        try:
            available = self._scan().collect_schema().names()
            cols = self._columns(available)
            select = list(cols.values())
            try:
                frame = self._scan(ids_as_text=True).select(select).collect()
            except pl.exceptions.PolarsError:
                if self.is_parquet:
                    raise
                # a type inferred from the first rows failed later on: infer from the whole file
                frame = self._scan(infer_rows=None, ids_as_text=True).select(select).collect()
        except (pl.exceptions.PolarsError, OSError) as err:
            kind = "parquet" if self.is_parquet else "delimited text"
            raise ValueError(f"{self.path}: cannot read as {kind}: {err}") from err
        return frame, cols

    # ---------------------------------------------------------------- checks
    def _fail(self, col: str, what: str, bad: pl.Series, values: pl.Series) -> None:
        """Raise naming the column, the number of bad rows and the first one, if any row is bad."""
        bad = bad.fill_null(True)
        count = int(bad.sum())
        if count:
            row = int(bad.arg_true()[0])
            raise ValueError(
                f"{self.path}: column '{col}' has {count} {what}; first at row {row} "
                f"(0-based, header excluded): {values[row]!r}"
            )

    def _ids(self, s: pl.Series, col: str) -> tuple[np.ndarray, np.ndarray]:
        """(contiguous index [n] int64, sorted raw ids) of an id column."""
        return index_ids(s, col, str(self.path), lambda row: f"row {row} (0-based, header excluded)",
                         declared=self.is_parquet, text_ids=self.text_ids)

    def _ratings(self, s: pl.Series, col: str) -> np.ndarray:
        if s.dtype == pl.String:
            parsed = s.str.strip_chars().cast(pl.Float64, strict=False)
            self._fail(col, "non-numeric ratings", parsed.is_null() & s.is_not_null(), s)
            s = parsed
        elif not s.dtype.is_numeric():
            raise ValueError(
                f"{self.path}: column '{col}' has type {s.dtype}: ratings must be numbers"
            )
        s = s.cast(pl.Float64)
        self._fail(col, "null ratings", s.is_null(), s)
        self._fail(col, "NaN or infinite ratings", ~s.is_finite(), s)
        self._fail(col, "negative ratings", s < 0, s)
        return s.to_numpy().astype(np.float32)

    def _timestamps(self, s: pl.Series, col: str) -> np.ndarray:
        raw = s
        self._fail(col, "null timestamps", s.is_null(), raw)
        dtype = s.dtype
        if dtype == pl.String:
            text = s.str.strip_chars()
            as_int = text.cast(pl.Int64, strict=False)
            if as_int.null_count() == 0:
                s = as_int
            else:
                try:  # the format is inferred from the first value
                    parsed = text.str.to_datetime(strict=False)
                except pl.exceptions.PolarsError:
                    parsed = pl.Series(s.name, [None] * len(s), dtype=pl.Datetime)
                neither = as_int.is_null() & parsed.is_null()
                self._fail(col, "timestamps that are neither integers nor dates", neither, raw)
                self._fail(
                    col, "timestamps not in the format of the first date", parsed.is_null(), raw
                )
                s = parsed.dt.epoch("s")
        elif isinstance(dtype, (pl.Datetime, pl.Date)):
            s = s.dt.epoch("s")
        elif dtype.is_float():
            self._fail(col, "NaN or infinite timestamps", ~s.is_finite(), raw)
            self._fail(col, "timestamps with fractional seconds", s != s.floor(), raw)
            s = s.cast(pl.Int64)
        elif dtype.is_integer():
            s = s.cast(pl.Int64, strict=False)
            self._fail(col, "timestamps beyond int64", s.is_null(), raw)
        else:
            raise ValueError(
                f"{self.path}: column '{col}' has type {dtype}: timestamps must be integers "
                "(seconds), datetimes or dates"
            )
        self._fail(col, "negative timestamps", s < 0, raw)
        return s.to_numpy().astype(np.int64)

    # ---------------------------------------------------------------- load
    def load(self) -> Interactions:
        frame, cols = self._read()
        if frame.height == 0:
            raise ValueError(f"{self.path}: no rows")
        users, user_ids = self._ids(frame[cols["user"]], cols["user"])
        items, item_ids = self._ids(frame[cols["item"]], cols["item"])
        ratings = timestamps = None
        if "rating" in cols:
            ratings = self._ratings(frame[cols["rating"]], cols["rating"])
        if "timestamp" in cols:
            timestamps = self._timestamps(frame[cols["timestamp"]], cols["timestamp"])
        inter = Interactions(
            users=users,
            items=items,
            num_users=len(user_ids),
            num_items=len(item_ids),
            user_ids=user_ids,
            item_ids=item_ids,
            ratings=ratings,
            timestamps=timestamps,
            name=self.name,
        )
        log.info("%s (from %s, columns %s)", inter.summary(), self.path, cols)
        return inter
