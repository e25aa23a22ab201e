"""`DataSource`: anything that loads an `Interactions` log. Strings name the built-in ones or a file."""

from __future__ import annotations

import os
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
TABULAR_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")  # a table with named columns (Tabular)
GZIP_TEXT = (".csv", ".tsv", ".txt")  # text formats also read gzip'd: .csv.gz, .tsv.gz, .txt.gz
SEQUENCE_SUFFIXES = (".txt",)  # `user item` lines in time order (SequenceFile)
FILE_FORMATS = ("auto", "table", "sequence")
# the column options of a table file and their defaults (RecDataModule's flat options)
COLUMNS = {"user_col": "user_id", "item_col": "item_id", "rating_col": "rating",
           "time_col": "timestamp"}


def file_suffix(path: str | os.PathLike) -> str:
    """The format's suffix, lower case, past a final `.gz`: `.csv` for `log.csv` and `log.csv.gz`."""
    path = Path(path)
    if path.suffix.lower() == ".gz":
        path = path.with_suffix("")
    return path.suffix.lower()


def file_title(path: str | os.PathLike) -> str:
    """The file's name without its format suffixes: `log` for `log.csv` and `log.csv.gz`."""
    path = Path(path)
    if path.suffix.lower() == ".gz":
        path = path.with_suffix("")
    return path.stem


def _file_format(path: Path, file_format: str) -> str:
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {', '.join(FILE_FORMATS)}, got "
                         f"{file_format!r}")
    if file_format != "auto":
        return file_format
    gz = path.suffix.lower() == ".gz"
    suffix = file_suffix(path)
    if gz and suffix not in GZIP_TEXT:
        return "unknown"
    if suffix in TABULAR_SUFFIXES:
        return "table"
    return "sequence" if suffix in SEQUENCE_SUFFIXES else "unknown"


def resolve(
    dataset: str | os.PathLike | DataSource,
    data_dir: str | None = None,
    *,
    user_col: str = COLUMNS["user_col"],
    item_col: str = COLUMNS["item_col"],
    rating_col: str | None = COLUMNS["rating_col"],
    time_col: str | None = COLUMNS["time_col"],
    file_format: str = "auto",
    text_ids: bool = False,
) -> DataSource:
    """The DataSource that `dataset` names.

    - `ml-100k` / `ml-1m` / `ml-20m` (MovieLens, from `data_dir`), `synthetic`;
    - a file (`file_format: auto` decides by its suffix): `.csv` / `.tsv` / `.parquet` / `.pq`
      and gzip'd `.csv.gz` / `.tsv.gz` are tables with named columns (`Tabular`: `user_col`,
      `item_col`, `rating_col`, `time_col`); `.txt` / `.txt.gz` are `user item` lines in time
      order (`SequenceFile`). `file_format: table` / `sequence` reads any other file name;
    - a DataSource (a `class_path` in the config), returned as it is.

    The column options, `file_format` and `text_ids` describe a file: given with anything else
    (or the column options with a sequence file) they are an error, never silently ignored.
    """
    options = {"user_col": user_col, "item_col": item_col, "rating_col": rating_col,
               "time_col": time_col}
    changed = [f"{k}={v!r}" for k, v in options.items() if v != COLUMNS[k]]
    file_options = changed + ([f"file_format={file_format!r}"] if file_format != "auto" else []) \
        + (["text_ids=True"] if text_ids else [])
    if isinstance(dataset, DataSource):
        if file_options:
            raise ValueError(f"{', '.join(file_options)} describe a file given as dataset, but "
                             f"dataset is a DataSource ({dataset!r}): set them in its init_args")
        return dataset
    text = os.fspath(dataset)
    if text in MOVIELENS or text == "synthetic":
        if file_options:
            raise ValueError(f"{', '.join(file_options)} describe a file given as dataset, but "
                             f"dataset is the built-in {text!r}")
        if text == "synthetic":
            from lit_recs.data.datasets.synthetic import Synthetic

            return Synthetic()
        from lit_recs.data.datasets.movielens import MovieLens

        return MovieLens(text, data_dir=data_dir)
    if "\n" in text:  # a config parser that loads an existing path's file passes its contents
        first = text.split("\n", 1)[0][:80]
        raise ValueError(
            f"dataset is the contents of a file (it starts {first!r}), not a name or a path: a "
            "config parser read the file in place of its path (jsonargparse loads a string that "
            "names a file as a sub-config wherever the type admits a class but no path: type "
            "such an option `str | Path | YourClass`)"
        )
    path = Path(text).expanduser()
    kind = _file_format(path, file_format)
    if kind == "table":
        from lit_recs.data.datasets.tabular import Tabular

        return Tabular(str(path), user_col=user_col, item_col=item_col, rating_col=rating_col,
                       timestamp_col=time_col, text_ids=text_ids)
    if kind == "sequence":
        if changed:
            raise ValueError(f"{path} is read as a sequence file (`user item` lines, no header): "
                             f"it has no named columns for {', '.join(changed)}; a table with "
                             "named columns is a .csv / .tsv / .parquet file (or file_format: "
                             "table)")
        from lit_recs.data.datasets.sequences import SequenceFile

        return SequenceFile(str(path), text_ids=text_ids)
    tables = "/".join(TABULAR_SUFFIXES)
    raise ValueError(
        f"unknown dataset {text!r}: use one of {', '.join(MOVIELENS)}, 'synthetic', a table "
        f"file ending in {tables} (gzip'd: .csv.gz/.tsv.gz), a sequence file of `user item` "
        "lines ending in .txt (or .txt.gz), file_format: table or sequence for any other file "
        "name, or a DataSource (class_path) in the config"
    )
