"""Seeded, deterministic train / validation / test splits of an `Interactions` log.

All three parts share the id space of the input (no re-indexing), so a user or item index means the
same thing in each. Every split is a partition of the rows: no interaction is in two parts.

Decisions the data leaves to file order (time ties that decide a held-out event, no time at all) are
raised as `UserWarning`s with counts and kept on `Split.warnings` for the run's records.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from lit_recs.data.interactions import Interactions

log = logging.getLogger(__name__)


@dataclass
class Split:
    train: Interactions
    val: Interactions
    test: Interactions
    warnings: list[str] = field(default_factory=list)  # data decisions the split warned about

    def describe(self) -> str:
        return f"train {len(self.train):,} / val {len(self.val):,} / test {len(self.test):,}"


def _by_part(inter: Interactions, part: np.ndarray, notes: list[str] | None = None) -> Split:
    """part [n] in {0, 1, 2} -> Split, carrying the warnings `notes`."""
    return Split(*(inter.select(part == p) for p in range(3)), warnings=list(notes or []))


def _warn(notes: list[str]) -> list[str]:
    """Raise each note as a UserWarning (shown once per text) and return them for `Split`."""
    for text in notes:
        warnings.warn(text, UserWarning, stacklevel=3)
    return notes


def _share(k: int, n: int, who: str) -> str:
    """'415 of 943 users (44.0%)'."""
    share = f"{k / n:.1%}" if k / n >= 0.001 else "<0.1%"
    return f"{k:,} of {n:,} {who} ({share})"


def _rank_within_user(inter: Interactions, order: np.ndarray) -> np.ndarray:
    """For rows visited in `order` (grouped by user), each row's 0-based position in its user."""
    counts = inter.user_counts()  # [U]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # [U]
    rank = np.empty(len(inter), dtype=np.int64)
    rank[order] = np.arange(len(inter)) - starts[inter.users[order]]
    return rank  # [n]


def leave_one_out(inter: Interactions) -> Split:
    """Temporal leave-one-out: each user's last event -> test, second-to-last -> validation.

    Time ties keep file order (stable sort). Users with 2 events give one to test and none to
    validation; users with 1 event keep it in training (counts logged). Warns (see `_loo_notes`)
    when file order decided a held-out event: no timestamps, all equal, or ties at the boundaries.
    """
    order = inter.time_order()  # [n] by (user, time)
    rank = _rank_within_user(inter, order)  # [n]
    from_end = inter.user_counts()[inter.users] - 1 - rank  # [n] 0 = last event
    n = inter.user_counts()  # [U]
    n_row = n[inter.users]  # [n]
    part = np.where((from_end == 0) & (n_row >= 2), 2, 0)  # [n]
    part = np.where((from_end == 1) & (n_row >= 3), 1, part).astype(np.int8)  # [n]
    n1, n2 = int((n == 1).sum()), int((n == 2).sum())
    if n1 or n2:
        log.info("%s leave-one-out: %d users with 1 event (train only), %d with 2 (no validation)",
                 inter.name, n1, n2)
    return _by_part(inter, part, _warn(_loo_notes(inter, order, n)))


