"""What the expected tie policy costs: RankingMetrics.update under `ties="pessimistic"` and
`ties="expected"` on one batch of random scores, 1 thread.

    python experiments/benchmarks/ties.py [--users 512] [--items 1000000] [--repeats 3]

Cases: the chunked path (`ChunkedRanking`, chunks of score_cells // users items, as RecModule
ranks a catalogue that exceeds score_cells), and the whole-matrix path on a tenth of the
catalogue (a [B, I] matrix at 1M items would take 2 GB and RecModule ranks it in chunks); each with
1 target per user (leave-one-out) and 4, scores continuous (few ties) or integers in [0, 50) (a
Popularity-like catalogue where ties fill the lists). Times are the best of `repeats`, without
the time to make the scores (timed alone and subtracted in the chunked case).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from lit_recs.metrics import ChunkedRanking, RankingMetrics

KS = (5, 10, 20)


def scores_of(users: int, items: int, ties: bool, seed: int) -> torch.Tensor:
    """[users, items] float32: standard normal, or integers in [0, 50) when `ties`."""
    g = torch.Generator().manual_seed(seed)
    if ties:
        return torch.randint(0, 50, (users, items), generator=g).float()
    return torch.randn(users, items, generator=g)


def targets_of(users: int, items: int, per_user: int) -> torch.Tensor:
    """(row, item) pairs [2, users * per_user], sorted by row then item."""
    g = torch.Generator().manual_seed(1)
    cols = torch.rand(users, items // 1000, generator=g).topk(per_user, 1).indices * 1000
    cols = cols.sort(1).values  # [B, per_user] distinct items, ascending
    rows = torch.arange(users)[:, None].expand_as(cols)
    return torch.stack([rows.reshape(-1), cols.reshape(-1)])


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def chunked_update(block: torch.Tensor, items: int, targets: torch.Tensor, policy: str | None
                   ) -> None:
    """Rank `items` items in chunks of block's width (chunk c = block + c: distinct values per
    chunk), then update a RankingMetrics of that policy (None: only make the chunks)."""
    users, width = block.shape
    ranking = ChunkedRanking(targets, users, max(KS), count_ties=policy == "expected")
    for first in range(0, items, width):
        chunk = block[:, :min(width, items - first)] + float(first // width)  # [B, n]
        if policy is not None:
            ranking.add(first, chunk)
    if policy is not None:
        RankingMetrics(KS, ties=policy).update(ranking, weights=torch.ones(users))


def chunked_row(block: torch.Tensor, items: int, per_user: int, repeats: int) -> list[float]:
    """Seconds per policy on the chunked path, less the time to make the chunks."""
    targets = targets_of(block.shape[0], items, per_user)
    make = best_time(partial(chunked_update, block, items, targets, None), repeats)
    return [best_time(partial(chunked_update, block, items, targets, policy), repeats) - make
            for policy in ("pessimistic", "expected")]


def whole_row(scores: torch.Tensor, per_user: int, repeats: int) -> list[float]:
    """Seconds per policy on the whole-matrix path."""
    targets = targets_of(scores.shape[0], scores.shape[1], per_user)
    return [best_time(partial(RankingMetrics(KS, ties=policy).update, scores, targets), repeats)
            for policy in ("pessimistic", "expected")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=512)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--score-cells", type=int, default=1 << 25)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    width = args.score_cells // args.users
    print(f"{args.users} users, chunks of {width:,} items, 1 thread, best of {args.repeats}")
    print("| path | items | targets/user | scores | pessimistic s | expected s | expected / "
          "pessimistic |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for ties in (False, True):
        kind = "integers [0, 50)" if ties else "normal"
        cases = [("chunked", args.items, partial(chunked_row, scores_of(args.users, width, ties, 0),
                                                 args.items)),
                 ("whole matrix", args.items // 10,
                  partial(whole_row, scores_of(args.users, args.items // 10, ties, 2)))]
        for path, items, timed in cases:
            for per_user in (1, 4):
                pessimistic, expected = timed(per_user, args.repeats)
                print(f"| {path} | {items:,} | {per_user} | {kind} | {pessimistic:.3f} | "
                      f"{expected:.3f} | {expected / pessimistic:.2f} |", flush=True)


if __name__ == "__main__":
    main()
