"""`Synthetic`: logs of any size with planted low-rank, popularity and sequential structure.

Generative model (every planted quantity is returned by `Synthetic.planted()`):

- Popularity: item i has a Zipf weight ``pop_i = rank_i ** -popularity_exponent`` (ranks shuffled,
  so item indices say nothing about popularity).
- Low rank: user factors P [U, r] and item factors Q [I, r], i.i.d. N(0, 1). Factor k is a "taste"
  with the item distribution ``phi_k = softmax_i(Q[i, k] / ITEM_TEMPERATURE + log pop_i)``, and
  user u mixes the tastes with ``theta_u = softmax_k(P[u, k] / USER_TEMPERATURE)``. A fresh item
  of u is drawn from

      p_u = (1 - noise) * theta_u @ phi + noise / I,

  restricted to the items u has not had yet (sampling without replacement). ``theta @ phi`` is a
  rank-r non-negative user x item matrix, each row a mixture of popularity-tilted softmaxes over the
  item factors, so a factor model beats popularity. (A full per-user softmax(P_u . Q_i) needs all
  U * I logits to be sampled exactly: 3.7e9 at ML-20M scale, ~20 s of matmul/exp/cumsum on two
  cores; the mixture is sampled exactly at O(1) expected per draw: a taste, then an item from that
  taste's precomputed CDF through a guide table.)
- Sequential: ``successor`` is one cycle through all items, ordered by dominant taste
  (argmax_k Q[i, k]) and randomly within a taste, so an item's successor shares its taste. After a
  user's first item, with probability ``sequential_strength`` the next item is the successor of the
  previous one (when the user has not had it yet); otherwise it is a fresh draw from p_u.
- Counts: 1 + Poisson(max(interactions_per_user - 1, 0)) per user, capped at num_items.
- Timestamps (int64 seconds): a start uniform over 2010-2020, then gaps of 1 + Exp(1 hour) seconds,
  so they strictly increase along each user's sequence.
- Ratings (float32, whole stars 1..5): ``rint(RATING_OFFSET + z + 5 * noise * N(0, 1))`` clipped to
  [1, 5], where ``z = theta_u . Q_i / |theta_u|`` is the user's standardised affinity for the item.

Memory: users are generated in chunks (a chunk's "already had" bitmap is at most 32 MiB and its
pre-drawn candidate items at most ~8M entries, so a chunk's working set is ~100 MiB whatever the
size); every step is vectorised numpy over a chunk's users, looping only over the positions in the
sequences (about interactions_per_user steps per chunk), never over users or interactions. The
output arrays (users, items and timestamps int64, ratings float32: 28 bytes per interaction) are
the only memory that grows with the number of interactions; the planted truth is O((U + I) * r).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from lit_recs.data.datasets.base import DataSource
from lit_recs.data.interactions import Interactions

log = logging.getLogger(__name__)

USER_TEMPERATURE = 0.25  # softmax temperature of a user's tastes over N(0, 1) factors
ITEM_TEMPERATURE = 1 / 3  # softmax temperature of a taste over the items' N(0, 1) factors
RATING_OFFSET = 2.7  # centres the ratings near 3.5 at the default settings
START = 1_262_304_000  # 2010-01-01 UTC
SPAN = 10 * 365 * 86_400  # user start times are uniform over ten years
MEAN_GAP = 3600.0  # mean seconds between a user's consecutive interactions (plus one)
CHUNK_BITS = 1 << 28  # "already had" bitmap of a chunk: users_per_chunk * num_items bits (32 MiB)
MAX_CHUNK_USERS = 1 << 18
STREAM_CELLS = 1 << 23  # pre-drawn candidate items per chunk
SCAN = 8  # candidates examined at once per row
REFILL_CELLS = 1 << 22  # dense [rows, I] float64 block when re-drawing from a restricted p_u
_BIT = (1 << np.arange(8)).astype(np.uint8)


@dataclass(frozen=True)
class Planted:
    """The ground truth behind a `Synthetic` log."""

    user_factors: np.ndarray  # [U, r] float32 P
    item_factors: np.ndarray  # [I, r] float32 Q
    user_tastes: np.ndarray  # [U, r] float64 theta_u = softmax(P_u / T), rows sum to 1
    taste_items: np.ndarray  # [r, I] float64 phi_k = softmax(Q[:, k] / T + log pop), rows sum to 1
    popularity: np.ndarray  # [I] float64 Zipf weights, max 1
    successor: np.ndarray  # [I] int64, one cycle through all items
    counts: np.ndarray  # [U] int64 interactions per user
    noise: float

    def item_distribution(self, users: np.ndarray) -> np.ndarray:
        """p_u over all items (before excluding the items u already had): [len(users), I]."""
        probs = (1.0 - self.noise) * (self.user_tastes[users] @ self.taste_items)
        return probs + self.noise / self.taste_items.shape[1]

    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Standardised affinity z = theta_u . Q_i / |theta_u| of (user, item) pairs [n]."""
        if len(users) == 0:
            return np.zeros(0, dtype=np.float32)
        lo, hi = int(users.min()), int(users.max()) + 1  # normalise only the users in range
        theta = self.user_tastes[lo:hi]
        dirs = (theta / np.linalg.norm(theta, axis=1, keepdims=True)).astype(np.float32)
        pairs = dirs.take(users - lo, axis=0) * self.item_factors.take(items, axis=0)  # [n, r]
        return pairs.sum(axis=1)


