"""The on-disk layout of prepared data: Parquet shards of packed token rows, and their manifests.

    <root>/manifest.json             what is prepared here: tokenizer, source, seq_len, and per
                                     (language, split) unit its rows, tokens and shards (sizes, hashes)
    <root>/<lang>/<split>/shard-00000.parquet

A shard has one column, ``ids``: fixed-size lists of seq_len + 1 int32 token ids. Every row group
holds exactly ROW_GROUP_ROWS rows except the unit's very last one, so global row r of a unit sits
in row group r // ROW_GROUP_ROWS. Files are written under temporary names and renamed when
complete, and a unit exists only once the manifest lists it, so a crash never leaves half a unit
in use.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from plasticity_ray.errors import UserError
from plasticity_ray.storage import arrow_location, is_local, remove_tree

ROW_GROUP_ROWS = 128
ROW_GROUPS_PER_SHARD = 256  # 32,768 rows: 268 MB of int32 at seq_len 2048


class DataError(UserError):
    """Bad input data or prepared data; the message names the language, file or field."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class Packer:
    """Concatenates token arrays (documents, each ending in the separator) and cuts rows of
    exactly `row_len` ids. Nothing is padded; `tail` holds what has not yet filled a row."""

    def __init__(self, row_len: int):
        self.row_len = row_len
        self.tail = np.empty(0, dtype=np.int32)

    def add(self, tokens: np.ndarray) -> np.ndarray:
        """Returns the complete rows (n × row_len) that `tokens` finishes."""
        stream = np.concatenate([self.tail, tokens.astype(np.int32, copy=False)])
        full = len(stream) // self.row_len * self.row_len
        self.tail = stream[full:]
        return stream[:full].reshape(-1, self.row_len)


class UnitWriter:
    """Writes one (language, split) unit: rows in, shards out; `finish` returns its manifest entry."""

    def __init__(self, root: Path, language: str, split: str, row_len: int):
        self.final_dir = root / language / f"{split}"
        # Object storage has no rename: shards go straight to their place, which counts only once the
        # manifest lists them (written after).
        self.local = is_local(root)
        self.partial_dir = root / language / f".{split}.partial" if self.local else self.final_dir
        self.language, self.split, self.row_len = language, split, row_len
        remove_tree(self.partial_dir)  # a crashed earlier attempt
        if self.local:
            self.partial_dir.mkdir(parents=True)
        self.schema = pa.schema([pa.field("ids", pa.list_(pa.int32(), row_len))])
        self.shards: list[dict] = []
        self.rows = 0  # written
        self.rows_added = 0  # written or waiting to fill a row group
        self._writer: pq.ParquetWriter | None = None
        self._shard_rows = 0
        self._pending = np.empty((0, row_len), dtype=np.int32)

    def add(self, rows: np.ndarray) -> None:
        self.rows_added += len(rows)
        self._pending = np.concatenate([self._pending, rows]) if len(self._pending) else rows
        while len(self._pending) >= ROW_GROUP_ROWS:
            self._write_group(self._pending[:ROW_GROUP_ROWS])
            self._pending = self._pending[ROW_GROUP_ROWS:]

    def _write_group(self, rows: np.ndarray) -> None:
        if self._writer is None:
            name = f"shard-{len(self.shards):05d}.parquet"
            filesystem, where = arrow_location(self.partial_dir / name)
            self._writer = pq.ParquetWriter(where, self.schema, filesystem=filesystem, compression="zstd")
            self.shards.append({"file": name, "rows": 0})
        flat = pa.array(rows.reshape(-1), type=pa.int32())
        column = pa.FixedSizeListArray.from_arrays(flat, self.row_len)
        self._writer.write_table(pa.table({"ids": column}, schema=self.schema), row_group_size=len(rows))
        self.shards[-1]["rows"] += len(rows)
        self.rows += len(rows)
        self._shard_rows += len(rows)
        if self._shard_rows >= ROW_GROUP_ROWS * ROW_GROUPS_PER_SHARD:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer, self._shard_rows = None, 0

    def abort(self) -> None:
        """Drop everything this writer wrote; the final directory is left as it was."""
        self._close_shard()
        remove_tree(self.partial_dir)

    def finish(self, **stats) -> dict:
        if len(self._pending):
            self._write_group(self._pending)
        self._close_shard()
        for shard in self.shards:
            path = self.partial_dir / shard["file"]
            shard["bytes"] = path.stat().st_size
            shard["sha256"] = file_sha256(path)
        if self.local:
            remove_tree(self.final_dir)  # never completed, or we would not be here
            os.replace(self.partial_dir, self.final_dir)
        return {"rows": self.rows, "tokens": self.rows * self.row_len, "shards": self.shards, **stats}


@dataclass(frozen=True)
class Unit:
    """A prepared (language, split) pool of rows, addressable by global row index."""

    root: Path
    language: str
    split: str
    rows: int
    row_len: int
    shards: tuple[dict, ...]

    @property
    def row_groups(self) -> int:
        return -(-self.rows // ROW_GROUP_ROWS)

    def shard_path(self, shard: dict) -> Path:
        return self.root / self.language / self.split / shard["file"]

    def verify(self, checksums: bool = False) -> None:
        """Every shard present with its recorded size (and hash); DataError names the file."""
        for shard in self.shards:
            path = self.shard_path(shard)
            if not path.exists():
                raise DataError(f"{path}: shard listed in the manifest is missing")
            if path.stat().st_size != shard["bytes"]:
                raise DataError(f"{path}: size {path.stat().st_size} differs from the manifest's {shard['bytes']} (corrupted?)")
            if checksums and file_sha256(path) != shard["sha256"]:
                raise DataError(f"{path}: checksum differs from the manifest's (corrupted)")

    def read_row_groups(self, groups: list[int]) -> np.ndarray:
        """The rows of the unit's row groups `groups` (in that order) as an (n × row_len) int32 array;
        row group g holds rows [g·ROW_GROUP_ROWS, (g+1)·ROW_GROUP_ROWS)."""
        parts = []
        for shard_index, in_shard in itertools.groupby(groups, key=lambda g: g // ROW_GROUPS_PER_SHARD):
            path = self.shard_path(self.shards[shard_index])
            local = [g % ROW_GROUPS_PER_SHARD for g in in_shard]
            try:
                filesystem, where = arrow_location(path)
                table = pq.ParquetFile(where, filesystem=filesystem).read_row_groups(local, columns=["ids"])
            except (OSError, pa.ArrowException) as err:
                raise DataError(f"{path}: cannot read row groups {local} ({err})") from None
            parts.append(table.column("ids").combine_chunks().flatten().to_numpy().reshape(-1, self.row_len))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given global rows, in the given order, reading each row group they touch once."""
        groups = np.unique(rows // ROW_GROUP_ROWS)
        block = self.read_row_groups(groups.tolist())
        # Row r sits at (index of its group among `groups`) · ROW_GROUP_ROWS + r mod ROW_GROUP_ROWS.
        return block[np.searchsorted(groups, rows // ROW_GROUP_ROWS) * ROW_GROUP_ROWS + rows % ROW_GROUP_ROWS]

    def read_all(self) -> np.ndarray:
        return self.read_row_groups(list(range(self.row_groups)))
