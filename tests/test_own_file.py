"""Your own file, one option (issue 18): `dataset: <path>` in the command and in YAML for CSV, TSV,
parquet, gzip'd text and `user item` sequence files, the flat column options, the id rules and the
data summary (console and results.json).

ML-100K's u.data written as CSV, TSV, parquet and gzip'd CSV must give exactly the built-in
`ml-100k` loader's metrics through the installed `lit-recs` command (4 commands, two at a time, ~7 s
of CPU each, mostly imports); so must its `user item` lines sorted by time, and a short MF run from
the CSV file (these in this process: the path is parsed as for the CSV).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from commands import lit_recs

from lit_recs.cli import RUN_DIR_ENV, RecCLI
from lit_recs.cli import run as main
from lit_recs.data.datamodules import RecDataModule
from lit_recs.data.datasets import SequenceFile, Tabular, resolve
from lit_recs.data.datasets.movielens import MovieLens

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
POPULARITY = ["--config", str(CONF / "base.yaml"), "--model", str(CONF / "model" / "popularity.yaml")]
LOO = CONF / "data" / "ml-100k-loo.yaml"
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
# MF, one short epoch: the training batches, their negatives and the initialisation must match too
SHORT_MF = ["--config", str(CONF / "base.yaml"), "--data", str(LOO),
            "--model", str(CONF / "model" / "mf.yaml"), "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "3", *QUIET]


# ------------------------------------------------------------------ ML-100K in every format
def u_data(root: Path) -> pl.DataFrame:
    """u.data in file order (which breaks the time ties of leave-one-out)."""
    return pl.read_csv(root / "ml-100k" / "u.data", separator="\t", has_header=False,
                       new_columns=["user_id", "item_id", "rating", "timestamp"])


def data_config(path: Path, dataset: Path, **options: str) -> str:
    """conf/data/ml-100k-loo.yaml with `dataset: <path>` (the plain YAML form) and options."""
    config = yaml.safe_load(LOO.read_text())
    config["init_args"].update(dataset=str(dataset), **options)
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory, ml100k_root: Path) -> dict[str, dict]:
    """name -> {results: results.json[, args, stderr: of the command]} of ML-100K in each format;
    `builtin`: the built-in loader's run."""
    tmp = tmp_path_factory.mktemp("own_file")
    df = u_data(ml100k_root)
    df.write_csv(tmp / "ml.csv")
    df.write_csv(tmp / "ml.tsv", separator="\t")
    df.write_parquet(tmp / "ml.parquet")
    renamed = df.rename({"user_id": "uid", "item_id": "iid", "rating": "stars", "timestamp": "ts"})
    with gzip.open(tmp / "ml.csv.gz", "wb") as f:
        renamed.write_csv(f)
    # sequences: each user's lines in time order (ties in file order, as the built-in loo sorts)
    seq = df.with_row_index("line").sort(["user_id", "timestamp", "line"])
    (tmp / "ml.txt").write_text("".join(f"{u} {i}\n" for u, i in seq.select("user_id", "item_id")
                                        .iter_rows()))
    runs = {
        "csv": ["--data", str(LOO), "--data.init_args.dataset", str(tmp / "ml.csv")],
        "tsv (YAML)": ["--data", data_config(tmp / "tsv.yaml", tmp / "ml.tsv")],
        "parquet": ["--data", str(LOO), "--data.init_args.dataset", str(tmp / "ml.parquet")],
        "csv.gz (YAML, renamed columns)": ["--data", data_config(
            tmp / "gz.yaml", tmp / "ml.csv.gz", user_col="uid", item_col="iid", rating_col="stars",
            time_col="ts")],
    }
    commands = {name: ["fit", *POPULARITY, *args, *QUIET] for name, args in runs.items()}

    def run(name: str) -> dict:
        folder = tmp / f"run-{list(commands).index(name)}"
        proc = lit_recs(*commands[name], "--trainer.default_root_dir", str(folder), timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return {"args": commands[name], "results": json.loads((folder / "results.json")
                                                               .read_text()), "stderr": proc.stderr}

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, name) for name in commands}
        out = {}
        in_process = {  # the reference, and the trained model (its exactness needs no command)
            "builtin": ["fit", *POPULARITY, "--data", str(LOO), *QUIET],
            "builtin, short MF": ["fit", *SHORT_MF],
            "csv, short MF": ["fit", *SHORT_MF, "--data.init_args.dataset", str(tmp / "ml.csv")],
            "txt (sequences)": ["fit", *POPULARITY, "--data", str(LOO), "--data.init_args.dataset",
                                str(tmp / "ml.txt"), *QUIET],
        }
        for name, args in in_process.items():
            folder = tmp / f"in-process-{list(in_process).index(name)}"
            main([*args, "--trainer.default_root_dir", str(folder)])
            out[name] = {"results": json.loads((folder / "results.json").read_text())}
        os.environ.pop(RUN_DIR_ENV, None)  # set by the in-process runs for their processes
        out.update({name: future.result() for name, future in futures.items()})
    return out


