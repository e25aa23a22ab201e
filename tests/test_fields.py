"""Field encoding: slots of users / items / context against per-row brute force."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from lit_recs.data.fields import encode_fields
from lit_recs.data.interactions import Interactions


def toy() -> Interactions:
    """4 users, 3 items with side features; timestamps 1970-01-05 (Monday) 10:xx and later."""
    users = pl.DataFrame({"uid": [10, 11, 12, 13], "gender": ["F", "M", None, "M"],
                          "age": [20, 40, 30, None]})
    items = pl.DataFrame({"iid": [7, 8, 9], "genres": [["a", "b"], [], ["c", "a", "b"]],
                          "year": [1990, 2000, 1995]})
    ts = np.array([4 * 86400 + 10 * 3600, 5 * 86400 + 23 * 3600 + 59, 0, 9 * 86400, 6 * 86400])
    return Interactions.from_raw(np.array([10, 11, 12, 13, 10]), np.array([7, 8, 9, 7, 9]),
                                 np.array([5, 3, 4, 1, 2], np.float32), ts, users, items,
                                 user_key="uid", item_key="iid", name="toy")


def slot_set(slots, row: int) -> set[tuple[int, int, float]]:
    """{(field, feature id, value)} of the non-padding slots of one row."""
    keep = slots.value[row] != 0
    return set(zip(slots.field[row][keep].tolist(), slots.index[row][keep].tolist(),
                   [round(float(v), 5) for v in slots.value[row][keep]]))


def test_every_kind_of_field_encodes_as_the_brute_force() -> None:
    data = toy()
    t = encode_fields(data, categorical=["user_id", "gender", "item_id"], multi_hot=["genres"],
                      numeric=["age", "year", "item_count"], context=["hour", "weekday"],
                      counts_from=data.select(np.array([0, 1, 2])))
    names = [f.name for f in t.fields]
    assert names == ["user_id", "gender", "age", "item_id", "genres", "year", "item_count", "hour",
                     "weekday"]  # user fields, item fields, context; config order within a side
    f = {x.name: x for x in t.fields}
    assert [x.offset for x in t.fields] == list(np.cumsum([0] + [x.size for x in t.fields])[:-1])
    assert t.num_features == sum(x.size for x in t.fields) and t.num_fields == 9
    assert f["gender"].vocabulary == ("<null>", "F", "M")
    assert f["genres"].vocabulary == ("a", "b", "c")
    assert f["user_id"].vocabulary == ("10", "11", "12", "13")
    for u, (gender, age) in enumerate([("F", 0.0), ("M", 1.0), ("<null>", 0.5), ("M", None)]):
        want = {(0, u, 1.0), (1, f["gender"].offset + f["gender"].vocabulary.index(gender), 1.0)}
        if age:  # min-max scaled; 0 (the minimum) and null add nothing
            want.add((2, f["age"].offset, age))
        assert slot_set(t.user, u) == want
    counts = np.log1p([1, 1, 1])  # items 7, 8, 9 each once in the first three rows
    genre_sets = [["a", "b"], [], ["c", "a", "b"]]
    for i, (genres, year) in enumerate(zip(genre_sets, [0.0, 1.0, 0.5])):
        want = {(3, f["item_id"].offset + i, 1.0)}
        want |= {(4, f["genres"].offset + "abc".index(g), round(1 / len(genres), 5))
                 for g in genres}
        if year:
            want.add((5, f["year"].offset, year))
        want.add((6, f["item_count"].offset, 1.0 if counts[i] else 0.0))
        assert slot_set(t.item, i) == want
    rows = t.rows(data.users, data.items, data.timestamps)
    assert rows.index.shape[1] == t.user.index.shape[1] + t.item.index.shape[1] + 2
    hours, days = [10, 23, 0, 0, 0], [0, 1, 3, 5, 2]  # Monday = 0
    for r in range(len(data)):
        want = slot_set(t.user, data.users[r]) | slot_set(t.item, data.items[r])
        want |= {(7, f["hour"].offset + hours[r], 1.0), (8, f["weekday"].offset + days[r], 1.0)}
        assert slot_set(rows, r) == want


def test_multi_hot_weight_one_and_padding() -> None:
    t = encode_fields(toy(), categorical=["item_id"], multi_hot=["genres"], multi_hot_weight="one")
    assert t.item.index.shape == (3, 4)  # item id + up to 3 genres
    assert t.item.value.tolist()[1] == [1.0, 0.0, 0.0, 0.0]  # no genre: padding only
    assert sorted(t.item.value[2].tolist()) == [1.0, 1.0, 1.0, 1.0]
    assert t.user.index.shape == (4, 0)  # no user field


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"categorical": ["zip"]}, "field column 'zip' is in neither"),
    ({"categorical": ["genres"]}, "holds lists: list it under multi_hot"),
    ({"categorical": [], "multi_hot": ["gender"]}, "must be a list column"),
    ({"categorical": [], "numeric": ["gender"]}, "non-numeric"),
    ({"categorical": ["user_id"], "context": ["month"]}, "context field 'month' is unknown"),
    ({"categorical": ["user_id", "user_id"]}, "listed twice"),
    ({"categorical": []}, "no fields"),
    ({"categorical": ["user_id"], "multi_hot_weight": "sum"}, "multi_hot_weight"),
])
def test_bad_field_configuration_names_the_column(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        encode_fields(toy(), **kwargs)


def test_context_needs_timestamps() -> None:
    data = Interactions.from_raw(np.array([1, 2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="needs timestamps"):
        encode_fields(data, categorical=["user_id"], context=["hour"])
