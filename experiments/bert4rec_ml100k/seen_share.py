"""Where a trained BERT4Rec's top 10 go when seen items are not masked (seq-loo test users).

    LIT_RECS_DATA=../shared/datasets python experiments/bert4rec_ml100k/seen_share.py \
        runs/bert4rec_ml100k/s42/checkpoints/best.ckpt [--batches 5]

Prints: the share of the test top-10 slots taken by items of the input window (the model reads
them) and by older seen items (outside the window); test HR@10 with nothing masked, with only the
window's items masked and with every seen item masked; and, on training Cloze batches, the
probability mass and the top-10 share that the masked positions give to the items visible in the
same sequence (never the answer: each item occurs once per user).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from lit_recs.data.cloze import ClozeDataModule, history_tokens
from lit_recs.data.tokens import item_tokens, vocabulary_size
from lit_recs.models import BERT4Rec


def hit_rate(scores: torch.Tensor, target: np.ndarray, k: int = 10) -> float:
    top = scores.topk(k, 1).indices.numpy()  # [U, k]
    has = target >= 0
    return float((top[has] == target[has, None]).any(1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--batches", type=int, default=5, help="training batches for the mass figures")
    args = ap.parse_args()
    model = BERT4Rec.load_from_checkpoint(args.checkpoint, map_location="cpu", weights_only=True).eval()
    window = model.max_len
    dm = ClozeDataModule(dataset="ml-100k", max_len=window, window_stride=window,
                         sampled_negatives=0)
    known = dm.known("test")
    indptr, flat = known.sequences()
    target = np.full(dm.num_users, -1)
    target[dm.splits.test.users] = dm.splits.test.items
    tokens = torch.from_numpy(history_tokens(known, window))  # [U, L], [mask] last
    with torch.no_grad():
        scores = torch.cat([model.net.logits(model.encode(tokens[i:i + 256])[:, -1])
                            for i in range(0, len(tokens), 256)])  # [U, I]
    top = scores.topk(10, 1).indices.numpy()  # [U, 10]
    in_window, older = np.zeros(len(top)), np.zeros(len(top))
    masked_window, masked_all = scores.clone(), scores.clone()
    for u in range(len(top)):
        seq = flat[indptr[u]:indptr[u + 1]]
        recent, old = seq[-(window - 1):], seq[:-(window - 1)]
        in_window[u] = np.isin(top[u], recent).mean()
        older[u] = np.isin(top[u], old).mean()
        masked_window[u, recent] = float("-inf")
        masked_all[u, seq] = float("-inf")
    print(f"test top-10 slots: {in_window.mean():.3f} items of the input window, {older.mean():.3f} "
          f"older seen items")
    print(f"test HR@10: nothing masked {hit_rate(scores, target):.4f}, window items masked "
          f"{hit_rate(masked_window, target):.4f}, every seen item masked "
          f"{hit_rate(masked_all, target):.4f}")
    mass, share = [], []
    with torch.no_grad():
        for k, batch in enumerate(dm.train_dataloader()):
            if k >= args.batches:
                break
            at = batch.labels >= 0  # [B, L]
            probs = torch.softmax(model.net.logits(model.encode(batch.tokens)[at]), -1)  # [M, I]
            visible = torch.zeros(len(batch.tokens), vocabulary_size(dm.num_items),
                                  dtype=torch.bool)
            visible.scatter_(1, batch.tokens, True)  # [B, I + 2]: by token
            items = slice(item_tokens(0), item_tokens(dm.num_items))  # the items' tokens
            visible = visible[:, items][at.nonzero()[:, 0]]  # [M, I]
            mass.append((probs * visible).sum(1))
            share.append(visible.gather(1, probs.topk(10, 1).indices).float().mean(1))
    print(f"training masked positions: {torch.cat(mass).mean():.3f} of the probability and "
          f"{torch.cat(share).mean():.3f} of the top 10 on items visible in the same sequence")


if __name__ == "__main__":
    main()
