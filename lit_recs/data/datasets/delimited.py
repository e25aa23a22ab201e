"""Strict reading of delimited text files: an explicit schema, and every error names the file,
the line and the column at fault (MovieLens' `::`-separated .dat files, tab- and comma-separated
files, any encoding)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl


@dataclass(frozen=True)
class Col:
    """A column of a delimited file: its name, polars dtype, and whether a value is required."""

    name: str
    dtype: type[pl.DataType] | pl.DataType
    required: bool = True


def read_table(
    path: Path,
    cols: list[Col],
    sep: str,
    *,
    header: tuple[str, ...] | None = None,
    encoding: str = "utf-8",
    quoted: bool = False,
) -> pl.DataFrame:
    """Read a delimited file with an explicit schema; bad lines raise ValueError naming them.

    Adds `_line` (1-based line number in the file); blank lines are dropped.
    """
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    one_char = len(sep) == 1
    if one_char and encoding.lower().replace("-", "") in ("utf8", "ascii"):
        source: Path | io.BytesIO = path  # polars reads (memory-maps) the file itself
    else:
        data = path.read_bytes()
        if not one_char:
            data = data.replace(sep.encode("ascii"), b"\x1f")
        if encoding.lower().replace("-", "") not in ("utf8", "ascii"):
            data = data.decode(encoding).encode("utf-8")
        source = io.BytesIO(data)
    psep = sep if one_char else "\x1f"
    names = [c.name for c in cols]
    first = 1
    if header is not None:
        _check_header(path, header, sep, encoding)
        first = 2
    try:
        df = pl.read_csv(
            source,
            has_header=False,
            skip_rows=first - 1,
            separator=psep,
            quote_char='"' if quoted else None,
            schema={c.name: c.dtype for c in cols},
        )
    except pl.exceptions.PolarsError as err:
        if isinstance(source, io.BytesIO):
            source.seek(0)
            text = source.read().decode("utf-8")
        else:
            text = path.read_text(encoding=encoding)
        _diagnose(path, text, cols, psep, sep, first, quoted)
        raise ValueError(f"cannot parse {path} as {sep!r}-separated {names}: {err}") from err
    df = df.with_row_index("_line", offset=first).with_columns(pl.col("_line").cast(pl.Int64))
    df = df.filter(~pl.all_horizontal([pl.col(n).is_null() for n in names]))
    for c in cols:
        if c.required:
            bad = df.filter(pl.col(c.name).is_null())
            if len(bad):
                raise ValueError(
                    f"{path}, line {bad['_line'][0]}: missing value in column "
                    f"'{c.name}' (expected {len(cols)} {sep!r}-separated fields: "
                    f"{', '.join(names)})"
                )
    return df


def _check_header(path: Path, header: tuple[str, ...], sep: str, encoding: str) -> None:
    with open(path, encoding=encoding, newline="") as f:
        got = f.readline().rstrip("\r\n")
    if [h.strip() for h in got.split(sep)] != list(header):
        raise ValueError(
            f"{path}, line 1: expected the header {sep.join(header)!r}, found {got[:200]!r}"
        )


_INT = re.compile(r"[+-]?\d+")


def _diagnose(
    path: Path, text: str, cols: list[Col], psep: str, sep: str, first: int, quoted: bool
) -> None:
    """Find the first line that does not fit `cols` and raise a ValueError that names it."""
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text), delimiter=psep, quoting=quoting, strict=quoted)
    for lineno, row in enumerate(reader, start=1):
        if lineno < first or not row:
            continue
        where = f"{path}, line {lineno}"
        if len(row) != len(cols):
            shown = sep.join(row)
            raise ValueError(
                f"{where}: expected {len(cols)} {sep!r}-separated fields "
                f"({', '.join(c.name for c in cols)}), found {len(row)}: "
                f"{shown[:200]!r}"
            )
        for c, value in zip(cols, row, strict=True):
            if value == "":
                continue
            if c.dtype in (pl.Int8, pl.Int16, pl.Int32, pl.Int64) and not _INT.fullmatch(value):
                raise ValueError(f"{where}: column '{c.name}' must be an integer, found {value!r}")
            if c.dtype in (pl.Float32, pl.Float64):
                try:
                    float(value)
                except ValueError:
                    raise ValueError(
                        f"{where}: column '{c.name}' must be a number, found {value!r}"
                    ) from None