def _loo_notes(inter: Interactions, order: np.ndarray, n: np.ndarray) -> list[str]:
    """What file order decided in a leave-one-out split (order [n] by (user, time), n [U] counts).

    No timestamps: time is file order by design (a log of sequences), so the rule is stated
    plainly. All timestamps equal: one note (ties everywhere, so no per-user counts). Otherwise
    the users whose last two events tie (file order picks the test event among them) and whose
    second- and third-to-last tie (file order picks the validation event). O(n + U), no loops.
    """
    name, n_test, n_val = inter.name, int((n >= 2).sum()), int((n >= 3).sum())
    if n_test == 0:
        return []
    if inter.timestamps is None:
        return [f"{name} leave-one-out: no timestamps, so time is file order: each user's last "
                f"event in the file is the test event ({n_test:,} users) and the one before it "
                f"the validation event ({n_val:,} users)"]
    ts = inter.timestamps
    if ts.min() == ts.max():
        return [f"{name} leave-one-out: all {len(inter):,} timestamps are identical; each user's "
                f"last events in file order were held out ({n_test:,} test, {n_val:,} validation)"]
    t = ts[order]  # [n] by (user, time)
    end = np.cumsum(n) - 1  # [U] position of each user's last event in `order`
    e2, e3 = end[n >= 2], end[n >= 3]
    tie_test = int((t[e2] == t[e2 - 1]).sum())
    tie_val = int((t[e3 - 1] == t[e3 - 2]).sum())
    n_any = int((n >= 1).sum())
    notes = []
    if tie_test:
        who = "users" if n_test == n_any else "users with 2+ events"
        notes.append(f"{name} leave-one-out: {_share(tie_test, n_test, who)} have their last two "
                     "events at the same timestamp: file order decides which is the test event")
    if tie_val:
        who = "users" if n_val == n_any else "users with 3+ events"
        notes.append(f"{name} leave-one-out: {_share(tie_val, n_val, who)} have their second- and "
                     "third-to-last events at the same timestamp: file order decides which is "
                     "the validation event")
    return notes


def _ratio_counts(n: np.ndarray, ratios: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-user validation and test counts: floor(ratio * n), at least 1 while train keeps >= 2."""
    n_val = np.floor(ratios[1] * n).astype(np.int64)  # [U]
    n_test = np.floor(ratios[2] * n).astype(np.int64)  # [U]
    n_test = np.where((n_test == 0) & (ratios[2] > 0) & (n - n_val - n_test > 1), 1, n_test)
    n_val = np.where((n_val == 0) & (ratios[1] > 0) & (n - n_val - n_test > 1), 1, n_val)
    return n_val, n_test


def _check_ratios(ratios: tuple[float, float, float]) -> tuple[float, float, float]:
    r = tuple(float(x) for x in ratios)
    if len(r) != 3 or min(r) < 0 or r[0] <= 0 or abs(sum(r) - 1.0) > 1e-6:
        raise ValueError(f"split_ratios must be 3 non-negative numbers summing to 1, got {ratios}")
    return r  # type: ignore[return-value]


def random_split(
    inter: Interactions, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> Split:
    """Per-user random split (e.g. 8:1:1): each user's events shuffled with `seed`, then cut."""
    ratios = _check_ratios(ratios)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(inter)), inter.users))  # [n] users in random inner order
    rank = _rank_within_user(inter, order)  # [n]
    n = inter.user_counts()  # [U]
    n_val, n_test = _ratio_counts(n, ratios)
    n_train = (n - n_val - n_test)[inter.users]  # [n]
    part = np.where(rank < n_train, 0, np.where(rank < n_train + n_val[inter.users], 1, 2))
    return _by_part(inter, part.astype(np.int8))


def _cut_points(n: int, ratios: tuple[float, float, float]) -> tuple[int, int]:
    return int(round(ratios[0] * n)), int(round((ratios[0] + ratios[1]) * n))


def _cut(inter: Interactions, order: np.ndarray, ratios: tuple[float, float, float],
         notes: list[str] | None = None) -> Split:
    """Rows visited in `order` [n]: the first share trains, the next validates, the rest tests."""
    cut1, cut2 = _cut_points(len(inter), ratios)
    part = np.empty(len(inter), dtype=np.int8)
    part[order[:cut1]], part[order[cut1:cut2]], part[order[cut2:]] = 0, 1, 2
    return _by_part(inter, part, notes)


