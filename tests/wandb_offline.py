"""A reader for W&B offline run files (`run-<id>.wandb`), for tests only.

wandb 0.31 ships no reader. The format (FIELD-NOTES.md): a 7-byte header starting with `:W&B`,
then LevelDB-log framing — 32 KiB blocks, each record with a 7-byte header (crc32 u32, length u16,
type u8: 1 full, 2 first, 3 middle, 4 last), zero padding at block ends — around protobuf
`Record` messages. It is private to W&B: pyproject pins the wandb range this was checked against.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER_SIZE = 7
BLOCK_SIZE = 32 * 1024
RECORD_HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[bytes]:
    """The payloads of a LevelDB-style log after W&B's 7-byte file header."""
    data = path.read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{path}: not a W&B run file")
    payloads: list[bytes] = []
    pending = b""
    offset = HEADER_SIZE
    while offset + RECORD_HEADER_SIZE <= len(data):
        left_in_block = BLOCK_SIZE - (offset % BLOCK_SIZE)
        if left_in_block < RECORD_HEADER_SIZE:  # zero padding at the end of a block
            offset += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + RECORD_HEADER_SIZE])
        offset += RECORD_HEADER_SIZE
        chunk = data[offset : offset + length]
        offset += length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            payloads.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            payloads.append(pending + chunk)
            pending = b""
    return payloads


@dataclass
class OfflineRun:
    run_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    group: str = ""
    tags: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # explicit summary updates, later ones win


def read_offline_run(path: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun()
    for payload in read_records(path):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            run.group = record.run.run_group
            run.tags = list(record.run.tags)
            for item in record.run.config.update:
                run.config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            run.history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return run
