"""Full ranking of a large catalogue in bounded memory (issue 18): items scored in chunks, top-K and
rank counting exact across chunks.

`ChunkedRanking` must give exactly the metrics of ranking the whole score matrix at once, with ties,
several targets per user, excluded items and the sampled protocol's candidates; and every model
with an `item_scorer` must evaluate and predict the same through chunks as through one [B, I]
matrix (ML-100K, a few chunks per batch forced by a small `score_cells`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from lit_recs.cli import RecCLI
from lit_recs.metrics import ChunkedRanking, RankingMetrics, as_pairs
from lit_recs.models.base import ClosedFormModule, RecModule

KS = (1, 3, 10)
CONF = Path(__file__).resolve().parents[1] / "conf"


def random_case(ties: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [B, I] (seen items at -inf; integer scores when `ties`) and a target mask [B, I]
    with 0 to 4 targets per row, never excluded."""
    g = torch.Generator().manual_seed(seed)
    b, i = 17, 61
    scores = torch.randint(0, 4, (b, i), generator=g).float() if ties else \
        torch.randn(b, i, generator=g)
    scores[torch.rand(b, i, generator=g) < 0.3] = float("-inf")
    targets = torch.zeros(b, i, dtype=torch.bool)
    for row in range(b):
        n = int(torch.randint(0, 5, (1,), generator=g))
        targets[row, torch.randperm(i, generator=g)[:n]] = True
    lift = torch.randint(0, 3, (b, i), generator=g).float()  # so that some targets rank high
    scores[targets] = (torch.where(scores == float("-inf"), 0.5, scores) + lift)[targets]
    return scores, targets


def chunked(scores: torch.Tensor, targets: torch.Tensor, width: int,
            candidates: torch.Tensor | None = None) -> ChunkedRanking:
    ranking = ChunkedRanking(as_pairs(targets), scores.shape[0], max(KS), candidates)
    for first in range(0, scores.shape[1], width):
        ranking.add(first, scores[:, first:first + width])
    return ranking


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunks_give_exactly_the_whole_catalogues_metrics(ties: bool, seed: int) -> None:
    scores, targets = random_case(ties, seed)
    num_items = scores.shape[1]
    coverage = None if ties else num_items  # topk breaks ties its own way: coverage without them
    whole = RankingMetrics(KS, num_items=coverage)
    whole.update(scores, targets)
    expected = whole.compute()
    assert expected["ndcg@10"] > 0 and expected["hr@1"] < 1
    candidates = torch.randint(0, num_items, (scores.shape[0], 9))  # [B, C]
    for width in (1, 4, 16, 60, num_items):
        ranking = chunked(scores, targets, width, candidates)
        metric = RankingMetrics(KS, num_items=coverage)
        metric.update(ranking, weights=torch.ones(scores.shape[0]))
        assert metric.update_called  # what log_metrics asks before logging
        assert metric.compute() == expected, width
        assert torch.equal(ranking.candidate_scores, scores.gather(1, candidates))
        top = scores.topk(max(KS), dim=1)
        assert torch.equal(ranking.top_values, top.values)
        if not ties:
            assert torch.equal(ranking.top_items, top.indices)


def test_chunks_must_cover_every_target() -> None:
    scores, targets = random_case(False, 0)
    ranking = ChunkedRanking(as_pairs(targets), scores.shape[0], 10)
    ranking.add(0, scores[:, :30])
    with pytest.raises(ValueError, match="did not cover every target"):
        ranking.positions()


# ------------------------------------------------------------------ every model, through chunks
MODELS = {  # model config -> data config
    "mf": "ml-100k-loo", "ials": "ml-100k-loo", "neumf": "ml-100k-loo", "popularity": "ml-100k-loo",
    "ease": "ml-100k-loo", "slim": "ml-100k-loo", "itemknn": "ml-100k-loo",
    "bert4rec": "ml-100k-seq", "sasrec": "ml-100k-seq-next", "two_tower": "ml-100k-two-tower",
    "fm": "ml-100k-fm-topn",
}


