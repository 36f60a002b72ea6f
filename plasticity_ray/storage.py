"""Writing results without ever leaving half a file: write to a temporary name, then rename."""

from __future__ import annotations

import json
import os
from pathlib import Path


def storage_dir(storage_path: str) -> Path:
    """The local (or mounted, e.g. NFS) directory behind a spec's storage_path."""
    if "://" in storage_path and not storage_path.startswith("file://"):
        raise ValueError(f"storage_path: {storage_path!r}: needs a local or mounted (NFS) path")
    return Path(storage_path.removeprefix("file://")).expanduser()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: dict | list) -> None:
    write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
