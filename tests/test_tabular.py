"""Tabular: CSV / TSV / parquet round trips; each defect is an error naming file and column."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lit_recs.data.datasets.tabular import Tabular
from lit_recs.data.interactions import Interactions

USERS = [10, 10, 2, 7, 2]
ITEMS = [100, 5, 5, 100, 42]
RATINGS = [4.0, 3.5, 5.0, 1.0, 0.0]
STAMPS = [1_000, 2_000, 500, 1_500, 900]


def frame(users=USERS, items=ITEMS, **extra) -> pl.DataFrame:
    return pl.DataFrame({"user_id": users, "item_id": items, **extra})


def write(df: pl.DataFrame, path: Path) -> str:
    if path.suffix == ".parquet":
        df.write_parquet(path)
    else:
        df.write_csv(path, separator="\t" if path.suffix == ".tsv" else ",")
    return str(path)


def check(inter: Interactions, users, items, ratings=None, stamps=None) -> None:
    """`inter` equals the log indexed the reference way (Interactions.from_raw)."""
    ref = Interactions.from_raw(np.array(users), np.array(items), ratings, stamps)
    assert (inter.num_users, inter.num_items) == (ref.num_users, ref.num_items)
    assert len(inter) == len(ref)
    for col in ("users", "items", "user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(inter, col), getattr(ref, col))
    assert inter.users.dtype == inter.items.dtype == np.int64
    if ratings is None:
        assert inter.ratings is None
    else:
        assert inter.ratings.dtype == np.float32
        np.testing.assert_array_equal(inter.ratings, np.float32(ratings))
    if stamps is None:
        assert inter.timestamps is None
    else:
        assert inter.timestamps.dtype == np.int64
        np.testing.assert_array_equal(inter.timestamps, stamps)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_int_ids_round_trip(tmp_path, suffix):
    df = frame(rating=RATINGS, timestamp=STAMPS)
    inter = Tabular(write(df, tmp_path / f"log{suffix}")).load()
    check(inter, USERS, ITEMS, RATINGS, STAMPS)
    assert inter.name == "log"
    assert inter.user_ids.dtype == np.int64


@pytest.mark.parametrize("users", [[3, 1, 3, 2, 1], [10**15, -5, 10**15, 7, -5]])
def test_int_ids_compact_and_sparse_index_alike(tmp_path, users):
    """Compact integer ids take a lookup table, sparse ones a join: the same indices as np.unique."""
    items = [2**62, 9, 9, 2**62 + 1, 9]
    inter = Tabular(write(frame(users, items), tmp_path / "x.parquet")).load()
    check(inter, users, items)
    assert inter.users.dtype == inter.items.dtype == np.int64


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_string_ids_round_trip(tmp_path, suffix):
    users = ["bob", "bob", "x y", "zoë", "x y"]
    items = ["007", "7", "7", "08", "007"]  # zero-padded codes: "007" and "7" are different ids
    df = frame(users, items, rating=RATINGS, timestamp=STAMPS)
    inter = Tabular(write(df, tmp_path / f"s{suffix}")).load()
    check(inter, users, items, RATINGS, STAMPS)
    assert list(inter.item_ids) == ["007", "08", "7"]
    assert list(inter.user_ids) == ["bob", "x y", "zoë"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_datetime_and_date_timestamps(tmp_path, suffix):
    when = [dt.datetime(2020, 1, 1, 12, 0, 30) + dt.timedelta(hours=h) for h in range(5)]
    day = [dt.date(2021, 3, d) for d in range(1, 6)]
    df = frame(when=when, day=day)
    path = write(df, tmp_path / f"t{suffix}")
    epoch = [int(w.replace(tzinfo=dt.timezone.utc).timestamp()) for w in when]
    check(Tabular(path, timestamp_col="when").load(), USERS, ITEMS, None, epoch)
    days = [int(dt.datetime.combine(d, dt.time(), dt.timezone.utc).timestamp()) for d in day]
    check(Tabular(path, timestamp_col="day").load(), USERS, ITEMS, None, days)


def test_datetime_text_formats(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("user_id,item_id,timestamp\n1,2,2020-01-01 00:00:10\n1,3, 2020-01-02\n")
    assert list(Tabular(str(path)).load().timestamps) == [1_577_836_810, 1_577_923_200]


def test_missing_optional_columns(tmp_path, caplog):
    path = write(frame(), tmp_path / "bare.csv")
    with caplog.at_level(logging.INFO, logger="lit_recs.data.datasets.tabular"):
        inter = Tabular(path).load()
    check(inter, USERS, ITEMS)
    assert "no column 'rating'" in caplog.text and "no column 'timestamp'" in caplog.text
    # present columns can be switched off
    path = write(frame(rating=RATINGS, timestamp=STAMPS), tmp_path / "full.parquet")
    check(Tabular(path, rating_col=None, timestamp_col=None).load(), USERS, ITEMS)


def test_custom_names_separator_and_no_header(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("u1|i1|5|30\nu2|i1|3|40\nu1|i2|4|20\n")
    src = Tabular(
        str(path), "column_0", "column_1", "column_2", "column_3", separator="|",
        has_header=False, name="mine",
    )  # fmt: skip
    inter = src.load()
    assert inter.name == "mine"
    check(inter, ["u1", "u2", "u1"], ["i1", "i1", "i2"], [5, 3, 4], [30, 40, 20])


def test_nothing_dropped_duplicates_kept(tmp_path):
    df = frame([1, 1, 1], [2, 2, 3], rating=[1, 2, 3])
    inter = Tabular(write(df, tmp_path / "d.csv")).load()
    assert len(inter) == 3 and list(inter.ratings) == [1, 2, 3]


def test_late_type_change_in_csv(tmp_path):
    """A value after the type-inference window changes the column type: read, not dropped."""
    rows = "".join(f"{i},{i % 7},4\n" for i in range(12_000))
    path = tmp_path / "late.csv"
    path.write_text("user_id,item_id,rating\n" + rows + "12000,7.0,4.5\n")
    inter = Tabular(str(path)).load()
    assert len(inter) == 12_001 and inter.ratings[-1] == 4.5
    assert inter.item_ids.dtype == np.int64 and inter.item_ids[inter.items[-1]] == 7
    # a text id among numbers is an error naming it, never a silent switch to text ids
    path.write_text("user_id,item_id,rating\n" + rows + "12000,x,4.5\n")
    raises(path, ["column 'item_id' mixes numbers and text", "row 12000", "'x'"])


# ------------------------------------------------------------------ errors
def raises(path, match: list[str], exc=ValueError, **kw) -> str:
    with pytest.raises(exc) as info:
        Tabular(str(path), **kw).load()
    msg = str(info.value)
    for part in [str(path), *match]:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def test_file_not_found(tmp_path):
    raises(tmp_path / "nope.csv", ["not found"], FileNotFoundError)


def test_missing_column_lists_columns(tmp_path):
    path = write(frame(score=RATINGS), tmp_path / "m.csv")
    raises(path, ["'uid'", "user_col", "['user_id', 'item_id', 'score']"], user_col="uid")
    raises(path, ["'stars'", "rating_col", "score"], rating_col="stars")
    raises(path, ["'time'", "timestamp_col"], timestamp_col="time")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_null_ids(tmp_path, suffix):
    path = write(frame(items=[100, None, 5, 100, 42]), tmp_path / f"n{suffix}")
    raises(path, ["'item_id'", "1 null ids", "row 1"])
    path = write(frame(users=["a", "b", None, None, "c"]), tmp_path / f"s{suffix}")
    raises(path, ["'user_id'", "2 null ids", "row 2"])


def test_bad_ratings(tmp_path):
    cases = {
        "nan": ([4.0, float("nan"), 5, 1, 0], ["NaN", "row 1", "nan"]),
        "null": ([4.0, 3.0, None, 1, 0], ["null ratings", "row 2"]),
        "neg": ([4.0, 3.0, 5, -1, 0], ["negative ratings", "row 3", "-1.0"]),
    }
    for name, (ratings, match) in cases.items():
        for suffix in (".csv", ".parquet"):
            path = write(frame(rating=ratings), tmp_path / f"{name}{suffix}")
            raises(path, ["'rating'", *match])
    path = tmp_path / "text.csv"
    path.write_text("user_id,item_id,rating\n1,2,4\n1,3,five\n")
    raises(path, ["'rating'", "non-numeric", "row 1", "'five'"])


def test_bad_timestamps(tmp_path):
    for suffix in (".csv", ".parquet"):
        path = write(frame(timestamp=[1, 2, -5, 4, 5]), tmp_path / f"neg{suffix}")
        raises(path, ["'timestamp'", "negative timestamps", "row 2", "-5"])
        path = write(frame(timestamp=[1, None, 3, 4, 5]), tmp_path / f"null{suffix}")
        raises(path, ["'timestamp'", "null timestamps", "row 1"])
    path = write(frame(when=[dt.datetime(1969, 12, 31)] + [dt.datetime(2020, 1, 1)] * 4),
                 tmp_path / "old.parquet")  # fmt: skip
    raises(path, ["'when'", "negative timestamps", "row 0", "1969"], timestamp_col="when")
    path = tmp_path / "junk.csv"
    path.write_text("user_id,item_id,timestamp\n1,2,100\n1,3,yesterday\n")
    raises(path, ["'timestamp'", "neither integers nor dates", "row 1", "'yesterday'"])


def test_unreadable_files(tmp_path):
    path = tmp_path / "junk.parquet"
    path.write_bytes(b"not a parquet file")
    raises(path, ["cannot read as parquet"])
    path = tmp_path / "ragged.csv"
    path.write_text("user_id,item_id\n1,2\n3,4,5,6\n")
    raises(path, ["cannot read as delimited text"])
    path = tmp_path / "empty.csv"
    path.write_text("user_id,item_id\n")
    raises(path, ["no rows"])


def test_same_column_twice_rejected(tmp_path):
    with pytest.raises(ValueError, match="must differ"):
        Tabular(str(tmp_path / "x.csv"), user_col="id", item_col="id")