class Synthetic(DataSource):
    """Synthetic log with planted low-rank, popularity and successor structure (see module doc).

    Deterministic: the same arguments (seed included) give the same log; the chunking depends only
    on the arguments. `planted()` returns the ground truth (factors, tastes, successors, counts).
    """

    name = "synthetic"

    def __init__(
        self,
        num_users: int = 1000,
        num_items: int = 500,
        interactions_per_user: float = 20.0,
        rank: int = 8,
        popularity_exponent: float = 1.0,
        sequential_strength: float = 0.5,
        noise: float = 0.1,
        with_ratings: bool = True,
        seed: int = 0,
    ) -> None:
        checks = {
            "num_users >= 1": num_users >= 1,
            "num_items >= 1": num_items >= 1,
            "interactions_per_user > 0": interactions_per_user > 0,
            "rank >= 1": rank >= 1,
            "popularity_exponent >= 0": popularity_exponent >= 0,
            "0 <= sequential_strength <= 1": 0 <= sequential_strength <= 1,
            "0 <= noise <= 1": 0 <= noise <= 1,
        }
        failed = [rule for rule, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"Synthetic: need {', '.join(failed)}")
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.interactions_per_user = float(interactions_per_user)
        self.rank = int(rank)
        self.popularity_exponent = float(popularity_exponent)
        self.sequential_strength = float(sequential_strength)
        self.noise = float(noise)
        self.with_ratings = bool(with_ratings)
        self.seed = int(seed)

    def __repr__(self) -> str:
        return (
            f"Synthetic(num_users={self.num_users}, num_items={self.num_items}, "
            f"interactions_per_user={self.interactions_per_user}, rank={self.rank}, "
            f"popularity_exponent={self.popularity_exponent}, "
            f"sequential_strength={self.sequential_strength}, noise={self.noise}, "
            f"with_ratings={self.with_ratings}, seed={self.seed})"
        )

    # ---------------------------------------------------------------- ground truth
    def planted(self) -> Planted:
        """The planted factors, tastes, popularity, successors and counts (cheap: O((U + I) r))."""
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0,)))
        n_u, n_i, r = self.num_users, self.num_items, self.rank
        q = rng.standard_normal((n_i, r), dtype=np.float32)
        ranks = rng.permutation(n_i) + 1.0
        popularity = ranks**-self.popularity_exponent
        logits = q.T.astype(np.float64) / ITEM_TEMPERATURE + np.log(popularity)  # [r, I]
        taste_items = _softmax(logits)
        # successor cycle: items grouped by dominant taste, random order within a taste
        order = np.lexsort((rng.random(n_i), np.argmax(q, axis=1)))
        successor = np.empty(n_i, dtype=np.int64)
        successor[order] = np.roll(order, -1)
        p = rng.standard_normal((n_u, r), dtype=np.float32)
        user_tastes = _softmax(p.astype(np.float64) / USER_TEMPERATURE)
        lam = max(self.interactions_per_user - 1.0, 0.0)
        counts = np.minimum(1 + rng.poisson(lam, n_u), n_i).astype(np.int64)
        return Planted(p, q, user_tastes, taste_items, popularity, successor, counts, self.noise)

    # ---------------------------------------------------------------- generation
    def load(self) -> Interactions:
        truth = self.planted()
        n_u, n_i = self.num_users, self.num_items
        counts = truth.counts
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n = int(offsets[-1])
        items = np.empty(n, dtype=np.int64)
        timestamps = np.empty(n, dtype=np.int64)
        ratings = np.empty(n, dtype=np.float32) if self.with_ratings else None
        sampler = _TasteSampler(truth.taste_items)
        per_chunk = max(1, min(n_u, CHUNK_BITS // n_i, MAX_CHUNK_USERS))
        for c, lo in enumerate(range(0, n_u, per_chunk)):
            hi = min(n_u, lo + per_chunk)
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1, c)))
            a, b = offsets[lo], offsets[hi]
            _Chunk(self, truth, sampler, rng, lo, hi, offsets).fill(items)
            timestamps[a:b] = _timestamps(rng, counts[lo:hi])
            if ratings is not None:
                users = np.repeat(np.arange(lo, hi), counts[lo:hi])
                z = truth.affinity(users, items[a:b])
                noisy = RATING_OFFSET + z + 5.0 * self.noise * rng.standard_normal(b - a)
                ratings[a:b] = np.clip(np.rint(noisy), 1, 5)
        inter = Interactions(
            users=np.repeat(np.arange(n_u, dtype=np.int64), counts),
            items=items,
            num_users=n_u,
            num_items=n_i,
            user_ids=np.arange(n_u, dtype=np.int64),
            item_ids=np.arange(n_i, dtype=np.int64),
            ratings=ratings,
            timestamps=timestamps,
            name=self.name,
        )
        log.info("%s (%r)", inter.summary(), self)
        return inter