TABLES = ["csv", "tsv (YAML)", "parquet", "csv.gz (YAML, renamed columns)"]


@pytest.mark.parametrize("name", [*TABLES, "txt (sequences)"])
def test_ml100k_as_a_file_gives_exactly_the_builtin_metrics_through_the_command(
        formats: dict[str, dict], name: str) -> None:
    builtin, run = formats["builtin"]["results"], formats[name]["results"]
    assert run["metrics"]["test/ndcg@10"] > 0
    assert run["metrics"] == builtin["metrics"]  # every val/* and test/* metric, to the bit
    mine, ref = run["data_summary"], builtin["data_summary"]
    if name in TABLES:  # the very same log: raw ids, indices, ratings, timestamps, file order
        assert mine["log_fingerprint"] == ref["log_fingerprint"]
        assert run["warnings"] == [w.replace("ml-100k", "ml") for w in builtin["warnings"]]
    else:  # no ratings or timestamps: time is line order, as the run says
        assert any("no timestamps, so time is file order" in w for w in run["warnings"])
    for key in ("interactions", "users", "items", "density", "user_length", "split", "removed"):
        assert mine[key] == ref[key], key
    assert mine["dataset"] == "ml"
    if name in TABLES:  # the console states what the data became, once, at fit start
        stderr = formats[name]["stderr"]
        assert stderr.count("data ml: loaded 100,000 interactions, 943 users, 1,682 items") == 1
        assert "events per user: min 20, q10 23, q25 33, median 65" in stderr


def test_the_path_stays_a_path_in_the_saved_config(formats: dict[str, dict]) -> None:
    """The config parser once replaced the path by the file's contents (`unknown dataset
    'user_id,item_id,...`); the run's config keeps the path and the flat options."""
    saved = formats["csv.gz (YAML, renamed columns)"]["results"]["config"]["data"]["init_args"]
    assert saved["dataset"].endswith("ml.csv.gz")
    assert (saved["user_col"], saved["item_col"], saved["rating_col"], saved["time_col"]) == \
        ("uid", "iid", "stars", "ts")
    assert formats["csv"]["results"]["config"]["data"]["init_args"]["dataset"].endswith("ml.csv")


def test_a_short_trained_model_gives_the_builtin_metrics_too(formats: dict[str, dict]) -> None:
    mine, ref = formats["csv, short MF"]["results"], formats["builtin, short MF"]["results"]
    assert mine["global_steps"] == ref["global_steps"] == 3
    assert mine["metrics"] == ref["metrics"]


# ------------------------------------------------------------------ the config forms
def cli(*args: str) -> RecCLI:
    """The command's parser and instantiation, without running (the data loads for the links)."""
    return RecCLI(args=[*args, *QUIET, "--model", str(CONF / "model" / "popularity.yaml")], run=False)


