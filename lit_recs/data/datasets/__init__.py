"""Data sources: MovieLens (100K/1M/20M), any CSV/TSV/parquet table, `user item` sequence files,
synthetic planted structure."""

from lit_recs.data.datasets.base import DataSource, resolve
from lit_recs.data.datasets.movielens import MovieLens
from lit_recs.data.datasets.sequences import SequenceFile
from lit_recs.data.datasets.synthetic import Synthetic
from lit_recs.data.datasets.tabular import Tabular

__all__ = ["DataSource", "MovieLens", "SequenceFile", "Synthetic", "Tabular", "resolve"]
