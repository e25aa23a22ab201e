"""The expected tie policy (issue 19): `RankingMetrics(ties="expected")` against brute-force
enumeration of every order within ties, on the whole-matrix, chunked and sampled paths; the
pessimistic values beside it identical to the default policy's; exact under DDP; and results.json
through the `lit-recs` command."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from commands import lit_recs
from test_metrics import list_metrics, reference

from lit_recs.metrics import (
    METRIC_NAMES,
    PESSIMISTIC,
    TIE_GAP_TOLERANCE,
    ChunkedRanking,
    RankingMetrics,
    as_pairs,
    tie_counts,
    tie_gaps,
)
from lit_recs.models.base import RecModule

KS = (1, 2, 3, 5, 10)
CONF = Path(__file__).resolve().parents[1] / "conf"


# ------------------------------------------------------------------ brute force
def tie_orders(score_row, target_row):
    """Every ranked list of the row's relevance labels by score descending, each equally likely
    under a uniformly random order within ties: a group of equal scores with s items, t of them
    targets, puts its targets on each of the C(s, t) subsets of its positions equally often, so
    the lists are the product over groups of those subsets."""
    values = sorted(set(score_row.tolist()), reverse=True)
    groups = [(int((score_row == v).sum()), int(target_row[score_row == v].sum())) for v in values]
    for picks in itertools.product(*(itertools.combinations(range(s), t) for s, t in groups)):
        yield [p in pick for (s, _), pick in zip(groups, picks) for p in range(s)]


def brute_expected_user(score_row, target_row, ks):
    """Each metric averaged over every order within ties."""
    sums, count = {}, 0
    for rel in tie_orders(score_row, target_row):
        for key, value in list_metrics(rel, ks).items():
            sums[key] = sums.get(key, 0.0) + value
        count += 1
    return {key: value / count for key, value in sums.items()}


def brute_expected(scores, targets, weights, ks=KS):
    return reference(scores, targets, weights, ks, user=brute_expected_user)


def tie_heavy_case(rng, max_targets, excluded_targets=False):
    """Up to 12 rows of 2 to 7 items scored in {0, 1, 2} (many ties), a fifth excluded (-inf),
    0 to `max_targets` targets per row, weights 0 / 0.5 / 1 / 3."""
    b, n = int(rng.integers(1, 13)), int(rng.integers(2, 8))
    scores = rng.integers(0, 3, size=(b, n)).astype(np.float64)
    targets = np.zeros((b, n), dtype=bool)
    for row in range(b):
        count = int(rng.integers(0, min(max_targets, n) + 1))
        targets[row, rng.choice(n, size=count, replace=False)] = True
    excluded = (rng.random((b, n)) < 0.2) & (~targets | excluded_targets)
    scores[excluded] = -np.inf
    weights = rng.choice([0.0, 0.5, 1.0, 3.0], size=b)
    if not (weights[targets.any(1)] > 0).any():  # at least one counted row
        weights[0], targets[0, 0] = 1.0, True
        scores[0, 0] = max(scores[0, 0], 0.0)
    return scores, targets, weights


def computed(metric):
    return {k: float(v) for k, v in metric.compute().items()}


def policy_values(got):
    """The expected policy's own values (no pessimistic twins)."""
    return {k: v for k, v in got.items() if not k.startswith(f"{PESSIMISTIC}/")}


def assert_close(got, want, tol=1e-10):  # brute force sums many lists
    assert got.keys() == want.keys()
    for key in want:
        assert abs(got[key] - want[key]) <= tol, (key, got[key], want[key])


def chunked(scores, targets, k, width):
    ranking = ChunkedRanking(as_pairs(targets), scores.shape[0], k, count_ties=True)
    for first in range(0, scores.shape[1], width):
        ranking.add(first, scores[:, first:first + width])
    return ranking


