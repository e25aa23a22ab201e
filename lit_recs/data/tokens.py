"""The token convention of sequence batches (Cloze / BERT4Rec, two-tower histories), in one place.

    0                padding (left of a right-aligned sequence)
    item + 1         item index `item` (0-based)
    num_items + 1    [mask], the position a model fills in

Works on numpy arrays and torch tensors alike (plain arithmetic).
"""

from __future__ import annotations

from typing import TypeVar

PAD = 0
T = TypeVar("T")


def item_tokens(items: T) -> T:
    """Item indices -> their tokens."""
    return items + 1  # type: ignore[operator,return-value]


def token_items(tokens: T) -> T:
    """Tokens -> item indices (padding and [mask] map to -1 and num_items: mask them first)."""
    return tokens - 1  # type: ignore[operator,return-value]


def mask_token(num_items: int) -> int:
    """The [mask] token of a catalogue of `num_items` items."""
    return num_items + 1


def vocabulary_size(num_items: int) -> int:
    """Distinct tokens: padding, the items, [mask]."""
    return num_items + 2
