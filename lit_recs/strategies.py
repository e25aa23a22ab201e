"""DDP for every model: `--trainer.strategy ddp` (and ddp_spawn, ddp_fork, ddp_notebook) names
`RecDDPStrategy` once lit_recs is imported.

torch refuses to wrap a module without trainable parameters in DistributedDataParallel, and
Lightning wraps every model it fits under DDP. Closed-form models (Popularity, EASE, ItemKNN, SLIM)
and iALS have no gradients to reduce: each process fits the same weights from the same training
split (deterministically), so they skip the wrapper; evaluation is sharded across the processes
and its metrics reduced as for any model.
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry


class RecDDPStrategy(DDPStrategy):
    """Lightning's DDPStrategy, without the DDP wrapper for a model with nothing to train."""

    def configure_ddp(self) -> None:
        assert self.model is not None
        if any(p.requires_grad for p in self.model.parameters()):
            super().configure_ddp()


for _name, _start in (("ddp", "popen"), ("ddp_spawn", "spawn"), ("ddp_fork", "fork"),
                      ("ddp_notebook", "fork")):
    StrategyRegistry.register(_name, RecDDPStrategy, override=True, start_method=_start,
                              description=f"lit_recs DDP (start_method '{_start}'): models "
                                          "without trainable parameters are not wrapped")