# ------------------------------------------------------------------ whole matrix
@pytest.mark.parametrize("max_targets", [1, 2, 4])
def test_expected_matches_every_order_within_ties(max_targets):
    """Whole-matrix path: leave-one-out batches (T = 1, the sort-free count) and 1-4 targets per
    row (sort + searchsorted), float32 and float64 scores, excluded targets included."""
    rng = np.random.default_rng(max_targets)
    for case in range(60):
        scores, targets, weights = tie_heavy_case(rng, max_targets, excluded_targets=case % 3 == 0)
        dtype = torch.float64 if case % 2 else torch.float32
        s, t, w = torch.tensor(scores, dtype=dtype), torch.tensor(targets), torch.tensor(weights)
        metric = RankingMetrics(KS, ties="expected")
        metric.update(s, t, w)
        got = computed(metric)
        assert_close(policy_values(got), brute_expected(scores, targets, weights))
        # the pessimistic values beside them are the default policy's, bit for bit
        default = RankingMetrics(KS)
        default.update(s, t, w)
        assert {k: got[f"{PESSIMISTIC}/{k}"] for k in computed(default)} == computed(default)


def test_hand_checked_several_targets_in_one_tie_group():
    """Items [a, T, T, b, c] all tied, 2 targets: P(hr@1) = 2/5; mrr@2 = P(first is a target)
    + P(second is the first target) / 2 = 2/5 + (3/5)(2/4)/2."""
    metric = RankingMetrics((1, 2), ties="expected")
    metric.update(torch.zeros(1, 5), torch.tensor([[False, True, True, False, False]]))
    got = computed(metric)
    assert got["hr@1"] == pytest.approx(2 / 5, abs=1e-15)
    assert got["hr@2"] == pytest.approx(1 - (3 / 5) * (2 / 4), abs=1e-15)
    assert got["mrr@2"] == pytest.approx(2 / 5 + 3 / 5 * 2 / 4 / 2, abs=1e-15)
    assert got["recall@2"] == pytest.approx(2 / 5, abs=1e-15)  # E[hits@2] = 2 * 2/5
    assert got[f"{PESSIMISTIC}/hr@2"] == 0.0


@pytest.mark.parametrize("m", [1, 3])
def test_constant_model_over_a_large_catalogue(m):
    """Every item tied: hr@K = 1 - C(I - m, K) / C(I, K), recall@K = K / I (the hypergeometric
    and linear closed forms at a scale brute force cannot reach), whole matrix and chunks."""
    num_items, ks = 20_000, (1, 10, 50)
    targets = torch.zeros(2, num_items, dtype=torch.bool)
    targets[0, :m] = True
    targets[1, -m:] = True
    scores = torch.zeros(2, num_items)
    for source in ("whole", "chunks"):
        metric = RankingMetrics(ks, ties="expected")
        if source == "whole":
            metric.update(scores, targets)
        else:
            metric.update(chunked(scores, targets, max(ks), 3_000), weights=torch.ones(2))
        got = computed(metric)
        for k in ks:
            assert got[f"hr@{k}"] == pytest.approx(
                1 - math.comb(num_items - m, k) / math.comb(num_items, k), rel=1e-12)
            assert got[f"recall@{k}"] == pytest.approx(k / num_items, rel=1e-12)
            assert got[f"{PESSIMISTIC}/hr@{k}"] == 0.0


# ------------------------------------------------------------------ chunks
@pytest.mark.parametrize("max_targets", [1, 4])
def test_chunks_match_every_order_within_ties(max_targets):
    """Chunked path with k = 3 over rows of up to 7 tied items: tie groups run past the list of
    the best k non-targets, so the count of ties at its last value must carry across chunks."""
    ks = (1, 2, 3)
    rng = np.random.default_rng(10 + max_targets)
    for _ in range(40):
        scores, targets, weights = tie_heavy_case(rng, max_targets)
        want = brute_expected(scores, targets, weights, ks)
        s, t, w = torch.tensor(scores, dtype=torch.float32), torch.tensor(targets), \
            torch.tensor(weights)
        for width in (1, 2, 3, scores.shape[1]):
            metric = RankingMetrics(ks, ties="expected")
            metric.update(chunked(s, t, max(ks), width), weights=w)
            assert_close(policy_values(computed(metric)), want)


