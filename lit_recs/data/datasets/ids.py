"""Raw ids -> contiguous indices, by one rule for every file format (`Tabular`, `SequenceFile`).

A column's ids are either numbers or text, never a mix:

- typed columns (parquet, or a built-in loader): integers are integer ids; floats must be whole
  numbers (`1.0` is id 1); strings / categoricals are text ids, as declared;
- columns of text (CSV, TSV, gzip'd text, sequence files) are read as text and decided as a whole:
  - every id a number -> integer ids: `7`, `+7`, ` 7 `, `7.0`, `7.`, `7e0` are all id 7; a number that
    is not whole (`7.5`) or beyond int64 is an error naming it;
  - every id a number, one of them zero-padded (`007`) -> text ids, verbatim: the column holds codes,
    so `007` and `7` are two different ids;
  - no id a number -> text ids, verbatim (`x y` keeps its blank);
  - numbers and text in one column -> an error naming the column, how many ids are of each kind and
    the first id of the rarer kind with its row (a stray header line, `NA`, a code among numbers);
- `text_ids=True` reads every id of a text column as text, verbatim, without these checks (codes
  that may look like numbers, e.g. Amazon's ASINs, where books' are all digits).

Indices follow the sorted raw ids (numerically for integers, by code point for text), so the same
log gives the same indices from any format.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from lit_recs.data.interactions import table_index

NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"  # decimal or scientific notation
PADDED = r"^[+-]?0[0-9]"  # a leading zero before another digit: a code such as 007
WHOLE = r"^[+-]?[0-9]+\.?0*$"  # 7, 7., 7.000: whole numbers without an exponent
INT64_MAX = np.iinfo(np.int64).max
TEXT_IDS_HINT = "`text_ids: true` reads every id as text, verbatim"


def first_bad(bad: pl.Series) -> int | None:
    """Row of the first True in `bad` (nulls count as bad); None when there is none."""
    bad = bad.fill_null(True)
    return int(bad.arg_true()[0]) if bool(bad.any()) else None


def check(bad: pl.Series, what: str, values: pl.Series, col: str, where: str,
          locate: Callable[[int], str], hint: str = "") -> None:
    """Raise naming the column, the number of bad rows and the first one, if any row is bad."""
    bad = bad.fill_null(True)
    count = int(bad.sum())
    if count:
        row = int(bad.arg_true()[0])
        raise ValueError(f"{where}: column '{col}' has {count:,} {what}; first at {locate(row)}: "
                         f"{values[row]!r}{hint}")


def index_ids(
    s: pl.Series,
    col: str,
    where: str,
    locate: Callable[[int], str],
    declared: bool = False,
    text_ids: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(contiguous index [n] int64, sorted raw ids [K]) of an id column.

    `where` starts every error (the file), `locate(row)` names a row in it ("row 3 (0-based,
    header excluded)", "line 4"). `declared`: a string column's type was declared by the file
    (parquet), so its values are text ids as they are; otherwise a string column is text read from
    a text file and decided by the rule above, unless `text_ids`.
    """

    def fail(bad: pl.Series, what: str) -> None:
        check(bad, what, s, col, where, locate)

    fail(s.is_null(), "null ids")
    dtype = s.dtype
    if dtype.is_float():
        fail(~s.is_finite(), "NaN or infinite ids")
        fail(s != s.floor(), "ids that are not whole numbers")
        fail(s.abs() >= 2.0**63, "ids beyond int64")
        s = s.cast(pl.Int64)
    elif isinstance(dtype, (pl.Categorical, pl.Enum)):
        s = s.cast(pl.String)
    elif dtype.is_integer():
        if dtype == pl.UInt64:
            fail(s > INT64_MAX, "ids beyond int64")
        s = s.cast(pl.Int64)
    elif dtype == pl.String:
        if not declared and not text_ids:
            s = _text_column(s, col, where, locate)
    else:
        raise ValueError(f"{where}: column '{col}' has type {dtype}: ids must be integers or text")
    return _index(s)


def _text_column(s: pl.Series, col: str, where: str, locate: Callable[[int], str]) -> pl.Series:
    """A column of text ids read from a text file: integer ids when every id is a number (not
    zero-padded), the text itself when none is, an error when both kinds occur."""
    text = s.str.strip_chars()
    number = text.str.contains(NUMBER)
    n_number = int(number.sum())
    if n_number == 0:
        return s
    if n_number < len(s):
        n_text = len(s) - n_number
        # the rarer kind is the offender (a tie: the kind the first row is not)
        odd_text = n_text < n_number or (n_text == n_number and bool(number[0]))
        row = first_bad(~number if odd_text else number)
        kind = "id that is not a number" if odd_text else "number"
        raise ValueError(
            f"{where}: column '{col}' mixes numbers and text ({n_number:,} of its {len(s):,} "
            f"ids are numbers); first {kind} at {locate(row)}: {s[row]!r}. Ids must be all "
            f"numbers (integer ids) or all text; {TEXT_IDS_HINT}"
        )
    if bool(text.str.contains(PADDED).any()):
        return s  # zero-padded codes: text ids, so 007 and 7 stay two ids
    hint = f"; {TEXT_IDS_HINT}"
    whole = text.str.contains(WHOLE)
    ints = text.str.replace(r"\.0*$", "").cast(pl.Int64, strict=False)
    check(whole & ints.is_null(), "ids beyond int64", s, col, where, locate, hint)
    if bool(whole.all()):
        return ints
    floats = text.cast(pl.Float64, strict=False)  # scientific notation, fractions
    check(~whole & (floats != floats.floor()), "ids that are not whole numbers", s, col, where,
          locate)
    check(~whole & (floats.abs() >= 2.0**53), "ids in scientific notation too large to be exact",
          s, col, where, locate, hint)
    return ints.zip_with(whole, floats.cast(pl.Int64))


def _index(s: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    if s.dtype == pl.Int64:  # integer ids in a compact range: a lookup table, no hashing
        table = table_index(s.to_numpy())
        if table is not None:
            return table[1], table[0]
    ids = s.unique().sort()
    codes = pl.DataFrame({"id": ids, "index": pl.int_range(len(ids), eager=True, dtype=pl.Int64)})
    index = pl.DataFrame({"id": s}).join(codes, on="id", how="left", maintain_order="left")
    return index["index"].to_numpy(), ids.to_numpy()