def _temporal_notes(inter: Interactions, t: np.ndarray, ratios: tuple[float, float, float]
                    ) -> list[str]:
    """Where file order decided a global time cut: t [n] the sorted timestamps. One note per run
    of equal timestamps that a cut falls inside, with how many of its events went to each part."""
    n = len(t)
    cut1, cut2 = _cut_points(n, ratios)
    names = ("train", "validation", "test")
    if n and t[0] == t[-1]:
        sizes = (cut1, cut2 - cut1, n - cut2)
        kept = ", ".join(f"{k:,} {p}" for k, p in zip(sizes, names) if k)
        return [f"{inter.name} temporal split: all {n:,} timestamps are identical; the split "
                f"follows file order ({kept})"]
    bounds = [0, cut1, cut2, n]
    notes, done = [], set()
    for cut in sorted({cut1, cut2}):
        if not 0 < cut < n or t[cut - 1] != t[cut] or t[cut] in done:
            continue
        done.add(t[cut])
        lo, hi = np.searchsorted(t, t[cut], "left"), np.searchsorted(t, t[cut], "right")
        inside = [max(0, min(hi, bounds[p + 1]) - max(lo, bounds[p])) for p in range(3)]
        parts = [p for k, p in zip(inside, names) if k]
        put = ", ".join(f"{k:,} in {p}" for k, p in zip(inside, names) if k)
        cuts = "cut falls" if len(parts) == 2 else "cuts fall"
        notes.append(f"{inter.name} temporal split: the {'/'.join(parts)} {cuts} inside "
                     f"{hi - lo:,} events at the same timestamp ({int(t[cut])}): file order put "
                     f"{put}")
    return notes


def temporal_split(
    inter: Interactions, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> Split:
    """Global temporal split: the earliest share of all events trains, then validation, then test."""
    ratios = _check_ratios(ratios)
    if inter.timestamps is None:
        raise ValueError(f"{inter.name}: split='temporal' needs timestamps and the data has none")
    order = np.argsort(inter.timestamps, kind="stable")  # [n]
    notes = _temporal_notes(inter, inter.timestamps[order], ratios)
    return _cut(inter, order, ratios, _warn(notes))


def global_random_split(
    inter: Interactions, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> Split:
    """Random split over all interactions (the CTR protocol): rows shuffled with `seed`, then cut.

    Unlike `random_split`, users are not kept apart: a user may have no training row at all.
    """
    ratios = _check_ratios(ratios)
    return _cut(inter, np.random.default_rng(seed).permutation(len(inter)), ratios)


def fold_split(
    inter: Interactions, fold: int = 1, num_folds: int = 5, val_share: float = 0.1, seed: int = 0
) -> Split:
    """K-fold cross-validation in file order, as ML-100K's mku.sh cuts u1..u5.test from u.data.

    Test = rows [(fold - 1) n / K, fold n / K) of the log in load order (ML-100K: fold 1 = the first
    20,000 lines of u.data = u1.test). Validation (for early stopping) = a seeded random
    `val_share` of all rows, drawn from the other folds; the rest trains (ML-100K: 70,000 of
    u1.base's 80,000 rows with the default share 0.1).
    """
    if not 1 <= fold <= num_folds:
        raise ValueError(f"fold must be in 1..num_folds={num_folds}, got {fold}")
    if not 0 <= val_share < 1 - 1 / num_folds:
        raise ValueError(f"the validation share {val_share} must be in [0, {1 - 1 / num_folds})")
    n = len(inter)
    lo, hi = (fold - 1) * n // num_folds, fold * n // num_folds
    part = np.zeros(n, dtype=np.int8)
    part[lo:hi] = 2
    rest = np.flatnonzero(part == 0)  # [n - n / K]
    val = np.random.default_rng(seed).choice(rest, int(round(val_share * n)), replace=False)
    part[val] = 1
    return _by_part(inter, part)


SPLITS = ("random", "loo", "temporal", "global_random", "fold")


def split(
    inter: Interactions,
    how: str = "random",
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    fold: int = 1,
    num_folds: int = 5,
) -> Split:
    """Dispatch by name: `random` (per user), `loo`, `temporal`, `global_random`, `fold`.

    `fold` uses `ratios[1]` as the validation share and ignores the other two ratios.
    """
    if how == "loo":
        result = leave_one_out(inter)
    elif how == "random":
        result = random_split(inter, ratios, seed)
    elif how == "temporal":
        result = temporal_split(inter, ratios)
    elif how == "global_random":
        result = global_random_split(inter, ratios, seed)
    elif how == "fold":
        result = fold_split(inter, fold, num_folds, ratios[1], seed)
    else:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {how!r}")
    log.info("%s split=%s: %s", inter.name, how, result.describe())
    return result