def built(model: str) -> tuple[RecModule, object]:
    cli = RecCLI(args=["--config", str(CONF / "base.yaml"),
                       "--data", str(CONF / "data" / f"{MODELS[model]}.yaml"),
                       "--model", str(CONF / "model" / f"{model}.yaml"),
                       "--trainer.logger", "false"], run=False)
    module, data = cli.model, cli.datamodule
    module.attach_data(data.model_inputs("fit"))
    if isinstance(module, ClosedFormModule):
        module.fit_interactions(module._train)
    module.attach_data(data.model_inputs("test"))
    return module.eval(), data


def evaluated(module: RecModule, batches: list, cells: int) -> tuple[dict, list]:
    module.score_cells = cells
    with torch.no_grad(), module.evaluation_pass():
        for batch in batches:
            module.evaluate(batch, "test")
        predicted = [module.predict_step(batch, 0) for batch in batches]
    assert module.metrics["test"].update_called and module.metrics["test_sampled"].update_called
    metrics = {**module.metrics["test"].compute(), **module.metrics["test_sampled"].compute()}
    module.metrics["test"].reset()
    module.metrics["test_sampled"].reset()
    return metrics, predicted


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_evaluates_and_predicts_the_same_in_chunks(model: str) -> None:
    torch.manual_seed(0)
    module, data = built(model)
    batches = [batch for _, batch in zip(range(2), data.test_dataloader())]
    whole, whole_top = evaluated(module, batches, 1 << 25)
    assert module.chunk_width(batches[0]) is None  # 512 x 1,682 fits in one block
    module.score_cells = 100_000
    width = module.chunk_width(batches[0])
    assert width is not None and module.num_items / width > 8  # a few chunks per batch
    parts, parts_top = evaluated(module, batches, 100_000)
    assert whole["ndcg@10"] > 0 and parts.keys() == whole.keys()
    for key, value in whole.items():  # chunks may round a dot product differently: 1e-12
        assert abs(float(parts[key]) - float(value)) < 1e-12, key
    for batch, mine, theirs in zip(batches, parts_top, whole_top):
        assert torch.equal(mine["users"], theirs["users"])
        torch.testing.assert_close(mine["scores"], theirs["scores"])
        # the same list up to the order of tied items: each item's own score, no repeats
        with torch.no_grad(), module.evaluation_pass():
            full = module.masked_scores(batch)[batch.weights > 0]  # [B', I]
        torch.testing.assert_close(full.gather(1, mine["items"]), mine["scores"])
        assert all(len(set(row.tolist())) == row.numel() for row in mine["items"])


def test_the_command_logs_the_same_metrics_when_it_ranks_in_chunks(tmp_path: Path) -> None:
    """Through `lit-recs fit` (in this process): the chunked path's metrics reach the logger,
    early stopping and results.json, equal to the whole-catalogue run's."""
    from lit_recs.cli import RUN_DIR_ENV
    from lit_recs.cli import run as main
    results = {}
    for cells in (1 << 25, 20_000):
        folder = tmp_path / str(cells)
        main(["fit", "--config", str(CONF / "base.yaml"), "--data",
              str(CONF / "data" / "ml-100k-loo.yaml"), "--model",
              str(CONF / "model" / "popularity.yaml"), "--model.init_args.score_cells", str(cells),
              "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(folder)])
        results[cells] = json.loads((folder / "results.json").read_text())["metrics"]
    os.environ.pop(RUN_DIR_ENV, None)
    whole, parts = results[1 << 25], results[20_000]
    assert "val/ndcg@10" in parts and "test/sampled99/hr@10" in parts
    assert parts.keys() == whole.keys()
    for key, value in whole.items():
        assert parts[key] == pytest.approx(value, abs=1e-6), key
