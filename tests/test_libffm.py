"""The libffm reader on a fixture file and on malformed lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lit_recs.data.libffm import read_libffm

FIXTURE = Path(__file__).parent / "fixtures" / "tiny.libffm"


def test_reads_padded_field_rows() -> None:
    rows = read_libffm(FIXTURE)
    assert len(rows) == 3 and rows.num_features == 10 and rows.num_fields == 3
    np.testing.assert_array_equal(rows.labels, [1, 0, 1])
    np.testing.assert_array_equal(rows.index, [[0, 3, 7, 0], [1, 4, 0, 0], [2, 5, 8, 9]])
    np.testing.assert_array_equal(rows.field, [[0, 1, 2, 0], [0, 1, 0, 0], [0, 1, 2, 2]])
    np.testing.assert_allclose(rows.value, [[1, 1, 0.5, 0], [1, 1, 0, 0], [1, 1, 1, 0.25]])


@pytest.mark.parametrize(("line", "message"), [
    ("1 0:3\n", "line 2: feature '0:3' is not field:index:value"),
    ("yes 0:1:1\n", "line 2: label 'yes' is not a number"),
    ("1 a:1:1\n", "line 2: feature 'a:1:1': field and index must be"),
    ("1 0:1:x\n", "line 2: feature '0:1:x'"),
])
def test_malformed_lines_name_the_file_line_and_token(tmp_path: Path, line: str,
                                                      message: str) -> None:
    path = tmp_path / "bad.libffm"
    path.write_text("0 0:1:1\n" + line)
    with pytest.raises(ValueError, match=message) as err:
        read_libffm(path)
    assert str(path) in str(err.value)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.libffm"
    path.write_text("\n")
    with pytest.raises(ValueError, match="no examples"):
        read_libffm(path)