@pytest.mark.parametrize("seed", [0, 1])
def test_chunks_give_the_whole_matrix_counts_below_k(seed):
    """Larger tie-heavy batches: `ChunkedRanking.counts` equals `tie_counts` wherever fewer than
    k items are above, so the expected metrics agree exactly."""
    g = torch.Generator().manual_seed(seed)
    b, i, k = 23, 211, 10
    scores = torch.randint(0, 6, (b, i), generator=g).float()
    scores[torch.rand(b, i, generator=g) < 0.2] = float("-inf")
    targets = torch.zeros(b, i, dtype=torch.bool)
    for row in range(b):
        chosen = torch.randperm(i, generator=g)[:int(torch.randint(1, 5, (1,), generator=g))]
        targets[row, chosen] = True
    scores[targets] = torch.randint(3, 6, (int(targets.sum()),), generator=g).float()
    whole = tie_counts(scores, targets)
    metric = RankingMetrics((1, 5, k), ties="expected")
    metric.update(scores, targets)
    want = computed(metric)
    for width in (1, 7, 64, i):
        counts = chunked(scores, targets, k, width).counts()
        below = whole.valid & (whole.above < k)
        assert torch.equal(counts.above[below], whole.above[below])
        assert torch.equal(counts.tied[below], whole.tied[below])
        assert (counts.above[whole.valid & ~below] == k).all()
        metric = RankingMetrics((1, 5, k), ties="expected")
        metric.update(chunked(scores, targets, k, width), weights=torch.ones(b))
        assert computed(metric) == want, width


def test_counts_in_blocks_of_rows_equal_one_pass(monkeypatch):
    """`count_in_rows` compares a few rows at a time on a CPU: blocks of 1 to 3 rows (a tiny
    COUNT_BLOCK_CELLS) give the counts of one pass, whole-matrix and in chunks."""
    g = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 4, (13, 40), generator=g).float()
    scores[torch.rand(13, 40, generator=g) < 0.2] = float("-inf")
    targets = torch.zeros(13, 40, dtype=torch.bool)
    targets[torch.arange(13), torch.randint(0, 40, (13,), generator=g)] = True
    scores[targets] = torch.randint(2, 4, (13,), generator=g).float()
    want = tie_counts(scores, targets)
    want_chunks = chunked(scores, targets, 3, 17).counts()
    for cells in (40, 100):  # 1 and 2 rows per block
        monkeypatch.setattr("lit_recs.metrics.COUNT_BLOCK_CELLS", cells)
        got = tie_counts(scores, targets)
        assert torch.equal(got.above, want.above) and torch.equal(got.tied, want.tied)
        got = chunked(scores, targets, 3, 17).counts()
        assert torch.equal(got.above, want_chunks.above)
        assert torch.equal(got.tied, want_chunks.tied)


# ------------------------------------------------------------------ through RecModule
class FixedScores(RecModule):
    """Scores read from a fixed [U, I] table, through an item_scorer (so chunks apply)."""

    def __init__(self, table: torch.Tensor, **kwargs) -> None:
        super().__init__(table.shape[0], table.shape[1], **kwargs)
        self.register_buffer("table", table)

    def item_scorer(self, batch):
        return lambda items: self.table[batch.users][:, items]  # [B, n]


def module_case(rng):
    """A tie-heavy [U, I] table, each user with seen items, 1-4 targets and 6 sampled negatives
    among the other items."""
    from lit_recs.data.batches import EvalBatch

    users, items, n_neg = 9, 16, 6
    table = rng.integers(0, 3, size=(users, items)).astype(np.float32)
    seen, targets, negatives = np.zeros((users, items), bool), np.zeros((users, items), bool), []
    for u in range(users):
        order = rng.permutation(items)
        n_t = int(rng.integers(1, 5))
        targets[u, order[:n_t]] = True
        seen[u, order[n_t:n_t + 3]] = True
        negatives.append(order[n_t + 3:n_t + 3 + n_neg])
    weights = np.ones(users)
    weights[-1] = 0.0  # a padding row
    batch = EvalBatch(users=torch.arange(users), weights=torch.tensor(weights, dtype=torch.float32),
                      seen=torch.stack(torch.tensor(seen).nonzero(as_tuple=True)),
                      targets=torch.stack(torch.tensor(targets).nonzero(as_tuple=True)),
                      sampled=torch.tensor(np.array(negatives)), sampled_key="sampled6")
    return table, seen, targets, np.array(negatives), weights, batch


