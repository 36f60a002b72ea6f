"""Where results live — a local (or mounted) directory, or object storage (s3://, gs://) — and writing
them without ever leaving half a file.

Paths are `upath.UPath`s: a local path is a `pathlib.Path`, an object-store URI the same interface
over fsspec (s3fs, gcsfs). A file system gets a temporary name, then a rename; object storage has no
rename, so an object is written whole in one request (it exists complete or not at all), and a
directory of several objects is made visible by an object written last (a checkpoint's state.json,
a prepared unit's manifest entry). Appending to an object rewrites it whole.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlsplit

from upath import UPath

from plasticity_ray.errors import UserError

T = TypeVar("T")


class StorageError(UserError):
    """A storage location that cannot be used; the message names the bucket or directory."""


# How long a write to object storage that does not answer is retried (backoff 1 s, 2 s, ... 30 s)
# before the work stops; the spec's `storage_retry_s`, set by each process that runs a spec.
_patience_s = 120.0
NOT_ANSWERING = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                 "ClientConnectorError", "ServerDisconnectedError", "ConnectionError", "TimeoutError",
                 "FSTimeoutError"}


def set_patience(seconds: float) -> None:
    global _patience_s
    _patience_s = seconds


def _class_names(err: BaseException) -> set[str]:
    """Names of an error's classes: clients' errors are recognised without importing the clients."""
    return {cls.__name__ for cls in type(err).__mro__}


def _not_answering(err: BaseException) -> bool:
    """A failure of the store to answer (connection refused or cut, a timeout), not a refusal."""
    while err is not None:
        if _class_names(err) & NOT_ANSWERING:
            return True
        err = err.__cause__ or err.__context__
    return False


def patiently(action: Callable[[], T], path: os.PathLike) -> T:
    """`action` on object storage, retried with backoff while the store does not answer, for up to
    the patience; then one StorageError naming the bucket. Anything else is raised at once."""
    started, pause = time.monotonic(), 1.0
    while True:
        try:
            return action()
        except Exception as err:
            if not _not_answering(err):
                raise
            waited = time.monotonic() - started
            if waited >= _patience_s:
                raise StorageError(f"{bucket_of(path)}: not answering for {waited:.0f} s "
                                   f"({type(err).__name__}; storage_retry_s: {_patience_s:g})") from None
        time.sleep(pause)
        pause = min(2 * pause, 30.0)


def as_path(location: str | os.PathLike) -> UPath:
    """A local path or an object-store URI as a path (local ones expanded and absolute)."""
    if isinstance(location, UPath) and not is_local(location):
        return location
    text = os.fspath(location)
    if "://" in text and not text.startswith("file://"):
        # No cached listings: other processes (workers, the probe service) add objects all the time.
        return UPath(text, use_listings_cache=False)
    return UPath(Path(text.removeprefix("file://")).expanduser().resolve())


def storage_dir(storage_path: str) -> UPath:
    """The directory or bucket prefix behind a spec's storage_path."""
    return as_path(storage_path)


def is_local(path: str | os.PathLike) -> bool:
    if isinstance(path, UPath):
        return path.protocol in ("", "file", "local")
    return isinstance(path, Path) or "://" not in os.fspath(path) or os.fspath(path).startswith("file://")


def uri(path: os.PathLike) -> str:
    """What Ray, pyarrow and the other processes are handed: a local path or a full URI."""
    return os.fspath(path) if is_local(path) else str(path)


