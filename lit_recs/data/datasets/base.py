"""`DataSource`: anything that loads an `Interactions` log. Strings name the built-in ones."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from lit_recs.data.interactions import Interactions


class DataSource(ABC):
    """Loads a raw interaction log (before thresholds, filtering and splitting)."""

    name: str = "data"

    def prepare(self) -> object:
        """Fetch what `load` needs (downloads); called once, on one process. Default: nothing."""
        return None

    @abstractmethod
    def load(self) -> Interactions:
        """Read (and if needed download) the data; raw ids indexed contiguously."""


MOVIELENS = ("ml-100k", "ml-1m", "ml-20m")
TABULAR_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def resolve(dataset: str | DataSource, data_dir: str | None = None) -> DataSource:
    """`ml-100k` / `ml-1m` / `ml-20m`, `synthetic`, a .csv/.tsv/.parquet path, or a DataSource."""
    if isinstance(dataset, DataSource):
        return dataset
    if dataset in MOVIELENS:
        from lit_recs.data.datasets.movielens import MovieLens

        return MovieLens(dataset, data_dir=data_dir)
    if dataset == "synthetic":
        from lit_recs.data.datasets.synthetic import Synthetic

        return Synthetic()
    if Path(dataset).suffix.lower() in TABULAR_SUFFIXES:
        from lit_recs.data.datasets.tabular import Tabular

        return Tabular(dataset)
    raise ValueError(
        f"unknown dataset {dataset!r}: use one of {', '.join(MOVIELENS)}, 'synthetic', a path ending "
        f"in {'/'.join(TABULAR_SUFFIXES)}, or a DataSource (class_path) in the config"
    )
