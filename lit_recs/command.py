"""The `lit-recs` command's entry point: the process settings that must precede `import torch`.

OpenMP's idle worker threads spin by default (libgomp). When another job shares the cores, the
spinning threads of torch's pool take turns with it and a step can take twice as long (quickstart
MF, 10 epochs on 2 cores beside one busy process: 23.8 s with 2 threads, 13.6 s with 1); sleeping
threads (OMP_WAIT_POLICY=PASSIVE) cost that collapse nothing (13.8 s) and about 10% on idle cores
(12.9 s against 11.7 s): `experiments/benchmarks/threads.py`. The command sets PASSIVE unless
the environment sets a policy; `OMP_WAIT_POLICY=ACTIVE lit-recs ...` on a dedicated machine.

`lit-recs sweep <sweep file> ...` runs a W&B sweep file's trials (lit_recs/sweep.py), each a
`lit-recs fit` subprocess; every other subcommand is the LightningCLI's (lit_recs/cli.py).
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch loads libgomp
    if sys.argv[1:2] == ["sweep"]:
        from lit_recs.sweep import main as run_sweep

        run_sweep(sys.argv[2:])
        return
    from lit_recs.cli import main as run_command

    run_command()
