"""`Interactions`: a log of (user, item[, rating, timestamp]) events as int arrays over contiguous ids.

Users and items are indexed 0..num_users-1 and 0..num_items-1; `user_ids` / `item_ids` map an index
back to the raw id of the source file. Side-feature tables, when a dataset has them, are polars
frames aligned with those indices (row i describes user / item i) and carry the raw id column.

Every preprocessing step here is a pure function returning a new `Interactions` and logging what it
removed; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl
import scipy.sparse as sp

log = logging.getLogger(__name__)

NAME_COLUMNS = ("title", "name")  # item feature columns that name an item (the first one present)


@dataclass
class Interactions:
    users: np.ndarray  # [n] int64 user index
    items: np.ndarray  # [n] int64 item index
    num_users: int
    num_items: int
    user_ids: np.ndarray  # [num_users] raw user id of each index
    item_ids: np.ndarray  # [num_items] raw item id of each index
    ratings: np.ndarray | None = None  # [n] float32
    timestamps: np.ndarray | None = None  # [n] int64
    user_features: pl.DataFrame | None = None  # [num_users rows], aligned with user indices
    item_features: pl.DataFrame | None = None  # [num_items rows], aligned with item indices
    name: str = "interactions"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.users)
        for col in ("items", "ratings", "timestamps"):
            arr = getattr(self, col)
            if arr is not None and len(arr) != n:
                raise ValueError(f"{self.name}: column '{col}' has {len(arr)} rows, users has {n}")
        if n and (self.users.min() < 0 or self.users.max() >= self.num_users):
            raise ValueError(f"{self.name}: user index out of range [0, {self.num_users})")
        if n and (self.items.min() < 0 or self.items.max() >= self.num_items):
            raise ValueError(f"{self.name}: item index out of range [0, {self.num_items})")

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_raw(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray | None = None,
        timestamps: np.ndarray | None = None,
        user_features: pl.DataFrame | None = None,
        item_features: pl.DataFrame | None = None,
        user_key: str = "user_id",
        item_key: str = "item_id",
        name: str = "interactions",
    ) -> Interactions:
        """Index raw ids (any sortable dtype) contiguously; align feature frames by their key column.

        Users/items with features but no interaction are not indexed; features missing for an indexed
        id become nulls (logged).
        """
        user_ids, user_idx = index_ids(users)
        item_ids, item_idx = index_ids(items)
        return cls(
            users=user_idx.astype(np.int64).reshape(-1),
            items=item_idx.astype(np.int64).reshape(-1),
            num_users=len(user_ids),
            num_items=len(item_ids),
            user_ids=user_ids,
            item_ids=item_ids,
            ratings=None if ratings is None else np.asarray(ratings, dtype=np.float32),
            timestamps=None if timestamps is None else np.asarray(timestamps, dtype=np.int64),
            user_features=_align(user_features, user_key, user_ids, name),
            item_features=_align(item_features, item_key, item_ids, name),
            name=name,
        )

    def __len__(self) -> int:
        return len(self.users)

    def select(self, mask_or_index: np.ndarray) -> Interactions:
        """Rows of the log (bool mask or index array), same id space and features."""
        pick = np.asarray(mask_or_index)
        return replace(
            self,
            users=self.users[pick],
            items=self.items[pick],
            ratings=None if self.ratings is None else self.ratings[pick],
            timestamps=None if self.timestamps is None else self.timestamps[pick],
            _cache={},
        )

    @staticmethod
    def concat(parts: list[Interactions]) -> Interactions:
        """The rows of logs that share one id space (the parts of a split), in order."""
        first = parts[0]
        if len(parts) == 1:
            return first

        def joined(col: str) -> np.ndarray | None:
            arrays = [getattr(p, col) for p in parts]
            return None if any(a is None for a in arrays) else np.concatenate(arrays)

        return replace(first, users=joined("users"), items=joined("items"),
                       ratings=joined("ratings"), timestamps=joined("timestamps"), _cache={})

    def compact(self) -> Interactions:
        """Re-index so that only users/items present in the log keep an index (after filtering)."""
        keep_u = np.flatnonzero(self.user_counts())  # [U'] sorted, as np.unique (O(n), no sort)
        keep_i = np.flatnonzero(self.item_counts())  # [I']
        if len(keep_u) == self.num_users and len(keep_i) == self.num_items:
            return self
        new_u = np.full(self.num_users, -1, dtype=np.int64)
        new_u[keep_u] = np.arange(len(keep_u))
        new_i = np.full(self.num_items, -1, dtype=np.int64)
        new_i[keep_i] = np.arange(len(keep_i))
        return replace(
            self,
            users=new_u[self.users],
            items=new_i[self.items],
            num_users=len(keep_u),
            num_items=len(keep_i),
            user_ids=self.user_ids[keep_u],
            item_ids=self.item_ids[keep_i],
            user_features=None if self.user_features is None else self.user_features[keep_u],
            item_features=None if self.item_features is None else self.item_features[keep_i],
            _cache={},
        )

    # ---------------------------------------------------------------- views
    def csr(self, values: str | None = None) -> sp.csr_matrix:
        """User-item matrix [num_users, num_items]; ones (duplicates summed) or `values='ratings'`."""
        data = np.ones(len(self), np.float32) if values is None else getattr(self, values)
        mat = sp.csr_matrix(
            (data, (self.users, self.items)), shape=(self.num_users, self.num_items)
        )
        mat.sum_duplicates()
        return mat

    def binary_csr(self) -> sp.csr_matrix:
        """0/1 user-item matrix with sorted column indices (cached)."""
        if "binary_csr" not in self._cache:
            mat = self.csr()
            mat.data[:] = 1.0
            mat.sort_indices()
            self._cache["binary_csr"] = mat
        return self._cache["binary_csr"]

    def time_order(self) -> np.ndarray:
        """Permutation [n] sorting the log by (user, timestamp), stable: ties keep file order.

        One stable sort of a single int64 key `user * span + (timestamp - min)` where that fits
        in int64 (timsort: fastest on logs already grouped by user), else
        `np.lexsort`; both give the same permutation. Cached (read-only), like `binary_csr`:
        `deduplicate` computes it and hands the result's order on to the split.
        """
        if "time_order" not in self._cache:
            order = _user_time_order(self.users, self.timestamps, self.num_users)
            order.flags.writeable = False
            self._cache["time_order"] = order
        return self._cache["time_order"]

    def sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-user time-ordered item sequences as (indptr [num_users+1], items [n])."""
        order = self.time_order()
        counts = np.bincount(self.users, minlength=self.num_users)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return indptr, self.items[order]

    def item_names(self, items: np.ndarray) -> list[str | None] | None:
        """Display names of the items at indices `items` [n]: the `title` (MovieLens) or `name`
        column of `item_features` as text, null where an item has no row; None when the data
        names no item. Reads only those rows (cheap for a 10^6-item catalogue)."""
        features = self.item_features
        column = next((c for c in NAME_COLUMNS if features is not None and c in features.columns),
                      None)
        if column is None:
            return None
        rows = pl.Series(np.asarray(items, dtype=np.int64).reshape(-1))
        return features[column].gather(rows).cast(pl.String).to_list()

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.num_items)  # [I]

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.users, minlength=self.num_users)  # [U]

    def fingerprint(self) -> str:
        """Short content hash of the log (indices, raw ids, ratings, timestamps): names this data.
        Cached, like `binary_csr` (hashing 10^7 rows takes about a second)."""
        if "fingerprint" not in self._cache:
            h = hashlib.sha256()
            for arr in (self.users, self.items, self.ratings, self.timestamps, self.user_ids,
                        self.item_ids):
                h.update(b"-" if arr is None else _content(arr))
            h.update(f"{self.num_users}:{self.num_items}".encode())
            self._cache["fingerprint"] = h.hexdigest()[:16]
        return self._cache["fingerprint"]

    def summary(self) -> str:
        density = len(self) / max(1, self.num_users * self.num_items)
        return (
            f"{self.name}: {len(self):,} interactions, {self.num_users:,} users, "
            f"{self.num_items:,} items, density {density:.4%}"
        )


