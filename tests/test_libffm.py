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


def write_planted(path: Path, rows: int, seed: int) -> None:
    """libffm rows of 3 fields (10 features each) whose label follows a planted pair effect."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.integers(0, 10, (3, rows))
    p = 1 / (1 + np.exp(-(2.0 * ((a % 2) == (b % 2)) - 1.0 + 0.3 * (c < 5))))
    y = (rng.random(rows) < p).astype(int)
    path.write_text("".join(f"{y[r]} 0:{a[r]}:1 1:{10 + b[r]}:1 2:{20 + c[r]}:1\n"
                            for r in range(rows)))


@pytest.mark.parametrize("model", ["fm", "ffm"])
def test_cli_fits_a_model_on_libffm_files(model: str, tmp_path: Path) -> None:
    from lit_recs.cli import main

    for part, (rows, seed) in {"train": (4000, 0), "val": (1000, 1), "test": (1000, 2)}.items():
        write_planted(tmp_path / f"{part}.ffm", rows, seed)
    repo = Path(__file__).resolve().parents[1]
    main(["fit", "--config", str(repo / "conf/base.yaml"), "--config",
          str(repo / "conf/trainer/ctr.yaml"), "--model", str(repo / f"conf/model/{model}.yaml"),
          "--data.class_path", "lit_recs.data.feature_rows.LibFFMDataModule",
          "--data.init_args.train", str(tmp_path / "train.ffm"),
          "--data.init_args.val", str(tmp_path / "val.ffm"),
          "--data.init_args.test", str(tmp_path / "test.ffm"),
          "--data.init_args.batch_size", "256", "--trainer.max_epochs", "8",
          "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
          "--trainer.default_root_dir", str(tmp_path / "run")])
    import json

    metrics = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]
    assert metrics["test/auc"] > 0.68  # the planted pair effect is learned (chance: 0.5)


def test_libffm_labels_must_be_binary(tmp_path: Path) -> None:
    from lit_recs.data.feature_rows import LibFFMDataModule

    (tmp_path / "bad.ffm").write_text("1 0:1:1\n3 0:2:1\n")
    dm = LibFFMDataModule(str(FIXTURE), str(tmp_path / "bad.ffm"))
    with pytest.raises(ValueError, match=r"bad.ffm: CTR labels must be 0 or 1, found 3"):
        dm.num_features  # noqa: B018  (reading the files raises)