@pytest.mark.parametrize("cells", [1 << 25, 20])
def test_recmodule_option_reaches_full_and_sampled_metrics(cells):
    """`RecModule(ties="expected")`: the full ranking (seen items masked) and the sampled
    protocol (targets among their negatives) match brute force, whole-matrix and in chunks."""
    rng = np.random.default_rng(20)
    table, seen, targets, negatives, weights, batch = module_case(rng)
    module = FixedScores(torch.tensor(table), top_k=(1, 3, 5), ties="expected", score_cells=cells)
    assert (module.chunk_width(batch) is not None) == (cells == 20)
    with torch.no_grad(), module.evaluation_pass():
        module.evaluate(batch, "test")
    masked = np.where(seen, -np.inf, table)
    full = policy_values(computed(module.metrics["test"]))
    want = brute_expected(masked, targets, weights, (1, 3, 5))
    assert_close({k: v for k, v in full.items() if not k.startswith("coverage")}, want)
    rows = [np.concatenate([masked[u, negatives[u]], masked[u, targets[u]]]) for u in range(9)]
    marks = [np.arange(len(r)) >= negatives.shape[1] for r in rows]
    sampled = policy_values(computed(module.metrics["test_sampled"]))
    assert_close(sampled, brute_expected(rows, marks, weights, (1, 3, 5)))
    assert sampled["hr@1"] != computed(module.metrics["test_sampled"])[f"{PESSIMISTIC}/hr@1"]


def test_ties_option_is_checked():
    with pytest.raises(ValueError, match="ties must be one of pessimistic, expected, got 'random'"):
        RankingMetrics((1,), ties="random")
    with pytest.raises(ValueError, match="ties must be one of"):
        FixedScores(torch.zeros(2, 3), ties="optimistic")
    scores, targets = torch.zeros(1, 3), torch.tensor([[0], [1]])
    ranking = ChunkedRanking(targets, 1, 2)  # ties not counted
    ranking.add(0, scores)
    metric = RankingMetrics((1,), ties="expected")
    with pytest.raises(ValueError, match="count_ties=True"):
        metric.update(ranking)
    with pytest.raises(ValueError, match="needs the targets' TieCounts"):
        metric.add(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool),
                   torch.ones(1, dtype=torch.float64), None)


# ------------------------------------------------------------------ DDP and reporting
def test_expected_states_add_across_processes():
    """Float64 sums: two processes' states summed give one process's metrics."""
    rng = np.random.default_rng(30)
    scores, targets, weights = tie_heavy_case(rng, 4)
    while len(scores) < 6:
        scores, targets, weights = tie_heavy_case(rng, 4)
    s, t, w = torch.tensor(scores), torch.tensor(targets), torch.tensor(weights)
    whole = RankingMetrics(KS, num_items=scores.shape[1], ties="expected")
    whole.update(s, t, w)
    assert {f"expected_{n}_sum" for n in METRIC_NAMES} <= set(whole._reductions)
    assert all(v.dtype == torch.float64 for v in whole.metric_state.values())
    rank0, rank1 = (RankingMetrics(KS, num_items=scores.shape[1], ties="expected")
                    for _ in range(2))
    rank0.update(s[:3], t[:3], w[:3])
    rank1.update(s[3:], t[3:], w[3:])
    rank0.merge_state(rank1)
    assert_close(computed(rank0), computed(whole))


def test_tie_gaps_pair_each_metric_with_its_pessimistic_twin():
    values = {"test/hr@10": 0.30, "test/pessimistic/hr@10": 0.20,
              "test/ndcg@10": 0.10, "test/pessimistic/ndcg@10": 0.10 - TIE_GAP_TOLERANCE / 2,
              "test/sampled99/mrr@5": 0.5, "test/sampled99/pessimistic/mrr@5": 0.4,
              "val/coverage@10": 0.2, "pessimistic/recall@1": 0.1, "recall@1": 0.2}
    gaps = tie_gaps(values)
    assert list(gaps) == ["recall@1", "test/hr@10", "test/sampled99/mrr@5"]
    assert gaps["test/hr@10"] == {"expected": 0.30, "pessimistic": 0.20,
                                  "tie_gap": pytest.approx(0.10)}
    assert tie_gaps(values, tolerance=1.0) == {}


