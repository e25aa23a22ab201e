"""Negative sampling, a whole batch at a time, and evaluation sharding across processes.

Negatives never include a user's positives: candidates are drawn for the whole batch at once from the
item distribution, checked against the positives' (user * num_items + item) keys (a dense bool table
of every (user, item) cell when it fits in DENSE_CELLS, else one `searchsorted` over the sorted
keys), and only the rejected ones are redrawn.

Rows: training draws a row's n negatives independently (`sample(distinct=False)`: with
replacement, so a row may repeat an item, as BPR / NCF samplers do and as two-tower's logQ
correction assumes); the sampled protocol draws n distinct ones (`distinct=True`). Either way the
DataModules check before drawing that n <= `drawable`, the distinct items a user can draw (the
distribution's support minus the user's positives), for every user: past it every training row
of that user would repeat items, and the protocol could not be drawn at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

DISTRIBUTIONS = ("uniform", "popularity", "hard")
FAST_ROUNDS = 32  # vectorised rejection rounds before the exact per-row fallback
DENSE_CELLS = 1 << 25  # up to 32 MB: membership by a dense [U * I] bool table (ML-100K: 1.6 MB)
CHECK_CELLS = 1 << 20  # draws checked at a time: 10^8 eval negatives in blocks, not at once


class NegativeSampler:
    """Draws items that a user has no interaction with in `positives` ([U, I] CSR).

    distribution: "uniform" over the catalogue, or "popularity": P(i) ∝ count(i) ** alpha, counts
    taken from `positives` (items never seen get probability 0), or "hard": uniformly among the
    user's row of `hard_pool` ([U, K] item ids, e.g. the K highest-scored non-positives of the
    previous epoch, set by `lit_recs.callbacks.HardNegativeMiner`); uniform while no pool is set.
    Whatever the distribution, a draw that is a positive is redrawn (hard: from the uniform).
    """

    def __init__(
        self, positives: sp.csr_matrix, distribution: str = "uniform", alpha: float = 1.0
    ) -> None:
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"negative distribution must be one of {DISTRIBUTIONS}, got "
                             f"{distribution!r}")
        pos = positives.tocsr().copy()
        pos.sum_duplicates()
        pos.sort_indices()
        self.num_items = pos.shape[1]
        rows = np.repeat(np.arange(pos.shape[0], dtype=np.int64), np.diff(pos.indptr))  # [nnz]
        self._keys = rows * self.num_items + pos.indices.astype(np.int64)  # [nnz], sorted
        self._dense: np.ndarray | None = None  # [U * I] bool, for catalogues that fit
        if pos.shape[0] * self.num_items <= DENSE_CELLS:
            self._dense = np.zeros(pos.shape[0] * self.num_items, dtype=bool)
            self._dense[self._keys] = True
        self._user_degree = np.diff(pos.indptr)  # [U]
        self._pos = pos
        self._weights = np.ones(self.num_items)  # [I] sampling weight of each item
        self._cdf = None
        self.distribution = distribution
        self.hard_pool: np.ndarray | None = None  # [U, K] (distribution "hard")
        if distribution == "popularity":
            counts = np.asarray(pos.sum(axis=0)).ravel().astype(np.float64)  # [I]
            weights = np.zeros_like(counts)  # [I]; unseen items stay 0 (0 ** 0 would be 1)
            seen = counts > 0
            weights[seen] = counts[seen] ** alpha
            self._weights = weights
            self._cdf = np.cumsum(weights)  # [I]

    def _draw(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        if self._cdf is None:
            return rng.integers(0, self.num_items, size=shape, dtype=np.int64)
        u = rng.random(size=shape) * self._cdf[-1]
        return np.minimum(np.searchsorted(self._cdf, u, side="right"), self.num_items - 1)

    def probabilities(self) -> np.ndarray:
        """The item distribution of a draw before rejection [I] (hard: uniform, its fallback)."""
        return self._weights / self._weights.sum()

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """users [B, 1] or [B], items [B, N] -> bool [B, N]."""
        keys = users * self.num_items + items  # [B, N]
        if self._dense is not None:  # one gather instead of a binary search per key
            return self._dense[keys]
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)  # [B, N]
        return self._keys[at] == keys if len(self._keys) else np.zeros(keys.shape, bool)

    def sample(
        self, users: np.ndarray, n: int, rng: np.random.Generator, distinct: bool = False
    ) -> np.ndarray:
        """users [B] -> negatives [B, n]; `distinct` also forbids repeats within a row.

        Each round redraws the rejected draws (in row-major order) and re-checks only the rows it
        redrew: a row with no rejected draw is final, as nothing in it changes any more.
        """
        users = np.asarray(users, dtype=np.int64)
        full = self._user_degree[users] >= self.num_items
        if full.any():
            raise ValueError(f"user {int(users[full][0])} interacted with every item: no negative "
                             "to draw")
        if self.hard_pool is not None and self.distribution == "hard":
            pool = self.hard_pool[users]  # [B, K]
            neg = np.take_along_axis(pool, rng.integers(0, pool.shape[1], (len(users), n)), 1)
        else:
            neg = self._draw((len(users), n), rng)  # [B, n]
        bad = self._rejected(users, neg, distinct)  # [B, n]
        active = np.flatnonzero(bad.any(axis=1))  # [A] rows with a rejected draw
        bad = bad[active]  # [A, n]
        for _ in range(FAST_ROUNDS):
            if len(active) == 0:
                return neg
            rows = neg[active]  # [A, n]
            rows[bad] = self._draw((int(bad.sum()),), rng)
            neg[active] = rows
            bad = self._rejected(users[active], rows, distinct)  # [A, n]
            keep = bad.any(axis=1)
            active, bad = active[keep], bad[keep]
        rejected = np.zeros(neg.shape, dtype=bool)  # [B, n]
        rejected[active] = bad
        return self._fallback(users, neg, rejected, rng, distinct)

    def _rejected(self, users: np.ndarray, neg: np.ndarray, distinct: bool) -> np.ndarray:
        """bool [B, n]: draws that are positives (distinct: or repeat in their row), checked
        CHECK_CELLS draws at a time (bounded temporaries, the user's keys stay in cache)."""
        bad = np.empty(neg.shape, dtype=bool)  # [B, n]
        step = max(1, CHECK_CELLS // max(1, neg.shape[1]))
        for start in range(0, len(users), step):
            block = slice(start, start + step)
            bad[block] = self.is_positive(users[block, None], neg[block])
            if distinct:
                bad[block] |= _repeats(neg[block])
        return bad

    def _fallback(
        self,
        users: np.ndarray,
        neg: np.ndarray,
        bad: np.ndarray,
        rng: np.random.Generator,
        distinct: bool,
    ) -> np.ndarray:
        """Exact redraw for the few rows whose users have almost no item left to draw."""
        for row in np.flatnonzero(bad.any(axis=1)):
            user = int(users[row])
            allowed = self._weights > 0  # [I]
            allowed[self._pos.indices[self._pos.indptr[user] : self._pos.indptr[user + 1]]] = False
            if distinct:
                allowed[neg[row][~bad[row]]] = False  # values already valid in this row
            need = int(bad[row].sum())
            pool = np.flatnonzero(allowed)
            if len(pool) == 0 or (distinct and len(pool) < need):
                raise ValueError(
                    f"user {user} has {len(pool)} items left to draw as negatives under this "
                    f"distribution, {need} more needed: lower the number of negatives"
                )
            p = self._weights[pool] / self._weights[pool].sum()
            neg[row, bad[row]] = rng.choice(pool, size=need, replace=not distinct, p=p)
        return neg


def support(positives: sp.csr_matrix, distribution: str = "uniform") -> int:
    """How many items a draw can return before rejection: all I for uniform (and hard, whose
    rejected draws fall back to the uniform), the items with at least one interaction in
    `positives` for popularity (the others have probability 0). O(1), popularity O(nnz)."""
    if distribution != "popularity":
        return positives.shape[1]
    return int(np.count_nonzero(np.bincount(positives.indices, minlength=positives.shape[1])))


def drawable(
    positives: sp.csr_matrix, distribution: str = "uniform", items: int | None = None
) -> np.ndarray:
    """[U] distinct items each user can draw as negatives: the distribution's `support` (`items`
    when already counted) minus the user's positives (`positives`: [U, I] 0/1 CSR; the support
    holds every positive). O(U) from the CSR's indptr (+ O(nnz) for popularity's support)."""
    if not positives.has_canonical_format:  # duplicates would count twice
        positives = positives.copy()
        positives.sum_duplicates()
    if items is None:
        items = support(positives, distribution)
    return items - np.diff(positives.indptr).astype(np.int64)  # [U]


def check_drawable(
    option: str,
    n: int,
    available: np.ndarray,
    source: str,
    rule: str,
    hint: str = "",
    ids: np.ndarray | None = None,
) -> None:
    """Raises a ValueError naming `option`, its limit min(available) and the users short of `n`.

    available: [U] distinct items each user can draw (see `drawable`); source: what is drawn
    (e.g. "training negatives"); rule: how `available` is counted, for the message; ids: the raw
    user ids (by index), to name the user in the message. Vectorised: O(U), no loop over users.
    """
    short = available < n  # [U]
    if not short.any():
        return
    user = int(np.argmin(available))
    limit = max(int(available[user]), 0)
    raw = f" (id {ids[user]})" if ids is not None and len(ids) > user else ""
    raise ValueError(
        f"{option}={n} is more than users can draw as {source}: {int(short.sum())} of "
        f"{len(available)} users have fewer than {n} items to draw ({rule}); the fewest: user "
        f"{user}{raw} with {limit}. The limit is {option} <= {limit}{hint}"
    )


def check_eval_negatives(
    all_positives: sp.csr_matrix,
    n: int,
    distribution: str = "uniform",
    users: np.ndarray | None = None,
    protocol: str | None = None,
    ids: np.ndarray | None = None,
) -> None:
    """The sampled protocol's limit, checked before drawing: each user needs n distinct items
    never interacted with in `all_positives` (the whole log), i.e. n <= support - the user's
    interactions, for every user drawn for (`users`, default all; `ids`: raw user ids by index,
    for the message)."""
    items = support(all_positives, distribution)
    available = drawable(all_positives, distribution, items)  # [U]
    if users is not None:
        available = available[users]
        ids = None if ids is None else ids[users]
    pool = f"all {items} items" if distribution != "popularity" else \
        f"the {items} items with an interaction in the log (popularity draws no other)"
    name = "the sampled protocol" + (f" ({protocol})" if protocol else "")
    check_drawable("sampled_negatives", n, available, f"distinct negatives of {name}",
                   f"{pool} minus the user's interactions in the whole log",
                   "; 0 turns the protocol off", ids)


def _repeats(x: np.ndarray) -> np.ndarray:
    """bool [B, N]: True where the value already occurs earlier in the row (by sort order)."""
    dup = np.zeros(x.shape, dtype=bool)  # [B, N]
    if x.shape[1] < 2:
        return dup
    srt = np.sort(x, axis=1)  # [B, N]
    rows = np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))  # [R] rows with a repeat
    if len(rows) == 0:
        return dup
    sub = x[rows]  # [R, N]
    order = np.argsort(sub, axis=1, kind="stable")  # [R, N]
    sorted_x = np.take_along_axis(sub, order, axis=1)  # [R, N]
    dup_sorted = np.zeros(sorted_x.shape, dtype=bool)
    dup_sorted[:, 1:] = sorted_x[:, 1:] == sorted_x[:, :-1]
    found = np.zeros_like(dup_sorted)
    np.put_along_axis(found, order, dup_sorted, axis=1)
    dup[rows] = found
    return dup


