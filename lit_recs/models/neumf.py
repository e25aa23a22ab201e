"""Neural Collaborative Filtering: GMF, MLP and NeuMF.

He, Liao, Zhang, Nie, Hu, Chua, "Neural Collaborative Filtering", WWW 2017.

    GMF:   phi_G = p_u * q_i                                  (element-wise, size gmf_dim)
    MLP:   phi_M = a_L(... a_1(W_1 [p'_u; q'_i] + b_1) ...)    (ReLU layers mlp_dims)
    NeuMF: s(u, i) = h^T [phi_G; phi_M]                        (a logit)

GMF and MLP are NeuMF with one tower: `mlp_dims: []` or `gmf_dim: 0` (conf/model/gmf.yaml,
mlp.yaml, neumf.yaml).

Trained on (user, positive, N sampled negatives) batches with BCE (the paper's log loss, N = 4) or
BPR. Optional initialisation from trained GMF and MLP checkpoints (the paper's pre-training): the
towers' weights are copied and h = [alpha h_GMF; (1 - alpha) h_MLP].

Deviations from the paper: Adam throughout (the paper switches to SGD after pre-training); the
first MLP layer is applied to the user and the item halves apart (W_1 [p; q] = W_u p + W_i q), so
scoring the catalogue computes each user's and each item's half once, and a training batch with
more pairs than items projects the item table once and indexes it (the same for users). An MLP
scorer is not a matmul: `score` runs the catalogue in chunks of at most `score_chunk` (user, item)
pairs, which bounds evaluation memory (about score_chunk x mlp_dims[1] floats). On the CPU the
default chunk is small enough for the [chunk, mlp_dims[1]] activations to stay in cache: 32,768
pairs ranked a 512-user batch over 50k items 4.8x faster than 2M pairs (1 thread), and on a GPU
it is 2M pairs (few large kernels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_recs import losses
from lit_recs.checkpoints import checkpoint_weights
from lit_recs.data.batches import EvalBatch, PairBatch
from lit_recs.models.base import ItemScorer, RecModule
from lit_recs.nn.dropout import Dropout
from lit_recs.nn.embedding import lookup, projected_lookup

CPU_CHUNK = 32_768  # (user, item) pairs per MLP pass when ranking on the CPU (see the module)
ACCELERATOR_CHUNK = 2_000_000  # and on a GPU: few, large kernels


class NeuMFNet(nn.Module):
    """GMF and / or MLP towers joined by a linear layer; gmf_dim = 0 or mlp_dims = () drops one."""

    def __init__(self, num_users: int, num_items: int, gmf_dim: int = 8,
                 mlp_dims: Sequence[int] = (64, 32, 16, 8), dropout: float = 0.0,
                 init_std: float = 0.01, sparse: bool = False) -> None:
        super().__init__()
        mlp_dims = tuple(mlp_dims)
        if gmf_dim <= 0 and not mlp_dims:
            raise ValueError("NeuMF needs a GMF tower (gmf_dim > 0) or an MLP tower (mlp_dims)")
        if mlp_dims and (len(mlp_dims) < 2 or mlp_dims[0] % 2):
            raise ValueError(f"mlp_dims must start with an even input size and have >= 2 entries "
                             f"(the input [p'; q'] and at least one layer), got {mlp_dims}")
        self.gmf_dim, self.mlp_dims = gmf_dim, mlp_dims
        if gmf_dim > 0:
            self.gmf_user, self.gmf_item = nn.Embedding(num_users, gmf_dim, sparse=sparse), \
                nn.Embedding(num_items, gmf_dim, sparse=sparse)
        if mlp_dims:
            half = mlp_dims[0] // 2
            self.mlp_user, self.mlp_item = nn.Embedding(num_users, half, sparse=sparse), \
                nn.Embedding(num_items, half, sparse=sparse)
            self.first_user = nn.Linear(half, mlp_dims[1])  # W_1 = [W_u, W_i], b_1 here
            self.first_item = nn.Linear(half, mlp_dims[1], bias=False)
            layers: list[nn.Module] = []
            for a, b in zip(mlp_dims[1:], mlp_dims[2:]):
                layers += [Dropout(dropout), nn.Linear(a, b), nn.ReLU()]
            self.mlp = nn.Sequential(*layers)
        self.dropout = Dropout(dropout)
        width = max(gmf_dim, 0) + (mlp_dims[-1] if mlp_dims else 0)
        self.out = nn.Linear(width, 1)
        for emb in (m for m in self.modules() if isinstance(m, nn.Embedding)):
            nn.init.normal_(emb.weight, std=init_std)

    def user_part(self, users: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """users [...] -> (GMF embedding [..., G], first MLP layer's user half + bias [..., H1])."""
        gmf = lookup(self.gmf_user, users) if self.gmf_dim > 0 else None
        mlp = projected_lookup(self.mlp_user, self.first_user, users) if self.mlp_dims else None
        return gmf, mlp

    def item_part(self, items: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """items [...] -> (GMF embedding [..., G], first MLP layer's item half [..., H1])."""
        gmf = lookup(self.gmf_item, items) if self.gmf_dim > 0 else None
        mlp = projected_lookup(self.mlp_item, self.first_item, items) if self.mlp_dims else None
        return gmf, mlp

    def join(self, user: tuple[Tensor | None, Tensor | None],
             item: tuple[Tensor | None, Tensor | None]) -> Tensor:
        """User parts [B, 1 or C, .] and item parts [B or 1, C, .] -> logits [B, C]."""
        g = max(self.gmf_dim, 0)
        weight, logits = self.out.weight, self.out.bias  # h [1, G + H_L], its bias [1]
        # h^T [phi_G; phi_M] as one product per tower: no concatenated [B, C, G + H_L] copy
        if user[0] is not None:
            phi = self.dropout(user[0] * item[0])  # [B, C, G]
            logits = F.linear(phi, weight[:, :g], logits)  # [B, C, 1]
        if user[1] is not None:
            phi = self.dropout(self.mlp(torch.relu(user[1] + item[1])))  # [B, C, H_L]
            logits = F.linear(phi, weight[:, g:]) + logits  # [B, C, 1]
        return logits.squeeze(-1)  # [B, C]

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        """users [B], items [B, C] -> logits [B, C].

        Each user's parts are gathered once per item column ([B, C, .], not [B, 1, .]): the
        products and sums of `join` then run on same-shaped tensors, which the CPU does faster
        than broadcasting a size-1 dimension.
        """
        user = self.user_part(users[:, None].expand_as(items))  # [B, C, .]
        return self.join(user, self.item_part(items))


class NeuMF(RecModule):
    """NeuMF (GMF + MLP) trained on PairBatch with a pointwise or pairwise loss.

    Args:
        gmf_dim: GMF factors (0: no GMF tower).
        mlp_dims: MLP sizes, input first: (64, 32, 16, 8) = user and item embeddings of 32 each,
            then layers of 32, 16, 8 ((): no MLP tower).
        dropout: dropout before every MLP layer after the first and before the output layer.
        loss: `lit_recs.losses.bce` (the paper's log loss), `lit_recs.losses.bpr`, or any
            callable (pos [B, 1], neg [B, N]) -> scalar.
        init_std: standard deviation of the normal initialisation of the embeddings.
        score_chunk: (user, item) pairs scored at once when ranking the catalogue (None: 32,768
            on the CPU, 2,000,000 on an accelerator).
        pretrained_gmf / pretrained_mlp: checkpoints of trained GMF / MLP models to start from.
        pretrain_alpha: the GMF share of the output layer when both are given.
        sparse: sparse gradients for the embedding tables, so that a step touches only the batch's
            rows; pair with `lit_recs.optim.LazyAdam` (Adam for the layers, lazy Adam for the
            tables). For large user and item tables: dense Adam updates every row at every step.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        gmf_dim: int = 8,
        mlp_dims: Sequence[int] = (64, 32, 16, 8),
        dropout: float = 0.0,
        loss: Callable[[Tensor, Tensor], Tensor] = losses.bce,
        init_std: float = 0.01,
        score_chunk: int | None = None,
        pretrained_gmf: str | None = None,
        pretrained_mlp: str | None = None,
        pretrain_alpha: float = 0.5,
        sparse: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_users, num_items, **kwargs)
        if score_chunk is not None and score_chunk < 1:
            raise ValueError(f"NeuMF: score_chunk must be >= 1 (or None), got {score_chunk}")
        self.net = NeuMFNet(num_users, num_items, gmf_dim, mlp_dims, dropout, init_std, sparse)
        self.loss, self.score_chunk = loss, score_chunk
        if pretrained_gmf or pretrained_mlp:
            self.load_towers(pretrained_gmf, pretrained_mlp, pretrain_alpha)

    def compute_loss(self, batch: PairBatch) -> Tensor:
        items = torch.cat([batch.pos_items[:, None], batch.neg_items], 1)  # [B, 1 + N]
        scores = self.net(batch.users, items)  # [B, 1 + N]: one pass for positives and negatives
        return self.loss(scores[:, :1], scores[:, 1:])

    def item_scorer(self, batch: EvalBatch) -> ItemScorer:
        user = tuple(None if p is None else p[:, None] for p in self.net.user_part(batch.users))
        chunk = self.score_chunk or (CPU_CHUNK if batch.users.device.type == "cpu"
                                     else ACCELERATOR_CHUNK)
        step = max(1, chunk // max(len(batch), 1))  # items per MLP pass

        def scores(cols: slice) -> Tensor:
            first, last, _ = cols.indices(self.num_items)
            chunks = []
            for c in range(first, last, step):  # [B, <= step] each
                items = torch.arange(c, min(c + step, last), device=batch.users.device)  # [n]
                item = tuple(None if p is None else p[None] for p in self.net.item_part(items))
                chunks.append(self.net.join(user, item))  # type: ignore[arg-type]
            return torch.cat(chunks, 1) if chunks else user[0].new_zeros(len(batch), 0)
        return scores

    def score_candidates(self, batch: EvalBatch, items: Tensor) -> Tensor:
        return self.net(batch.users, items)  # [B, C]

    def load_towers(self, gmf: str | None, mlp: str | None, alpha: float) -> None:
        """Copy the towers of trained GMF / MLP checkpoints; h = [alpha h_G; (1 - alpha) h_M].

        The paths come from the user (`--model.init_args.pretrained_gmf`): read weights-only, so
        that a crafted file cannot run code (CheckpointError names a file that is no checkpoint).
        """
        states = {name: checkpoint_weights(path)
                  for name, path in (("gmf", gmf), ("mlp", mlp)) if path}
        own = self.state_dict()
        prefixes = {"gmf": ("net.gmf_",), "mlp": ("net.mlp_", "net.mlp.", "net.first_")}
        for name, state in states.items():
            tower = {k: v for k, v in state.items() if k.startswith(prefixes[name])}
            missing = [k for k in tower if k not in own or own[k].shape != tower[k].shape]
            if missing or not tower:
                raise ValueError(f"pretrained_{name}: {gmf if name == 'gmf' else mlp} does not "
                                 f"match this model's {name.upper()} tower ({missing or 'empty'})")
            own.update(tower)
        g = max(self.net.gmf_dim, 0)
        if "gmf" in states:
            share = alpha if "mlp" in states else 1.0
            own["net.out.weight"][:, :g] = share * states["gmf"]["net.out.weight"]
        if "mlp" in states:
            share = 1 - alpha if "gmf" in states else 1.0
            own["net.out.weight"][:, g:] = share * states["mlp"]["net.out.weight"]
        biases = [s["net.out.bias"] for s in states.values()]
        own["net.out.bias"] = sum(biases) / len(biases)
        self.load_state_dict(own)