class _Chunk:
    """Generates the item sequences of users lo..hi-1, vectorised over users, looping over steps.

    Each row (user) reads fresh items from a stream of pre-drawn i.i.d. candidates from p_u,
    skipping the ones it already had; taking the first unseen candidate is exactly a draw from
    p_u restricted to unseen items. An exhausted stream is re-drawn from p_u, or, when most of its
    candidates were already seen, from the restricted p_u itself (dense over items; always
    progresses, so a user can hold every item).
    """

    def __init__(
        self,
        src: Synthetic,
        truth: Planted,
        sampler: _TasteSampler,
        rng: np.random.Generator,
        lo: int,
        hi: int,
        offsets: np.ndarray,
    ) -> None:
        self.truth, self.sampler, self.rng = truth, sampler, rng
        self.n_items = src.num_items
        self.noise = src.noise
        self.strength = src.sequential_strength
        counts = truth.counts[lo:hi]
        order = np.argsort(-counts, kind="stable")  # longest first: active users are a prefix
        self.users = lo + order  # [m] global user of each local row
        self.counts = counts[order]  # [m] descending
        self.base = offsets[self.users]  # [m] output position of each row's first item
        m = len(order)
        self.taste_cdf = np.cumsum(truth.user_tastes[self.users], axis=1)  # [m, r]
        self.words = (self.n_items + 7) // 8
        self.seen = np.zeros(m * self.words, dtype=np.uint8)  # bitmap [m, words], bit = had item
        # fresh draws a row needs ~ count * (1 - strength / 2); longer rows re-draw
        need = counts.mean() * (1.0 - 0.5 * self.strength)
        self.width = int(max(8, min(math.ceil(need) + 8, STREAM_CELLS // m)))
        self.stream = self._draw(np.arange(m))  # [m, width] candidates
        self.ptr = np.zeros(m, dtype=np.int64)  # next unread candidate of each row
        self.misses = np.zeros(m, dtype=np.int64)  # candidates already seen, since last draw

    def _draw(self, rows: np.ndarray) -> np.ndarray:
        """`width` i.i.d. draws from the unrestricted p_u of each row: [len(rows), width]."""
        rng, cdf = self.rng, self.taste_cdf[rows]
        u = rng.random((len(rows), self.width))
        taste = np.zeros(u.shape, dtype=np.int64)
        for k in range(cdf.shape[1] - 1):
            taste += u > cdf[:, k : k + 1]
        pick = self.sampler.sample(taste, rng)
        if self.noise > 0:
            uniform = rng.random(u.shape) < self.noise
            pick[uniform] = rng.integers(0, self.n_items, int(uniform.sum()))
        return pick

    def _restricted(self, rows: np.ndarray) -> np.ndarray:
        """`width` i.i.d. draws from p_u restricted to the items the row has not had."""
        n_i = self.n_items
        out = np.empty((len(rows), self.width), dtype=np.int64)
        block = max(1, REFILL_CELLS // n_i)
        for s in range(0, len(rows), block):
            sub = rows[s : s + block]
            probs = self.truth.item_distribution(self.users[sub])  # [b, I]
            bits = self.seen.reshape(-1, self.words)[sub]
            had = np.unpackbits(bits, axis=1, count=n_i, bitorder="little").astype(bool)
            probs[had] = 0.0
            empty = probs.sum(axis=1) <= 0  # underflow: uniform over the unseen items
            probs[empty] = ~had[empty]
            shape = (len(sub), self.width)
            out[s : s + block] = _sample_rows(_flat_cdf(probs), n_i, shape, self.rng)
        return out

    def _refill(self, rows: np.ndarray) -> None:
        stale = self.misses[rows] * 10 > self.width * 9  # < 10% of the candidates were new
        for group, draw in ((rows[~stale], self._draw), (rows[stale], self._restricted)):
            if group.size:
                self.stream[group] = draw(group)
        self.ptr[rows] = 0
        self.misses[rows] = 0

    def _is_new(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        byte = rows * self.words + (items >> 3)
        return (self.seen.take(byte) & _BIT.take(items & 7)) == 0

    def _fresh(self, rows: np.ndarray) -> np.ndarray:
        """Next candidate each row has not had yet (one per row; rows are distinct)."""
        out = np.empty(len(rows), dtype=np.int64)
        pending = np.arange(len(rows))
        window = np.arange(SCAN)
        while pending.size:
            rr = rows[pending]
            done = self.ptr[rr] >= self.width
            if done.any():
                self._refill(rr[done])
            at = np.minimum(self.ptr[rr, None] + window, self.width - 1)  # [p, SCAN]
            cand = self.stream.ravel().take(rr[:, None] * self.width + at)
            new = self._is_new(rr[:, None], cand)
            new &= self.ptr[rr, None] + window < self.width
            first = np.argmax(new, axis=1)
            ok = new[np.arange(len(rr)), first]
            used = np.where(ok, first + 1, SCAN)
            self.ptr[rr] += used
            self.misses[rr] += used - ok
            out[pending[ok]] = cand[ok, first[ok]]
            pending = pending[~ok]
        return out

    def fill(self, items: np.ndarray) -> None:
        """Write each row's sequence into items[base : base + count]."""
        m = len(self.counts)
        active = np.searchsorted(-self.counts, -np.arange(self.counts[0]), side="left")
        allrows = np.arange(m)
        cur = np.empty(m, dtype=np.int64)
        for t, k in enumerate(active):
            rows = allrows[:k]
            if t == 0 or self.strength == 0:
                step = self._fresh(rows)
            else:
                step = self.truth.successor[cur[:k]]
                follow = self.rng.random(k) < self.strength
                follow &= self._is_new(rows, step)
                need = np.flatnonzero(~follow)
                if need.size:
                    step[need] = self._fresh(need)
            self.seen[rows * self.words + (step >> 3)] |= _BIT.take(step & 7)  # rows distinct
            cur[:k] = step
            items[self.base[:k] + t] = step


class _TasteSampler:
    """Draws items from the taste distributions phi_k, O(1) expected per draw.

    Inverse CDF with a guide table: cell c of taste k's table holds the first item whose CDF
    exceeds c / G, so a uniform u in cell c has its item among the few from there; cells spanning
    more than a few items (the long tail) fall back to binary search.
    """

    def __init__(self, taste_items: np.ndarray) -> None:
        r, n_i = taste_items.shape
        self.n_items = n_i
        self.cells = 4 * n_i
        self.cdf = _flat_cdf(taste_items)  # [r * I], row k offset by k
        grid = np.arange(r)[:, None] + np.arange(self.cells + 1) / self.cells  # [r, G + 1]
        guide = np.searchsorted(self.cdf, grid.ravel(), side="right")
        self.guide = np.minimum(guide, len(self.cdf) - 1)  # [r * (G + 1)]

    def sample(self, taste: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(taste.shape)
        cell = np.minimum((u * self.cells).astype(np.int64), self.cells - 1)
        cell += taste * (self.cells + 1)
        q = taste + u  # query on the flat CDF
        pick = self.guide[cell]
        for _ in range(3):
            pick += self.cdf[pick] <= q
        prev = self.cdf[np.maximum(pick - 1, 0)]
        slow = (self.cdf[pick] <= q) | ((prev > q) & (pick > 0))  # tail cell (or rounding)
        if slow.any():
            pick[slow] = np.searchsorted(self.cdf, q[slow], side="right")
        return np.clip(pick - taste * self.n_items, 0, self.n_items - 1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax (float64)."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _flat_cdf(weights: np.ndarray) -> np.ndarray:
    """Row CDFs of weights [m, k] (>= 0), row j shifted by j, flattened: increasing [m * k]."""
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    cdf += np.arange(len(weights))[:, None]
    return cdf.ravel()


def _sample_rows(
    flat_cdf: np.ndarray, k: int, shape: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Category (0..k-1) draws from each row of a `_flat_cdf`: [rows, draws] int64."""
    rows = np.arange(shape[0])[:, None]
    pick = np.searchsorted(flat_cdf, rows + rng.random(shape), side="right") - rows * k
    return np.clip(pick, 0, k - 1)


def _timestamps(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """Strictly increasing int64 seconds along each user's sequence, users concatenated."""
    n = int(counts.sum())
    gaps = 1 + rng.exponential(MEAN_GAP, n).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gaps[first] = START + rng.integers(0, SPAN, len(counts))
    run = np.cumsum(gaps)
    return run - np.repeat(run[first] - gaps[first], counts)