def index_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct ids [K], index of each entry [n]) like np.unique(return_inverse=True).

    Integer ids in a compact range take an O(n) lookup table instead of a sort.
    """
    raw = np.asarray(raw).reshape(-1)
    table = table_index(raw)
    return table if table is not None else np.unique(raw, return_inverse=True)


def table_index(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """`index_ids` of integer ids [n] in a compact range (max - min <= 4n + 1024) by an O(n)
    lookup table: (sorted distinct ids [K], index [n] int64); None for any other ids."""
    if raw.dtype.kind not in "iu" or len(raw) == 0:
        return None
    lo, hi = int(raw.min()), int(raw.max())
    if hi - lo > 4 * len(raw) + 1024:
        return None
    present = np.zeros(hi - lo + 1, dtype=bool)  # [range]
    present[raw - lo] = True
    lookup = np.cumsum(present, dtype=np.int64) - 1  # [range] id -> index
    return (np.flatnonzero(present) + lo).astype(raw.dtype), lookup[raw - lo]


def _content(arr: np.ndarray) -> bytes:
    """The bytes of an array's values: text ids (object arrays) by their text, not their pointers."""
    if arr.dtype == object:
        arr = arr.astype(str)  # fixed-width unicode: the same text gives the same bytes
    return np.ascontiguousarray(arr).tobytes()


