"""MovieLens loader: fixture folders in the GroupLens formats, the real ML-100K, download paths."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lit_recs.data.datasets import download, movielens_files
from lit_recs.data.datasets import movielens as ml
from lit_recs.data.datasets.delimited import Col, read_table
from lit_recs.data.datasets.movielens import ChecksumError, DownloadError, MovieLens

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ENV_DATA = os.environ.get(ml.ENV_VAR)  # read before the autouse fixture below clears it


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the real user cache / data dir from the tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv(ml.ENV_VAR, raising=False)


def _no_network(*args, **kwargs):
    raise AssertionError("the test tried to download")


def _ml100k_root() -> Path:
    """LIT_RECS_DATA as CI sets it (relative: to cwd, then repo root), else ../shared/datasets."""
    candidates = [Path(ENV_DATA), REPO / ENV_DATA] if ENV_DATA else []
    candidates.append(REPO.parent / "shared" / "datasets")
    for root in candidates:
        if (root / "ml-100k" / "u.data").is_file():
            return root.resolve()
    pytest.skip(f"real ML-100K not found (set {ml.ENV_VAR}); looked in {candidates}")


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def _features(inter, kind: str, raw_id: int) -> dict:
    ids = inter.user_ids if kind == "user" else inter.item_ids
    frame = inter.user_features if kind == "user" else inter.item_features
    (idx,) = np.flatnonzero(ids == raw_id)
    return frame.row(int(idx), named=True)


def _events(inter) -> set[tuple[int, int, float, int]]:
    return {
        (int(inter.user_ids[u]), int(inter.item_ids[i]), float(r), int(t))
        for u, i, r, t in zip(
            inter.users, inter.items, inter.ratings, inter.timestamps, strict=True
        )
    }


def _copy(src: Path, root: Path, name: str) -> Path:
    dst = root / name
    shutil.copytree(src, dst)
    return dst


def _zip_of(folder: Path, top: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{top}/", "")
        for p in sorted(folder.iterdir()):
            zf.write(p, f"{top}/{p.name}")
    return buf.getvalue()


# ---------------------------------------------------------------------- arguments / location
def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="ml-100k, ml-1m, ml-20m"):
        MovieLens("ml-10m")


def test_root_resolution(tmp_path, monkeypatch):
    assert MovieLens("ml-1m").folder == tmp_path / "xdg-cache" / "lit_recs" / "ml-1m"
    monkeypatch.setenv(ml.ENV_VAR, str(tmp_path / "env"))
    assert MovieLens("ml-1m").folder == tmp_path / "env" / "ml-1m"
    assert MovieLens("ml-1m", data_dir=tmp_path / "arg").folder == tmp_path / "arg" / "ml-1m"
    assert MovieLens().name == "ml-100k"


def test_env_var_is_used_for_loading(monkeypatch):
    monkeypatch.setenv(ml.ENV_VAR, str(FIXTURES))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert len(MovieLens("ml-1m").load()) == 28


# ---------------------------------------------------------------------- ML-1M fixture
def test_ml1m_fixture(monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    before = _snapshot(FIXTURES / "ml-1m")
    inter = MovieLens("ml-1m", data_dir=FIXTURES).load()
    assert _snapshot(FIXTURES / "ml-1m") == before
    assert inter.name == "ml-1m"
    assert len(inter) == 28
    assert inter.num_users == 6
    # 12 movies in movies.dat, 3952 is never rated and not indexed
    assert inter.num_items == 11
    assert 3952 not in inter.item_ids
    assert inter.user_ids.tolist() == [1, 2, 3, 4, 5, 6]
    assert inter.ratings.dtype == np.float32 and inter.timestamps.dtype == np.int64
    assert inter.user_ids.dtype == np.int64 and inter.item_ids.dtype == np.int64
    events = _events(inter)
    assert (1, 1193, 5.0, 978300760) in events
    assert (6, 2, 3.0, 978236670) in events
    assert len(events) == 28

    user1 = _features(inter, "user", 1)
    assert (user1["gender"], user1["age"], user1["occupation"], user1["zip"]) == (
        "F",
        1,
        "K-12 student",
        "48067",
    )
    assert _features(inter, "user", 4)["zip"] == "02460"  # leading zero kept
    assert _features(inter, "user", 2)["occupation"] == "self-employed"
    assert inter.user_features.columns == ["user_id", "age", "gender", "occupation", "zip"]

    assert inter.item_features.columns == ["item_id", "title", "year", "genres"]
    assert _features(inter, "item", 73) == {
        "item_id": 73,
        "title": "Misérables, Les (1995)",
        "year": 1995,
        "genres": ["Drama", "Musical"],
    }
    assert _features(inter, "item", 29)["title"].startswith("Cité des enfants perdus")
    star_wars = _features(inter, "item", 260)
    assert star_wars["title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert star_wars["genres"] == ["Action", "Adventure", "Fantasy", "Sci-Fi"]
    assert star_wars["year"] == 1977
    # rows of the feature tables are aligned with the indices
    assert inter.item_features["item_id"].to_list() == inter.item_ids.tolist()
    assert inter.user_features["user_id"].to_list() == inter.user_ids.tolist()


# ---------------------------------------------------------------------- ML-20M fixture
def test_ml20m_fixture(monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    inter = MovieLens("ml-20m", data_dir=FIXTURES).load()
    assert inter.name == "ml-20m"
    assert len(inter) == 24
    assert inter.num_users == 6 and inter.user_ids.tolist() == [1, 2, 3, 4, 5, 7]
    assert inter.num_items == 10  # 131262 is in movies.csv but never rated
    assert inter.user_features is None
    events = _events(inter)
    assert (1, 2, 3.5, 1112486027) in events
    assert (2, 3338, 0.5, 974821014) in events
    assert (3, 108548, 3.5, 1395152347) in events
    assert _features(inter, "item", 11) == {
        "item_id": 11,
        "title": "American President, The (1995)",
        "year": 1995,
        "genres": ["Comedy", "Drama", "Romance"],
    }
    assert _features(inter, "item", 29)["title"] == (
        "City of Lost Children, The (Cité des enfants perdus, La) (1995)"
    )
    assert _features(inter, "item", 3338)["title"] == '"Great Performances" Cats (1998)'
    assert _features(inter, "item", 108548)["year"] is None  # "(2007-)" is not a year
    assert _features(inter, "item", 131260)["genres"] == []  # "(no genres listed)"


# ---------------------------------------------------------------------- ML-100K
def test_ml100k_mini_fixture(tmp_path):
    _copy(FIXTURES / "ml-100k-mini", tmp_path, "ml-100k")
    inter = MovieLens("ml-100k", data_dir=tmp_path, download=False).load()
    assert (len(inter), inter.num_users, inter.num_items) == (17, 5, 6)
    unknown = _features(inter, "item", 267)
    assert (unknown["title"], unknown["year"], unknown["genres"]) == ("unknown", None, ["unknown"])
    assert _features(inter, "item", 543)["title"] == "Misérables, Les (1995)"
    # year = release year of the release_date column
    assert _features(inter, "item", 1252)["year"] == 1997


def test_real_ml100k(tmp_path, monkeypatch):
    root = _ml100k_root()
    folder = root / "ml-100k"
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(movielens_files, "CACHE_MIN_BYTES", 0)  # exercise the parquet cache too
    before = _snapshot(folder)

    inter = MovieLens("ml-100k", data_dir=str(root), verify=True).load()
    assert inter.name == "ml-100k"
    assert (len(inter), inter.num_users, inter.num_items) == (100_000, 943, 1682)
    assert inter.user_ids.tolist() == list(range(1, 944))
    assert inter.item_ids.tolist() == list(range(1, 1683))
    assert set(np.unique(inter.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert (196, 242, 3.0, 881250949) in _events(inter.select(np.arange(10)))

    user1 = _features(inter, "user", 1)
    assert (user1["age"], user1["gender"], user1["occupation"], user1["zip"]) == (
        24,
        "M",
        "technician",
        "85711",
    )
    toy = _features(inter, "item", 1)
    assert toy["title"] == "Toy Story (1995)" and toy["year"] == 1995
    assert toy["genres"] == ["Animation", "Children's", "Comedy"]
    assert _features(inter, "item", 543)["title"] == "Misérables, Les (1995)"  # latin-1
    assert inter.user_features.height == 943 and inter.item_features.height == 1682

    # the cache went to the (tmp) user cache dir; a second load reads it and is identical
    cached = list((tmp_path / "xdg-cache" / "lit_recs" / "processed").glob("ml-100k-*.parquet"))
    assert len(cached) == 1
    again = MovieLens("ml-100k", data_dir=root).load()
    assert again.fingerprint() == inter.fingerprint()
    assert _snapshot(folder) == before  # nothing written into the data folder


def test_verify_detects_modified_u_data(tmp_path):
    _copy(FIXTURES / "ml-100k-mini", tmp_path, "ml-100k")
    with pytest.raises(ValueError, match=r"u\.data: SHA-256 .*06416e59"):
        MovieLens("ml-100k", data_dir=tmp_path, verify=True, download=False).load()


def test_cache_write_failure_is_ignored(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(movielens_files, "CACHE_MIN_BYTES", 0)
    with caplog.at_level("DEBUG", logger=movielens_files.__name__):
        inter = MovieLens("ml-1m", data_dir=FIXTURES).load()
    assert len(inter) == 28
    assert "could not write the ratings cache" in caplog.text


# ---------------------------------------------------------------------- downloads
def test_offline_error_names_url_and_folder(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DownloadError) as info:
        MovieLens("ml-1m", data_dir=tmp_path).load()
    msg = str(info.value)
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in msg
    assert str(tmp_path / "ml-1m") in msg
    assert ml.ENV_VAR in msg
    assert [p.name for p in tmp_path.iterdir()] == []  # no partial download left


def test_timeout_is_reported_as_offline(tmp_path, monkeypatch):
    def slow(*args, **kwargs):
        assert kwargs.get("timeout") == ml.DOWNLOAD_TIMEOUT_S
        raise TimeoutError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", slow)
    with pytest.raises(DownloadError, match="ml-100k.zip .*timed out"):
        MovieLens("ml-100k", data_dir=tmp_path).load()


def test_missing_files_without_download(tmp_path):
    (tmp_path / "ml-20m").mkdir()
    (tmp_path / "ml-20m" / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(FileNotFoundError) as info:
        MovieLens("ml-20m", data_dir=tmp_path, download=False).load()
    assert str(tmp_path / "ml-20m" / "movies.csv") in str(info.value)
    assert "ml-20m.zip" in str(info.value)


def test_checksum_mismatch(tmp_path, monkeypatch):
    def garbage(url, dest, timeout=None):
        Path(dest).write_bytes(b"PK\x03\x04 definitely not the MovieLens archive")

    monkeypatch.setattr(download, "_download", garbage)
    with pytest.raises(ChecksumError) as info:
        MovieLens("ml-100k", data_dir=tmp_path).load()
    msg = str(info.value)
    expected = ml.ARCHIVE_CHECKSUMS["ml-100k"]
    actual = {
        a: hashlib.new(a, b"PK\x03\x04 definitely not the MovieLens archive").hexdigest()
        for a in expected
    }
    assert "ml-100k.zip" in msg
    assert any(expected[a] in msg and actual[a] in msg for a in expected)
    assert ".zip.part" in msg  # names the downloaded file
    assert list(tmp_path.glob("*.zip*")) == [] and list(tmp_path.glob(".*")) == []
    assert not (tmp_path / "ml-100k").exists()


def test_successful_download_extracts_and_loads(tmp_path, monkeypatch):
    payload = _zip_of(FIXTURES / "ml-1m", "ml-1m")
    monkeypatch.setitem(
        ml.ARCHIVE_CHECKSUMS,
        "ml-1m",
        {
            "md5": hashlib.md5(payload).hexdigest(),
            "sha256": hashlib.sha256(payload).hexdigest(),
        },
    )
    urls = []

    def serve(url, timeout=None):
        urls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    inter = MovieLens("ml-1m", data_dir=tmp_path / "data").load()
    assert urls == ["https://files.grouplens.org/datasets/movielens/ml-1m.zip"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ml-1m"]  # zip removed
    assert sorted(p.name for p in (tmp_path / "data" / "ml-1m").iterdir()) == [
        "movies.dat",
        "ratings.dat",
        "users.dat",
    ]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "data" / "ml-1m").stat().st_mode & 0o777 == 0o777 & ~umask
    reference = MovieLens("ml-1m", data_dir=FIXTURES).load()
    assert inter.fingerprint() == reference.fingerprint()
    assert inter.item_features.equals(reference.item_features)

    # the folder is complete now: no second download
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert MovieLens("ml-1m", data_dir=tmp_path / "data").load().fingerprint() == (
        reference.fingerprint()
    )


def test_download_into_incomplete_folder(tmp_path, monkeypatch):
    payload = _zip_of(FIXTURES / "ml-100k-mini", "ml-100k")
    monkeypatch.setitem(
        ml.ARCHIVE_CHECKSUMS, "ml-100k", {"sha256": hashlib.sha256(payload).hexdigest()}
    )
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(payload))
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "notes.txt").write_text("mine")
    inter = MovieLens("ml-100k", data_dir=tmp_path).load()
    assert len(inter) == 17
    assert (tmp_path / "ml-100k" / "notes.txt").read_text() == "mine"


def test_unsafe_archive_paths_are_refused(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "1::1::5::1\n")
        zf.writestr("ml-1m/../../evil.txt", "x")
    payload = buf.getvalue()
    monkeypatch.setitem(ml.ARCHIVE_CHECKSUMS, "ml-1m", {"md5": hashlib.md5(payload).hexdigest()})
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(payload))
    with pytest.raises(DownloadError, match="unsafe path"):
        MovieLens("ml-1m", data_dir=tmp_path / "data").load()
    assert not (tmp_path / "evil.txt").exists()


def test_checksum_constants_are_well_formed():
    assert set(ml.ARCHIVE_CHECKSUMS) == set(ml.NAMES)
    for sums in ml.ARCHIVE_CHECKSUMS.values():
        assert len(sums["md5"]) == 32 and len(sums["sha256"]) == 64
        assert all(c in "0123456789abcdef" for s in sums.values() for c in s)


# ---------------------------------------------------------------------- malformed files
def _ml1m_with(tmp_path: Path, fname: str, replace: tuple[str, str]) -> Path:
    folder = _copy(FIXTURES / "ml-1m", tmp_path, "ml-1m")
    path = folder / fname
    text = path.read_bytes().decode("latin-1")
    assert replace[0] in text
    path.write_bytes(text.replace(replace[0], replace[1], 1).encode("latin-1"))
    return path


@pytest.mark.parametrize(
    ("fname", "old", "new", "pattern"),
    [
        (
            "ratings.dat",
            "2::260::4::978299026",
            "2x::260::4::978299026",
            r"ratings\.dat, line 8: column 'user_id' must be an integer, found '2x'",
        ),
        (
            "ratings.dat",
            "3::1::3::978297867",
            "3::1.5::3::978297867",
            r"ratings\.dat, line 12: column 'item_id' must be an integer, found '1\.5'",
        ),
        (
            "ratings.dat",
            "1::661::3::978302109",
            "1::661::-3::978302109",
            r"ratings\.dat, line 2: invalid rating -3\.0",
        ),
        (
            "ratings.dat",
            "1::661::3::978302109",
            "1::661::NaN::978302109",
            r"ratings\.dat, line 2: invalid rating nan",
        ),
        (
            "ratings.dat",
            "1::661::3::978302109",
            "1::661::3::-978302109",
            r"ratings\.dat, line 2: invalid timestamp -978302109",
        ),
        (
            "ratings.dat",
            "1::661::3::978302109",
            "1::661::3",
            r"ratings\.dat, line 2: missing value in column 'timestamp'",
        ),
        (
            "ratings.dat",
            "1::661::3::978302109",
            "1::661::3::978302109::7",
            r"ratings\.dat, line 2: expected 4 '::'-separated fields .* found 5",
        ),
        (
            "users.dat",
            "3::M::25::15::55117",
            "3::M::25::99::55117",
            r"users\.dat, line 3: column 'occupation' has the unknown code 99",
        ),
        (
            "users.dat",
            "3::M::25::15::55117",
            "three::M::25::15::55117",
            r"users\.dat, line 3: column 'user_id' must be an integer, found 'three'",
        ),
        (
            "movies.dat",
            "914::My Fair Lady",
            "2::My Fair Lady",
            r"movies\.dat, line 7: duplicate item_id 2",
        ),
    ],
)
def test_malformed_ml1m(tmp_path, fname, old, new, pattern):
    path = _ml1m_with(tmp_path, fname, (old, new))
    with pytest.raises(ValueError, match=pattern) as info:
        MovieLens("ml-1m", data_dir=tmp_path, download=False).load()
    assert str(path) in str(info.value)


def test_malformed_ml100k_tab_file(tmp_path):
    folder = _copy(FIXTURES / "ml-100k-mini", tmp_path, "ml-100k")
    data = (folder / "u.data").read_text().replace("3\t267\t1\t", "3\tabc\t1\t")
    (folder / "u.data").write_text(data)
    with pytest.raises(ValueError, match=r"u\.data, line 8: column 'item_id' .* found 'abc'"):
        MovieLens("ml-100k", data_dir=tmp_path, download=False).load()


def test_malformed_ml20m(tmp_path):
    folder = _copy(FIXTURES / "ml-20m", tmp_path, "ml-20m")
    ratings = folder / "ratings.csv"
    good = ratings.read_text()
    ratings.write_text(good.replace("3,318,5.0,", "3,318,five,"))
    with pytest.raises(ValueError, match=r"ratings\.csv, line 11: column 'rating' must be a num"):
        MovieLens("ml-20m", data_dir=tmp_path, download=False).load()
    ratings.write_text(good.replace("userId,movieId", "user,movie"))
    with pytest.raises(ValueError, match=r"ratings\.csv, line 1: expected the header"):
        MovieLens("ml-20m", data_dir=tmp_path, download=False).load()


def test_missing_file_during_parse_names_path(tmp_path):
    folder = _copy(FIXTURES / "ml-1m", tmp_path, "ml-1m")
    with pytest.raises(FileNotFoundError, match=str(folder / "nope.dat")):
        read_table(folder / "nope.dat", [Col("x", movielens_files.pl.Int64)], "::")