@pytest.fixture()
def tiny_csv(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    path.write_text("who,what,when\n" + "".join(f"{u},{i},{10 * k}\n" for k, (u, i) in enumerate(
        [(1, 5), (1, 6), (1, 7), (2, 5), (2, 7), (2, 8), (3, 6), (3, 8), (3, 5)])))
    return path


def test_class_path_datasources_still_work_beside_plain_paths(tiny_csv: Path,
                                                              tmp_path: Path) -> None:
    spec = {"class_path": "lit_recs.data.datasets.Tabular",
            "init_args": {"path": str(tiny_csv), "user_col": "who", "item_col": "what",
                          "timestamp_col": "when"}}
    config = tmp_path / "data.yaml"
    config.write_text(yaml.safe_dump({"class_path": "lit_recs.data.datamodules.RecDataModule",
                                      "init_args": {"dataset": spec, "sampled_negatives": 0}}))
    for args in (["--data", str(config)],
                 ["--data", "lit_recs.data.datamodules.RecDataModule",
                  "--data.init_args.sampled_negatives", "0",
                  "--data.init_args.dataset", json.dumps(spec)]):
        source = cli(*args).datamodule.source
        assert isinstance(source, Tabular) and source.timestamp_col == "when", args
    # the plain path with flat options, on the command line
    dm = cli("--data", "lit_recs.data.datamodules.RecDataModule",
             "--data.init_args.sampled_negatives", "0", "--data.init_args.dataset", str(tiny_csv),
             "--data.init_args.user_col", "who", "--data.init_args.item_col", "what",
             "--data.init_args.time_col", "when").datamodule
    assert isinstance(dm.source, Tabular) and dm.num_users == 3 and dm.num_items == 4
    assert list(dm.data.timestamps) == [10 * k for k in range(9)]


def test_a_run_with_a_class_path_datasource_is_tested_again_from_its_saved_config(
        tmp_path: Path) -> None:
    """The saved config.yaml keeps a `class_path` DataSource as a mapping (it was once written as
    the repr of a Namespace, and `lit-recs test --config <run>/config.yaml` died on `unknown
    dataset "Namespace(...)"`)."""
    spec = {"class_path": "lit_recs.data.datasets.Synthetic",
            "init_args": {"num_users": 120, "num_items": 200, "interactions_per_user": 8}}
    config = tmp_path / "data.yaml"
    config.write_text(yaml.safe_dump({"class_path": "lit_recs.data.datamodules"
                                                    ".NegativeSamplingDataModule",
                                      "init_args": {"dataset": spec, "split": "loo",
                                                    "sampled_negatives": 20}}))
    fit = lit_recs("fit", *POPULARITY, "--data", str(config), *QUIET,
                   "--trainer.default_root_dir", str(tmp_path / "fit"), timeout=300)
    assert fit.returncode == 0, fit.stderr[-3000:]
    saved = yaml.safe_load((tmp_path / "fit" / "config.yaml").read_text())
    assert saved["data"]["init_args"]["dataset"]["class_path"] == spec["class_path"]
    assert saved["data"]["init_args"]["dataset"]["init_args"]["num_items"] == 200
    again = lit_recs("test", "--config", str(tmp_path / "fit" / "config.yaml"), "--ckpt_path",
                     str(tmp_path / "fit" / "checkpoints" / "last.ckpt"),
                     "--trainer.default_root_dir", str(tmp_path / "test"), timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    fitted = json.loads((tmp_path / "fit" / "results.json").read_text())
    # the command sleeps idle OpenMP threads unless told otherwise (lit_recs.command)
    assert fitted["threads"] == {"torch": 1, "OMP_WAIT_POLICY": "PASSIVE"}  # OMP_NUM_THREADS=1
    first = fitted["metrics"]
    second = json.loads((tmp_path / "test" / "results.json").read_text())["metrics"]
    tests = {k: v for k, v in first.items() if k.startswith("test/")}
    assert tests and tests == {k: second[k] for k in tests}


def test_a_files_contents_in_place_of_its_path_is_named_as_such() -> None:
    with pytest.raises(ValueError, match="dataset is the contents of a file .*'user_id,item_id'"):
        resolve("user_id,item_id\n1,2\n")


def test_file_options_describe_a_file_and_are_never_ignored(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"user_col='uid' describe a file .* built-in 'ml-100k'"):
        resolve("ml-100k", user_col="uid")
    with pytest.raises(ValueError, match=r"text_ids=True describe a file .* DataSource"):
        resolve(MovieLens("ml-100k"), text_ids=True)
    with pytest.raises(ValueError, match=r"sequence file .* no named columns for time_col='t'"):
        resolve(tmp_path / "s.txt", time_col="t")
    with pytest.raises(ValueError, match=r"unknown dataset .*log\.dat.*file_format: table or "
                                         r"sequence"):
        resolve(str(tmp_path / "log.dat"))
    assert isinstance(resolve(tmp_path / "log.dat", file_format="sequence"), SequenceFile)
    assert isinstance(resolve(str(tmp_path / "log.dat"), file_format="table"), Tabular)
    assert isinstance(resolve(str(tmp_path / "s.txt.gz")), SequenceFile)
    gz = resolve(str(tmp_path / "log.tsv.gz"))
    assert isinstance(gz, Tabular) and gz.name == "log" and gz.suffix == ".tsv"


# ------------------------------------------------------------------ the sequence format
def test_sequence_lines_blanks_tabs_crlf_gzip_and_line_order(tmp_path: Path) -> None:
    text = "u1 10\r\nu2\t11\n\n   \nu1   12  \nu2 10\nu1 11\n"
    path = tmp_path / "s.txt.gz"
    path.write_bytes(gzip.compress(text.encode()))
    inter = SequenceFile(str(path)).load()
    assert inter.name == "s" and inter.timestamps is None and inter.ratings is None
    assert list(inter.user_ids) == ["u1", "u2"] and list(inter.item_ids) == [10, 11, 12]
    indptr, items = inter.sequences()
    assert [list(inter.item_ids[items[indptr[u]:indptr[u + 1]]]) for u in range(2)] == \
        [[10, 12, 11], [11, 10]]  # each user's items in line order


@pytest.mark.parametrize(("text", "match"), [
    ("1 2\n1 2 3\n", r"line 2: expected 2 fields \(user item\) .* found 3: '1 2 3'"),
    ("1 2\n\n7\n", r"line 3: expected 2 fields .* found 1: '7'"),
    ("1 2\n2 3\n3 x\n4 5\n", r"column 'item' mixes numbers and text .*first id that is not a "
                             r"number at line 3: 'x'"),
    ("", r"no `user item` lines"),
])
def test_sequence_file_errors_name_the_line(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        SequenceFile(str(path)).load()


# ------------------------------------------------------------------ id rules
def load_csv(tmp_path: Path, items: list[str], **options: object):
    path = tmp_path / "ids.csv"
    path.write_text("user_id,item_id\n" + "".join(f"{k % 2},{i}\n" for k, i in enumerate(items)))
    return Tabular(str(path), **options).load()


def test_integer_looking_ids_are_integers(tmp_path: Path) -> None:
    inter = load_csv(tmp_path, ["1.0", "2", " 3", "1", "+2", "4.", "5e0"])
    assert inter.item_ids.dtype == np.int64 and list(inter.item_ids) == [1, 2, 3, 4, 5]
    assert list(inter.items) == [0, 1, 2, 0, 1, 3, 4]  # 1.0 is 1, +2 is 2
    # parquet floats too
    pl.DataFrame({"user_id": [1, 2], "item_id": [7.0, 8.0]}).write_parquet(tmp_path / "f.parquet")
    assert list(Tabular(str(tmp_path / "f.parquet")).load().item_ids) == [7, 8]


def test_zero_padded_codes_and_words_stay_text(tmp_path: Path) -> None:
    assert list(load_csv(tmp_path, ["007", "7", "08"]).item_ids) == ["007", "08", "7"]
    assert list(load_csv(tmp_path, ["a b", "c"]).item_ids) == ["a b", "c"]


@pytest.mark.parametrize(("items", "match"), [
    (["1", "2", "N/A", "3"], r"column 'item_id' mixes numbers and text \(3 of its 4 ids are "
                             r"numbers\); first id that is not a number at row 2 \(0-based, "
                             r"header excluded\): 'N/A'.*text_ids: true"),
    (["B0001", "B0002", "123", "B0003"], r"first number at row 2 .*'123'"),
    (["1", "2.5"], r"ids that are not whole numbers; first at row 1 .*'2.5'"),
    (["1", "99999999999999999999"], r"ids beyond int64; first at row 1"),
])
def test_a_column_that_mixes_numbers_and_text_is_an_error(tmp_path: Path, items: list[str],
                                                          match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_csv(tmp_path, items)


def test_text_ids_reads_every_id_verbatim(tmp_path: Path) -> None:
    inter = load_csv(tmp_path, ["B0001", "0345391802", "1.0", "1"], text_ids=True)
    assert list(inter.item_ids) == ["0345391802", "1", "1.0", "B0001"]


# ------------------------------------------------------------------ the data summary
def test_summary_states_what_each_step_removed_and_the_split(caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    dm = RecDataModule("ml-100k", rating_threshold=4, min_user_interactions=20,
                       min_item_interactions=10, split="temporal", sampled_negatives=0)
    with caplog.at_level(logging.INFO, logger="lit_recs.data.datamodules"):
        dm.setup("fit")
    summary = dm.data_summary
    assert summary["loaded"] == {"interactions": 100_000, "users": 943, "items": 1682}
    assert [(r["step"], r["interactions"], r["users"], r["items"]) for r in summary["removed"]] \
        == [("rating_threshold", 44_625, 1, 235), ("dedup", 0, 0, 0), ("k_core", 5_706, 259, 641)]
    assert summary["removed"][0]["rule"] == "keep ratings >= 4"
    after = 100_000 - 44_625 - 5_706
    assert summary["interactions"] == after == len(dm.data)
    assert summary["users"] == dm.num_users and summary["items"] == dm.num_items
    assert summary["user_length"]["min"] >= 20
    split = summary["split"]
    assert sum(split[p]["interactions"] for p in ("train", "val", "test")) == after
    counts = dm.data.user_counts()
    for part, inter in (("val", dm.splits.val), ("test", dm.splits.test)):
        has = inter.user_counts() > 0
        assert split[part]["users"] == has.sum()
        assert split[part]["users_without"] == (~has & (counts > 0)).sum() > 0
        assert "of the log in time" in split[part]["why"]
        assert split[part]["cold_users"] == (has & (dm.splits.train.user_counts() == 0)).sum()
    assert caplog.text.count("k_core (users with >= 20 and items with >= 10") == 1


def test_summary_of_the_sequence_config(tmp_path: Path) -> None:
    """conf/data/sequence-file.yaml's sample: users too short for leave-one-out are counted."""
    data = yaml.safe_load((CONF / "data" / "sequence-file.yaml").read_text())["init_args"]
    dm = RecDataModule(str(REPO / data["dataset"]), split="loo", sampled_negatives=0)
    dm.setup("fit")
    split = dm.data_summary["split"]
    assert (split["test"]["users_without"], split["val"]["users_without"]) == (1, 2)
    assert split["test"]["why"].startswith("fewer than 2 events")
    assert split["val"]["why"].startswith("fewer than 3 events")
    assert dm.data_summary["user_length"]["min"] == 1