@functools.lru_cache(maxsize=None)
def _arrow_filesystem(root: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(root)[0]


def arrow_location(path: os.PathLike):
    """(pyarrow filesystem, path in it) for pyarrow readers and writers; None for a local path."""
    if is_local(path):
        return None, os.fspath(path)
    return _arrow_filesystem(f"{path.protocol}://{path.path.split('/', 1)[0]}"), path.path


def bucket_of(path: os.PathLike) -> str:
    """`s3://bucket` of an object-store path (what a message names)."""
    path = as_path(path)
    return f"{path.protocol}://{path.path.split('/', 1)[0]}"


def _explain(err: BaseException, location: str) -> str | None:
    """One line for an object-store client failure a user can fix (credentials, endpoint), else None."""
    if _class_names(err) & {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"}:
        how = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile in "
               "~/.aws/credentials" if location.startswith("s3://") else "set GOOGLE_APPLICATION_CREDENTIALS")
        return f"{location}: no credentials for object storage ({how})"
    if _not_answering(err):
        url = urlsplit(getattr(err, "kwargs", {}).get("endpoint_url", "") or os.environ.get("AWS_ENDPOINT_URL", ""))
        where = f"the object store at {url.scheme}://{url.netloc}" if url.netloc else "the object store"
        return f"{location}: cannot reach {where} (check AWS_ENDPOINT_URL or the network)"
    return None


def _quick(path: UPath) -> UPath:
    """The same object through a client that gives up after one try of a few seconds: a check
    should say at once that an endpoint is wrong, not after a minute of retries."""
    if path.protocol != "s3":
        return path
    quick = UPath(str(path), use_listings_cache=False, skip_instance_cache=True,
                  config_kwargs={"connect_timeout": 5, "read_timeout": 20, "retries": {"max_attempts": 1}})
    quick.fs.retries = 1
    return quick


def check_storage(storage_path: str) -> None:
    """Fail early, in one line, when object storage cannot be written: no such bucket, no access,
    no credentials, or no endpoint that answers."""
    root = storage_dir(storage_path)
    if is_local(root):
        return
    probe = _quick(root / ".plasticity-ray-write-check")
    bucket = bucket_of(root)
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except FileNotFoundError:
        raise StorageError(f"storage_path: {storage_path}: bucket {bucket} does not exist") from None
    except PermissionError:
        raise StorageError(f"storage_path: {storage_path}: access to {bucket} denied (check the credentials)") from None
    except Exception as err:
        raise StorageError(f"storage_path: {_explain(err, storage_path) or f'{storage_path}: cannot write ({err})'}") from None


def storage_problem(storage_path: str) -> str | None:
    """Why object storage cannot be written right now (one line), or None: asked after work failed,
    to tell a storage outage from a failure of the work itself."""
    try:
        check_storage(storage_path)
    except StorageError as err:
        return str(err)
    return None


def require_dir(path: os.PathLike) -> None:
    """A directory (or bucket prefix) that must exist to be read; one line when it does not."""
    path = as_path(path)
    if is_local(path):
        if not path.is_dir():
            raise StorageError(f"{path}: not a directory")
        return
    quick = _quick(path)
    try:
        if quick.is_dir():
            return
        bucket_there = quick.fs.exists(bucket_of(path))
    except Exception as err:
        raise StorageError(_explain(err, str(path)) or f"{path}: cannot read ({err})") from None
    raise StorageError(f"{path}: nothing stored here" if bucket_there else f"{path}: bucket {bucket_of(path)} does not exist")


def write_bytes_atomic(path: os.PathLike, data: bytes) -> None:
    path = as_path(path)
    if not is_local(path):
        patiently(lambda: path.write_bytes(data), path)  # one object, one request: whole or absent
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: os.PathLike, payload: dict | list) -> None:
    write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def read_text(path: os.PathLike) -> str:
    """A file's text. On object storage another process's append replaces the whole object: the
    object is fetched in one request (whichever version is current, whole), not opened and read in
    ranges, which fails with s3fs's FileExpired when the object is replaced in between."""
    path = as_path(path)
    if is_local(path):
        return path.read_text(encoding="utf-8")
    return patiently(lambda: path.fs.cat_file(path.path), path).decode("utf-8")


def append_text(path: os.PathLike, text: str) -> None:
    """Append to a file (flushed to disk); on object storage the object is rewritten whole."""
    path = as_path(path)
    if not is_local(path):
        def append() -> None:
            before = path.read_bytes() if path.exists() else b""
            path.write_bytes(before + text.encode("utf-8"))

        patiently(append, path)
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def remove_file(path: os.PathLike) -> None:
    """Remove a file, if it is there."""
    path = as_path(path)
    if is_local(path):
        Path(path).unlink(missing_ok=True)
        return
    try:
        path.fs.rm(path.path)
    except FileNotFoundError:
        pass


def remove_tree(path: os.PathLike) -> None:
    """Remove a directory and everything in it, if it is there."""
    path = as_path(path)
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        path.fs.rm(path.path, recursive=True)
    except FileNotFoundError:
        pass
