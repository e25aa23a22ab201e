"""Field encoding: interactions plus side features -> padded feature slots (FM, FFM, two-tower).

A *field* is one column of information; every value a field can take is a *feature* with a global id
(fields own consecutive id ranges). A row is a set of slots `(field, feature id, value)`:

- `categorical`: one slot, value 1 (`user_id` / `item_id` are the contiguous indices; any other
  column of the user or item table works: distinct values, null included, become features);
- `multi_hot` (a list column such as `genres`): one slot per element, padded to the longest list,
  value 1/n (`multi_hot_weight: mean`) or 1 (`one`);
- `numeric`: one slot with one feature, value = the column min-max scaled to [0, 1] (null -> 0),
  so the model learns value x embedding; `user_count` / `item_count` are derived: log(1 + number of
  training interactions), scaled the same way;
- `text` (a string column such as `title`): a hashed bag of words: lower-cased alphanumeric
  words, each hashed (CRC-32) into one of `text_buckets` features, one slot per word, value 1/n;
- `context` (`hour`, `weekday` of the interaction's timestamp, UTC): one categorical slot each.

User fields, then item fields, then context fields; the slots of user and item fields are computed
once per user / item (`FeatureTables.user`, `.item`) and a batch of rows is three fancy-indexing
operations and a concatenation (`FeatureTables.rows`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from lit_recs.data.interactions import Interactions

CONTEXT = {"hour": 24, "weekday": 7}
COUNTS = {"user_count": "user", "item_count": "item"}
Kind = Literal["categorical", "multi_hot", "numeric", "text", "context"]
Side = Literal["user", "item", "context"]


@dataclass
class Slots:
    """Padded slots of R rows: slot s of row r is (field[r, s], index[r, s], value[r, s])."""

    index: np.ndarray  # [R, S] int64 global feature id (0 on padding)
    value: np.ndarray  # [R, S] float32 (0 on padding: a padded slot adds nothing)
    field: np.ndarray  # [R, S] int64

    def __len__(self) -> int:
        return len(self.index)

    @staticmethod
    def concat(parts: list[Slots], rows: int) -> Slots:
        """Slots side by side: [R, S1], [R, S2], ... -> [R, S1 + S2 + ...] ([R, 0] for none)."""
        if not parts:
            return Slots(np.zeros((rows, 0), np.int64), np.zeros((rows, 0), np.float32),
                         np.zeros((rows, 0), np.int64))
        return Slots(*(np.concatenate([getattr(p, a) for p in parts], 1)
                       for a in ("index", "value", "field")))


@dataclass(frozen=True)
class Field:
    """One field: its number, where its feature ids start and how many it has."""

    name: str
    kind: Kind
    side: Side
    number: int  # field id, 0..F-1
    offset: int  # first global feature id
    size: int  # number of features
    vocabulary: tuple[str, ...] = ()  # categorical / multi-hot: the value of each feature


@dataclass
class FeatureTables:
    """The field encoding of a data set: per-user and per-item slots, context from timestamps."""

    fields: list[Field]
    user: Slots  # [U, Su]
    item: Slots  # [I, Si]

    @property
    def num_features(self) -> int:
        return max((f.offset + f.size for f in self.fields), default=0)

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    def side(self, side: Side) -> list[Field]:
        return [f for f in self.fields if f.side == side]

    def context(self, timestamps: np.ndarray | None) -> Slots:
        """Context slots of interactions [R] (timestamps in seconds) -> [R, Sc]."""
        fields = self.side("context")
        n = 0 if timestamps is None else len(timestamps)
        if fields and timestamps is None:
            raise ValueError(f"context fields {[f.name for f in fields]} need timestamps")
        cols = [f.offset + _context_value(f.name, timestamps) for f in fields]  # [R] each
        index = np.stack(cols, 1) if cols else np.zeros((n, 0), np.int64)  # [R, Sc]
        field = np.broadcast_to(np.array([f.number for f in fields], np.int64), index.shape)
        return Slots(index, np.ones(index.shape, np.float32), np.ascontiguousarray(field))

    def rows(self, users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None = None
             ) -> Slots:
        """Feature rows of (user, item[, time]) triples [R] -> Slots [R, Su + Si + Sc].

        Every slot column belongs to one field, so `field` is `slot_fields()` broadcast.
        """
        index = [self.user.index[users], self.item.index[items]]
        value = [self.user.value[users], self.item.value[items]]
        if self.side("context"):
            context = self.context(timestamps)
            index.append(context.index)
            value.append(context.value)
        index_, value_ = np.concatenate(index, 1), np.concatenate(value, 1)  # [R, S]
        field = np.broadcast_to(self.slot_fields(), index_.shape).copy()  # [R, S]
        return Slots(index_, value_, field)

    def slot_fields(self) -> np.ndarray:
        """The field of each slot column of `rows` [Su + Si + Sc]."""
        context = np.array([f.number for f in self.side("context")], np.int64)
        return np.concatenate([self.user.field[0], self.item.field[0], context])


def _context_value(name: str, timestamps: np.ndarray) -> np.ndarray:
    ts = np.asarray(timestamps, np.int64)
    if name == "hour":
        return (ts // 3600) % 24
    return (ts // 86400 + 3) % 7  # 1970-01-01 was a Thursday: Monday = 0


def encode_fields(
    data: Interactions,
    categorical: list[str],
    multi_hot: list[str] = (),
    numeric: list[str] = (),
    context: list[str] = (),
    multi_hot_weight: Literal["mean", "one"] = "mean",
    counts_from: Interactions | None = None,
    text: list[str] = (),
    text_buckets: int = 4096,
) -> FeatureTables:
    """Build the FeatureTables of `data` (its users, items and side-feature frames).

    `counts_from` is the log that `user_count` / `item_count` count (the training split, so that no
    held-out interaction leaks into a feature); default `data`.
    """
    wanted = [(c, "categorical") for c in categorical] + [(c, "multi_hot") for c in multi_hot] + \
        [(c, "numeric") for c in numeric] + [(c, "text") for c in text]
    _check_spec(data, [c for c, _ in wanted], list(context), multi_hot_weight)
    if text and text_buckets < 1:
        raise ValueError(f"text_buckets must be >= 1, got {text_buckets}")
    sides = {c: _side_of(data, c) for c, _ in wanted}
    counts = counts_from if counts_from is not None else data
    fields: list[Field] = []
    tables: dict[str, Slots] = {}
    for side, rows in (("user", data.num_users), ("item", data.num_items)):
        blocks = []
        for col, kind in wanted:
            if sides[col] != side:
                continue
            slots, size, vocab = _encode_column(data, counts, col, kind, side, multi_hot_weight,
                                                text_buckets)
            offset = sum(f.size for f in fields)
            field = Field(col, kind, side, len(fields), offset, size, vocab)  # type: ignore[arg-type]
            slots.index += offset  # padded slots (value 0) add nothing, whatever their id
            slots.field[:] = field.number
            fields.append(field)
            blocks.append(slots)
        tables[side] = Slots.concat(blocks, rows)
    for c in context:
        fields.append(Field(c, "context", "context", len(fields), sum(f.size for f in fields),
                            CONTEXT[c]))
    return FeatureTables(fields, tables["user"], tables["item"])


def _check_spec(data: Interactions, columns: list[str], context: list[str], weight: str) -> None:
    if weight not in ("mean", "one"):
        raise ValueError(f"multi_hot_weight must be 'mean' or 'one', got {weight!r}")
    names = columns + context
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise ValueError(f"columns listed twice among the fields: {duplicated}")
    if not names:
        raise ValueError("no fields: list at least one column (e.g. categorical: [user_id, item_id])")
    for c in context:
        if c not in CONTEXT:
            raise ValueError(f"context field {c!r} is unknown: use {sorted(CONTEXT)}")
        if data.timestamps is None:
            raise ValueError(f"context field {c!r} needs timestamps and {data.name} has none")


def _encode_column(data: Interactions, counts: Interactions, col: str, kind: str, side: Side,
                   weight: str, buckets: int = 4096) -> tuple[Slots, int, tuple[str, ...]]:
    """One user or item column -> (slots with local ids, number of features, vocabulary)."""
    rows = data.num_users if side == "user" else data.num_items
    if col in ("user_id", "item_id") and kind == "categorical":  # the index itself
        raw = data.user_ids if side == "user" else data.item_ids
        return _single(np.arange(rows), np.ones(rows, np.float32)), rows, tuple(map(str, raw))
    values = _column(data, counts, col, side)
    if kind == "text":
        return _hashed_words(values, col, buckets)
    return _encode(values, kind, col, weight, rows)


def _side_of(data: Interactions, col: str) -> Side:
    if col in ("user_id", "user_count"):
        return "user"
    if col in ("item_id", "item_count"):
        return "item"
    in_user = data.user_features is not None and col in data.user_features.columns
    in_item = data.item_features is not None and col in data.item_features.columns
    if in_user and in_item:
        raise ValueError(f"column {col!r} is in both the user and the item table of {data.name}")
    if not (in_user or in_item):
        available = {side: [] if df is None else [c for c in df.columns]
                     for side, df in (("user", data.user_features), ("item", data.item_features))}
        raise ValueError(f"field column {col!r} is in neither the user table {available['user']} "
                         f"nor the item table {available['item']} of {data.name} (also: user_id, "
                         f"item_id, user_count, item_count)")
    return "user" if in_user else "item"


def _column(data: Interactions, counts: Interactions, col: str, side: Side) -> pl.Series:
    n = data.num_users if side == "user" else data.num_items
    if col in ("user_id", "item_id"):
        return pl.Series(col, np.arange(n))
    if col in COUNTS:
        ids = counts.users if side == "user" else counts.items
        return pl.Series(col, np.log1p(np.bincount(ids, minlength=n)).astype(np.float64))
    table = data.user_features if side == "user" else data.item_features
    return table[col]


def _encode(values: pl.Series, kind: str, col: str, weight: str, rows: int
            ) -> tuple[Slots, int, tuple[str, ...]]:
    """One column [rows] -> (slots [rows, S] with local ids, number of features, vocabulary)."""
    if kind == "numeric":
        if not values.dtype.is_numeric():
            raise ValueError(f"numeric field {col!r} has non-numeric type {values.dtype}")
        x = values.cast(pl.Float64).to_numpy()  # [rows], NaN for nulls
        ok = np.isfinite(x)
        lo, hi = (x[ok].min(), x[ok].max()) if ok.any() else (0.0, 1.0)
        span = hi - lo
        scaled = np.where(ok, (x - lo) / span if span > 0 else 1.0, 0.0)  # [rows] in [0, 1]
        return _single(np.zeros(rows, np.int64), scaled.astype(np.float32)), 1, ()
    if kind == "categorical":
        if isinstance(values.dtype, pl.List):
            raise ValueError(f"categorical field {col!r} holds lists: list it under multi_hot")
        text = values.cast(pl.String).fill_null("<null>").to_numpy().astype(str)
        vocab, ids = np.unique(text, return_inverse=True)
        return (_single(ids.astype(np.int64), np.ones(rows, np.float32)), len(vocab),
                tuple(str(v) for v in vocab))
    if not isinstance(values.dtype, pl.List):
        raise ValueError(f"multi-hot field {col!r} must be a list column, got {values.dtype}")
    present = values.list.drop_nulls()  # null elements are no feature
    lengths = present.list.len().fill_null(0).to_numpy().astype(np.int64)  # [rows]
    tokens = present.explode().drop_nulls().cast(pl.String).to_numpy().astype(str)  # [sum n]
    vocab, ids = np.unique(tokens, return_inverse=True)
    return (_ragged(ids.astype(np.int64), lengths, weight), max(len(vocab), 1),
            tuple(str(v) for v in vocab))


def _ragged(ids: np.ndarray, lengths: np.ndarray, weight: str) -> Slots:
    """Row r's lengths[r] consecutive ids [sum n] -> slots [rows, max n], value 1 or 1/n."""
    rows = len(lengths)
    width = max(1, int(lengths.max(initial=0)))
    r = np.repeat(np.arange(rows), lengths)  # [sum n]
    s = np.arange(len(r)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # [sum n]
    index = np.zeros((rows, width), np.int64)
    value = np.zeros((rows, width), np.float32)
    index[r, s] = ids
    value[r, s] = 1.0 if weight == "one" else (1.0 / np.maximum(lengths, 1))[r]
    return Slots(index, value, np.zeros((rows, width), np.int64))


def _hashed_words(values: pl.Series, col: str, buckets: int
                  ) -> tuple[Slots, int, tuple[str, ...]]:
    """A string column [rows] -> one slot per word (hashed into `buckets` ids), value 1/n."""
    if values.dtype != pl.String:
        raise ValueError(f"text field {col!r} must be a string column, got {values.dtype}")
    words = values.fill_null("").str.to_lowercase().str.extract_all(r"[a-z0-9]+")
    lengths = words.list.len().fill_null(0).to_numpy().astype(np.int64)  # [rows]
    tokens = words.explode().drop_nulls().to_numpy().astype(str)  # [sum n]
    vocab, inverse = np.unique(tokens, return_inverse=True)
    hashed = np.array([zlib.crc32(w.encode()) % buckets for w in vocab], np.int64)  # [V]
    ids = hashed[inverse] if len(vocab) else np.zeros(0, np.int64)
    return _ragged(ids, lengths, "mean"), buckets, ()


def _single(ids: np.ndarray, value: np.ndarray) -> Slots:
    return Slots(ids[:, None].copy(), value[:, None].copy(), np.zeros((len(ids), 1), np.int64))
