"""`SequenceFile`: the plain sequence format of the sequential-recommendation literature.

One `user item` pair per line, separated by blanks or tabs, no header; each user's lines in time
order (SASRec's and BERT4Rec's `data/*.txt`, and the files their many follow-ups ship). A user's
lines need not be contiguous: time is the order of the user's lines in the file. There are no
timestamps and no ratings, so leave-one-out holds out each user's last line (the split says so in
the run's warnings) and `split: temporal` is refused.

Every line must hold exactly two fields; lines that are empty or blank are skipped. A line that
does not fit is an error naming the file, the line (1-based) and its text. Ids follow
`lit_recs.data.datasets.ids` (numbers -> integer ids, `1.0` is 1; zero-padded codes and words ->
text ids; a column that mixes numbers and text is an error naming its first odd line). A `.gz`
file is gunzipped first.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import polars as pl

from lit_recs.data.datasets.base import DataSource, file_title
from lit_recs.data.datasets.ids import index_ids
from lit_recs.data.interactions import Interactions

log = logging.getLogger(__name__)

PAIR = r"^[ \t]*([^ \t]+)[ \t]+([^ \t]+)[ \t]*$"  # `user item`, blanks or tabs between and around


class SequenceFile(DataSource):
    """Each user's items in time order, one `user item` line per event.

    Args:
        path: the file (gzip'd when it ends in ``.gz``).
        name: dataset name (default: the file name without its suffixes).
        text_ids: read every id as text, verbatim (codes that may look like numbers).
    """

    def __init__(self, path: str, name: str | None = None, text_ids: bool = False) -> None:
        self.path = Path(path)
        self.name = name if name is not None else file_title(self.path)
        self.text_ids = text_ids

    def __repr__(self) -> str:
        return f"SequenceFile({str(self.path)!r}{', text_ids=True' if self.text_ids else ''})"

    def _text(self) -> str:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.name}: file not found: {self.path}")
        if not self.path.is_file():
            raise ValueError(f"{self.name}: not a file: {self.path}")
        data = self.path.read_bytes()
        if self.path.suffix.lower() == ".gz":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as err:
                raise ValueError(f"{self.path}: cannot read as gzip: {err}") from err
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[: err.start].count(b"\n") + 1
            raise ValueError(f"{self.path}, line {line}: not UTF-8 text ({err.reason} at byte "
                             f"{err.start})") from err

    def load(self) -> Interactions:
        lines = pl.Series("line", [self._text()]).str.split("\n").explode()
        lines = lines.str.strip_suffix("\r")
        frame = pl.DataFrame({"line": lines}).with_row_index("lineno", offset=1)
        frame = frame.filter(pl.col("line").str.strip_chars(" \t").str.len_bytes() > 0)
        if frame.height == 0:
            raise ValueError(f"{self.path}: no `user item` lines")
        pairs = frame.with_columns(pl.col("line").str.extract_groups(PAIR).alias("pair")).unnest(
            "pair")
        user_col, item_col = pairs.columns[-2:]
        bad = pairs[user_col].is_null()
        if bool(bad.any()):
            row = int(bad.arg_true()[0])
            text = pairs["line"][row]
            fields = len(text.split())
            raise ValueError(
                f"{self.path}, line {pairs['lineno'][row]}: expected 2 fields (user item) separated "
                f"by blanks or tabs, found {fields}: {text[:200]!r}"
            )
        lineno = pairs["lineno"].to_numpy()

        def locate(row: int) -> str:
            return f"line {lineno[row]}"

        where = str(self.path)
        users, user_ids = index_ids(pairs[user_col].rename("user"), "user", where, locate,
                                    text_ids=self.text_ids)
        items, item_ids = index_ids(pairs[item_col].rename("item"), "item", where, locate,
                                    text_ids=self.text_ids)
        inter = Interactions(
            users=users,
            items=items,
            num_users=len(user_ids),
            num_items=len(item_ids),
            user_ids=user_ids,
            item_ids=item_ids,
            name=self.name,
        )
        log.info("%s (from %s, `user item` lines in time order)", inter.summary(), self.path)
        return inter

