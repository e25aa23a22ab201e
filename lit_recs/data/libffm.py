"""Reader for the libffm text format (Criteo / Avazu-style CTR data):

    label field:index:value field:index:value ...

one example per line; `field` and `index` are non-negative integers (index is a global feature id),
`value` a float. Rows come back padded to the longest row: index [n, S], value [n, S] (0 on padding,
so a padded slot adds nothing to FM / FFM), field [n, S].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class FieldRows:
    """Field-encoded examples, padded: slot s of row r is (field[r, s], index[r, s], value[r, s])."""

    labels: np.ndarray  # [n] float32
    index: np.ndarray  # [n, S] int64
    value: np.ndarray  # [n, S] float32, 0 = padding
    field: np.ndarray  # [n, S] int64
    num_features: int
    num_fields: int

    def __len__(self) -> int:
        return len(self.labels)


def read_libffm(path: str | Path) -> FieldRows:
    """Parse a libffm file; a malformed line raises ValueError naming the file, line and token."""
    path = Path(path)
    labels: list[str] = []
    counts: list[int] = []
    tokens: list[str] = []
    line_of: list[int] = []  # file line number of each example
    with path.open() as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            labels.append(parts[0])
            counts.append(len(parts) - 1)
            tokens.extend(parts[1:])
            line_of.append(number)
    if not labels:
        raise ValueError(f"{path}: no examples")
    try:
        y = np.array(labels, dtype=np.float32)
    except ValueError:
        bad = next(i for i, lab in enumerate(labels) if not _is_float(lab))
        raise ValueError(f"{path}, line {line_of[bad]}: label {labels[bad]!r} is not a number") \
            from None
    pieces = [t.split(":") for t in tokens]
    sizes = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    starts = np.concatenate([[0], np.cumsum(counts)])  # token offsets of each example
    if (sizes != 3).any():
        k = int(np.flatnonzero(sizes != 3)[0])
        row = int(np.searchsorted(starts, k, side="right") - 1)
        raise ValueError(f"{path}, line {line_of[row]}: feature {tokens[k]!r} is not "
                         "field:index:value")
    flat = np.array(pieces, dtype=object).reshape(-1, 3) if pieces else np.zeros((0, 3), object)
    try:
        fields = flat[:, 0].astype(np.int64)
        index = flat[:, 1].astype(np.int64)
        value = flat[:, 2].astype(np.float32)
    except ValueError:
        k = next(i for i, p in enumerate(pieces) if not (p[0].isdigit() and p[1].isdigit()
                                                         and _is_float(p[2])))
        row = int(np.searchsorted(starts, k, side="right") - 1)
        raise ValueError(f"{path}, line {line_of[row]}: feature {tokens[k]!r}: field and index "
                         "must be non-negative integers, value a number") from None
    counts_a = np.array(counts)
    width = max(1, int(counts_a.max()))
    rows = np.repeat(np.arange(len(y)), counts_a)
    cols = np.arange(len(tokens)) - np.repeat(starts[:-1], counts_a)
    out_index = np.zeros((len(y), width), np.int64)
    out_value = np.zeros((len(y), width), np.float32)
    out_field = np.zeros((len(y), width), np.int64)
    out_index[rows, cols], out_value[rows, cols], out_field[rows, cols] = index, value, fields
    return FieldRows(y, out_index, out_value, out_field,
                     num_features=int(index.max(initial=-1)) + 1,
                     num_fields=int(fields.max(initial=-1)) + 1)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