def eval_negatives(
    all_positives: sp.csr_matrix,
    users: np.ndarray,
    n: int,
    distribution: str = "uniform",
    seed: int = 0,
    protocol: str | None = None,
    ids: np.ndarray | None = None,
) -> np.ndarray:
    """The sampled protocol's fixed candidates: n distinct items per user never interacted with.

    Drawn once from `seed` (identical for every model); popularity counts from `all_positives`.
    Checked first (`check_eval_negatives`; `protocol` and the raw user `ids` name the protocol and
    the user in its message): a user with fewer than n such items raises at once.
    """
    check_eval_negatives(all_positives, n, distribution, users, protocol, ids)
    sampler = NegativeSampler(all_positives, distribution)
    return sampler.sample(users, n, np.random.default_rng(seed), distinct=True)  # [len(users), n]


class EvalShardSampler(torch.utils.data.Sampler):
    """Yields batches (index arrays) of evaluation rows for one process.

    Rows are dealt round-robin to `num_replicas` processes; every process gets the same number of
    batches of the same sizes, the missing slots padded with -1 (the batch builder gives padding rows
    weight 0). So each row is evaluated exactly once on any number of processes.
    """

    def __init__(self, num_rows: int, batch_size: int, num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} not in [0, {num_replicas})")
        self.num_rows, self.batch_size = num_rows, batch_size
        self.num_replicas, self.rank = num_replicas, rank
        self.per_rank = math.ceil(num_rows / num_replicas)

    def __len__(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        mine = np.arange(self.rank, self.per_rank * self.num_replicas, self.num_replicas)
        mine[mine >= self.num_rows] = -1  # padding
        for start in range(0, self.per_rank, self.batch_size):
            yield mine[start : start + self.batch_size]


class EpochBatchSampler(torch.utils.data.Sampler):
    """Training batches of row indices: a fresh seeded permutation per epoch, sharded per process.

    Each process takes an equal, disjoint share of the permutation (the tail that does not divide
    evenly is left for the next epoch's permutation, at most num_replicas - 1 rows). Lightning calls
    `set_epoch` before each epoch.
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.num_rows, self.batch_size, self.seed = num_rows, batch_size, seed
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rows(self) -> int:
        return self.num_rows // self.num_replicas

    def __len__(self) -> int:
        n = self._rows()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(self.num_rows)[self.rank :: self.num_replicas][: self._rows()]
        for b in range(len(self)):
            yield self.epoch, b, perm[b * self.batch_size : (b + 1) * self.batch_size]