def _user_time_order(users: np.ndarray, timestamps: np.ndarray | None, num_users: int
                     ) -> np.ndarray:
    """Stable permutation [n] by (user, timestamp): `Interactions.time_order`."""
    if timestamps is None:
        return np.argsort(users, kind="stable")
    if len(users) and users.dtype.kind in "iu" and timestamps.dtype.kind == "i":
        lo, hi = int(timestamps.min()), int(timestamps.max())
        span = hi - lo + 1
        if num_users * span <= np.iinfo(np.int64).max:  # the key fits: one sort of one column
            key = np.multiply(users, span, dtype=np.int64)  # [n]
            key += timestamps  # may wrap for a moment: the sum is exact modulo 2^64
            key -= lo  # [n] user * span + (timestamp - lo), in [0, num_users * span)
            return np.argsort(key, kind="stable")
    return np.lexsort((timestamps, users))  # last key is primary; lexsort is stable


def _align(
    features: pl.DataFrame | None, key: str, ids: np.ndarray, name: str
) -> pl.DataFrame | None:
    if features is None:
        return None
    if key not in features.columns:
        raise ValueError(f"{name}: feature table has no key column '{key}' ({features.columns})")
    if features[key].is_duplicated().any():
        raise ValueError(f"{name}: feature table has duplicate values in '{key}'")
    keys = pl.DataFrame({key: ids}).with_columns(pl.col(key).cast(features[key].dtype))
    marked = features.with_columns(pl.lit(True).alias("__present"))
    aligned = keys.join(marked, on=key, how="left", maintain_order="left")
    missing = aligned["__present"].null_count()
    if missing:
        log.warning("%s: %d ids have no row in the feature table (nulls)", name, missing)
    return aligned.drop("__present")


# -------------------------------------------------------------------- preprocessing
def binarize(inter: Interactions, threshold: float | None) -> Interactions:
    """Implicit feedback: keep interactions with rating >= threshold (None keeps every one)."""
    if threshold is None:
        return inter
    if inter.ratings is None:
        raise ValueError(f"{inter.name}: rating_threshold={threshold} but the data has no ratings")
    keep = inter.ratings >= threshold
    log.info("%s: rating >= %s removed %d of %d interactions", inter.name, threshold,
             int((~keep).sum()), len(inter))
    return _nonempty(inter.select(keep).compact(), "rating threshold")


def deduplicate(inter: Interactions, keep: str = "last") -> Interactions:
    """Keep one event per (user, item): the `last` or `first` in time; `keep='all'` keeps them all.

    Time ties go to file order (of tied events the one earlier in the file counts as earlier). The
    result keeps file order and carries its `time_order` (the input's, restricted to the kept
    rows), so a split after it does not sort again.
    """
    if keep == "all":
        return inter
    if keep not in ("first", "last"):
        raise ValueError(f"dedup must be 'first', 'last' or 'all', got {keep!r}")
    order = inter.time_order()  # [n] by (user, time)
    pair = inter.users[order] * inter.num_items + inter.items[order]  # [n] in time order
    by_pair = np.argsort(pair, kind="stable")  # [n] equal pairs together, each in time order
    pair = pair[by_pair]  # [n] sorted
    edge = np.ones(len(pair), dtype=bool)  # [n] the first (or last) event of each pair
    if keep == "first":
        np.not_equal(pair[1:], pair[:-1], out=edge[1:])
    else:
        np.not_equal(pair[:-1], pair[1:], out=edge[:-1])
    kept_at = by_pair[edge]  # [n'] positions in `order` of the kept events
    del pair, by_pair, edge
    if len(kept_at) == len(inter):
        return inter
    log.info("%s: removed %d duplicate (user, item) events (kept %s)", inter.name,
             len(inter) - len(kept_at), keep)
    kept = np.zeros(len(inter), dtype=bool)  # [n] by row
    kept[order[kept_at]] = True
    out = inter.select(kept)  # file order
    new_row = np.cumsum(kept) - 1  # [n] row -> its row in `out`
    out_order = new_row[order[kept[order]]]  # [n'] rows of `out` by (user, time)
    out_order.flags.writeable = False
    out._cache["time_order"] = out_order
    return out


def k_core(inter: Interactions, min_user: int = 0, min_item: int = 0) -> Interactions:
    """Iteratively drop users with < min_user and items with < min_item interactions."""
    if min_user <= 1 and min_item <= 1:
        return inter
    n0 = len(inter)
    keep = np.ones(n0, dtype=bool)
    while True:
        uc = np.bincount(inter.users[keep], minlength=inter.num_users)
        ic = np.bincount(inter.items[keep], minlength=inter.num_items)
        ok = keep & (uc[inter.users] >= min_user) & (ic[inter.items] >= min_item)
        if ok.sum() == keep.sum():
            break
        keep = ok
    out = inter.select(keep).compact()
    log.info("%s: %d-core users / %d-core items removed %d interactions, %d users, %d items",
             inter.name, min_user, min_item, n0 - len(out), inter.num_users - out.num_users,
             inter.num_items - out.num_items)
    return _nonempty(out, "k-core filtering")


def _nonempty(inter: Interactions, step: str) -> Interactions:
    if len(inter) == 0:
        raise ValueError(f"{inter.name}: no interaction left after {step}")
    return inter