def run_command(folder: Path, *args: str) -> tuple[dict, str]:
    out = lit_recs("fit", "--config", str(CONF / "base.yaml"),
                   "--data", str(CONF / "data" / "ml-100k-loo.yaml"),
                   "--model", str(CONF / "model" / "popularity.yaml"),
                   "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                   "--trainer.default_root_dir", str(folder), *args)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((folder / "results.json").read_text()), out.stdout + out.stderr


def test_command_writes_both_policies_and_the_gaps(tmp_path):
    """`lit-recs fit ... --model.init_args.ties expected`: results.json holds the expected values
    under the usual names, the default run's values under `pessimistic/`, and a `tie_gap` for
    each metric where they differ; the console shows the gaps."""
    default, _ = run_command(tmp_path / "pessimistic")
    expected, console = run_command(tmp_path / "expected", "--model.init_args.ties", "expected")
    assert default["ties"] == {"policy": "pessimistic"}
    assert not any(f"/{PESSIMISTIC}/" in key for key in default["metrics"])
    metrics = expected["metrics"]
    for key, value in default["metrics"].items():
        if key.startswith(("val/", "test/")) and "coverage" not in key:
            head, metric = key.rsplit("/", 1)
            assert metrics[f"{head}/{PESSIMISTIC}/{metric}"] == value, key
            assert key in metrics
    ties = expected["ties"]
    assert ties["policy"] == "expected" and ties["tolerance"] == TIE_GAP_TOLERANCE
    assert "test/sampled99/hr@10" in ties["gaps"]  # Popularity ties among rarely rated items
    for key, gap in ties["gaps"].items():
        head, metric = key.rsplit("/", 1)
        assert gap["expected"] == metrics[key]
        assert gap["pessimistic"] == metrics[f"{head}/{PESSIMISTIC}/{metric}"]
        assert gap["tie_gap"] == pytest.approx(gap["expected"] - gap["pessimistic"], abs=1e-12)
        assert abs(gap["tie_gap"]) > TIE_GAP_TOLERANCE
    line = next(line for line in console.splitlines() if "test/sampled99/hr@10" in line
                and "tie_gap" in line)
    assert f"{ties['gaps']['test/sampled99/hr@10']['tie_gap']:+.4f}" in line


def test_command_refuses_an_unknown_tie_policy(tmp_path):
    out = lit_recs("fit", "--config", str(CONF / "base.yaml"),
                   "--data", str(CONF / "data" / "ml-100k-loo.yaml"),
                   "--model", str(CONF / "model" / "popularity.yaml"), "--trainer.logger", "false",
                   "--model.init_args.ties", "random",
                   "--trainer.default_root_dir", str(tmp_path))
    assert out.returncode != 0
    assert 'Parser key "ties"' in out.stderr and "Got value: random" in out.stderr
    assert not (tmp_path / "results.json").exists()


def test_two_processes_give_one_process_expected_metrics(tmp_path):
    """DDP (gloo on CPU) through the command: `test` on two processes gives the expected and
    pessimistic metrics of one process on the same checkpoint (the states are float64 sums).
    The model is fitted once, on one process; test_ddp.py fits models without gradients on two."""
    common = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
              "--trainer.accelerator", "cpu"]
    run_command(tmp_path / "fit", "--model.init_args.ties", "expected")
    results = {}
    for devices, strategy in (("1", "auto"), ("2", "ddp")):
        folder = tmp_path / devices
        tested = lit_recs("test", "--config", str(tmp_path / "fit" / "config.yaml"),
                          "--ckpt_path", str(tmp_path / "fit" / "checkpoints" / "best.ckpt"),
                          "--trainer.strategy", strategy, "--trainer.devices", devices,
                          "--trainer.default_root_dir", str(folder), *common)
        assert tested.returncode == 0, tested.stderr[-3000:]
        results[devices] = json.loads((folder / "results.json").read_text())
    one, two = results["1"], results["2"]
    assert two["world_size"] == 2
    keys = [k for k in one["metrics"] if k.startswith("test/")]
    assert "test/sampled99/pessimistic/hr@10" in keys and "test/sampled99/hr@10" in keys
    for key in keys:
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], abs=1e-6), key
    assert one["ties"]["gaps"].keys() == two["ties"]["gaps"].keys() != set()
