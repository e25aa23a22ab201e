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
