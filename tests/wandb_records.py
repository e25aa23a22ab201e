"""Reads the records of an offline W&B run file (`run-<id>.wandb`), for tests.

The file is a 7-byte header (":W&B", magic 0xBEE1, version) followed by a LevelDB-style log:
32 KiB blocks of chunks, each `crc32c (4) | length (2, little endian) | type (1) | payload`, type 1 =
full record, 2/3/4 = first/middle/last piece. Each record is a protobuf `wandb.Record`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7


def records(path: str | Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    out, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # block trailer: zero padding
            pos += left_in_block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        payload = data[pos + 7 : pos + 7 + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            out.append(rec)
            pending = b""
    return out


def logged_metrics(path: str | Path) -> dict[str, float]:
    """Last value of every metric in the run's history records."""
    values: dict[str, float] = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") == "history":
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                values[key] = json.loads(item.value_json)
    return values


def run_config(path: str | Path) -> dict[str, object]:
    """The run's config (keys as logged, values decoded from JSON)."""
    config: dict[str, object] = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") == "config":
            for item in rec.config.update:
                key = item.key or "/".join(item.nested_key)
                config[key] = json.loads(item.value_json)
    return config


def _decoded(items: object) -> dict[str, object]:
    """{key: value} of protobuf items (key, or nested_key joined by "/"), values decoded."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def summary(path: str | Path) -> dict[str, object]:
    """The run's final summary: the last value written for each key (summary records)."""
    values: dict[str, object] = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") == "summary":
            values.update(_decoded(rec.summary.update))
            for item in rec.summary.remove:
                values.pop(item.key or "/".join(item.nested_key), None)
    return values


def artifacts(path: str | Path) -> list[dict[str, object]]:
    """Every artifact the run logged, in order: name, type, aliases, metadata (decoded) and files
    ({path in the artifact: {digest (base64 MD5), size, local_path}}). Offline, `local_path` is
    the staged copy that `wandb sync` uploads."""
    out = []
    for rec in records(path):
        if rec.WhichOneof("record_type") == "artifact":
            art = rec.artifact
            out.append({
                "name": art.name, "type": art.type, "aliases": list(art.aliases),
                "metadata": json.loads(art.metadata) if art.metadata else {},
                "files": {c.path: {"digest": c.digest, "size": c.size, "local_path": c.local_path}
                          for c in art.manifest.contents},
            })
    return out


def tables(path: str | Path) -> dict[str, dict[str, list]]:
    """Every Table logged to the run's history, by key (the last one of each key): {"columns":
    [...], "data": [[...], ...]}, read from the file the history record points at (under the
    run's `files/` folder)."""
    files: dict[str, str] = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") != "history":
            continue
        fields = _decoded(rec.history.item)
        for key, value in fields.items():
            key_of_table = key.removesuffix("/_type")
            if value == "table-file" and key != key_of_table:
                files[key_of_table] = fields[f"{key_of_table}/path"]
    run_files = Path(path).parent / "files"
    return {key: json.loads((run_files / name).read_text()) for key, name in files.items()}
