"""Where bytes live: local paths and ``s3://`` URIs, behind one small set of functions.

S3 access goes through s3fs for Zarr stores and whole-object copies, and through GDAL's ``/vsis3/`` for
GeoTIFF reads. Endpoint and credentials come only from the standard AWS environment variables and
config files (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``AWS_REGION``), plus ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for S3-compatible stores such as
MinIO or moto; eoseg never takes a credential as a parameter, so none can end up in a log or a flow run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

S3_SCHEME = "s3://"


def is_s3(uri: str | os.PathLike[str]) -> bool:
    """True for ``s3://bucket/key`` URIs."""
    return str(uri).startswith(S3_SCHEME)


def normalise_uri(uri: str | os.PathLike[str]) -> str:
    """An absolute local path, or the S3 URI unchanged (trailing slashes removed)."""
    text = str(uri)
    if is_s3(text):
        return text.rstrip("/")
    return str(Path(text).expanduser().resolve())


def s3_endpoint_url() -> str | None:
    """The S3 endpoint from the environment (``AWS_ENDPOINT_URL_S3`` wins over ``AWS_ENDPOINT_URL``)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_storage_options() -> dict[str, Any]:
    """fsspec/s3fs options for the configured endpoint; credentials stay with botocore's own chain."""
    options: dict[str, Any] = {}
    endpoint = s3_endpoint_url()
    if endpoint:
        options["endpoint_url"] = endpoint
    return options


def s3_filesystem() -> Any:  # s3fs.S3FileSystem (s3fs ships no type information)
    """An s3fs file system for the configured endpoint (instances are cached by s3fs)."""
    import s3fs

    return s3fs.S3FileSystem(**s3_storage_options())


def storage_options_for(uri: str) -> dict[str, Any] | None:
    """``storage_options`` to hand to xarray/zarr for ``uri`` (None for local paths)."""
    return s3_storage_options() if is_s3(uri) else None


def exists(uri: str) -> bool:
    """Whether a file, directory or S3 object/prefix exists at ``uri``."""
    if is_s3(uri):
        fs = s3_filesystem()
        fs.invalidate_cache(uri)  # s3fs caches listings per process; another process may have written it
        return bool(fs.exists(uri))
    return Path(uri).exists()


def is_dir(uri: str) -> bool:
    """Whether ``uri`` is a local directory, or an S3 prefix with objects under it (not an object)."""
    if is_s3(uri):
        fs = s3_filesystem()
        fs.invalidate_cache(uri)
        return bool(fs.isdir(uri))
    return Path(uri).is_dir()


def remove(uri: str) -> None:
    """Delete a file, a directory tree, or everything under an S3 prefix; missing is fine."""
    if is_s3(uri):
        fs = s3_filesystem()
        if fs.exists(uri):
            fs.rm(uri, recursive=True)
        return
    path = Path(uri)
    if path.is_dir() and not path.is_symlink():
        # A cancelled Dask task may still be finishing a chunk write: retry until the tree is gone.
        for attempt in range(20):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                return
            time.sleep(0.1 * (attempt + 1))
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def size_of(uri: str) -> int:
    """Size in bytes of a file or S3 object."""
    if is_s3(uri):
        fs = s3_filesystem()
        fs.invalidate_cache(uri)
        return int(fs.size(uri))
    return Path(uri).stat().st_size


def modified_time(uri: str) -> float:
    """Last-modified time (POSIX seconds) of a file or S3 object."""
    if is_s3(uri):
        fs = s3_filesystem()
        fs.invalidate_cache(uri)
        info = fs.info(uri)
        stamp = info.get("LastModified") or info.get("last_modified")
        return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)
    return Path(uri).stat().st_mtime


def gdal_path(uri: str) -> str:
    """The path GDAL opens for ``uri``: ``/vsis3/bucket/key`` for S3, the local path otherwise."""
    if is_s3(uri):
        return "/vsis3/" + uri[len(S3_SCHEME) :]
    return uri


def gdal_config_for(uri: str) -> dict[str, str | int]:
    """GDAL configuration options that point ``/vsis3/`` at the configured endpoint.

    Credentials are not passed here: GDAL reads ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (or the
    AWS config files) itself, exactly as boto does.
    """
    # TRUE, not EMPTY_DIR: GDAL lists no folder or bucket prefix, but probes the known sidecar names
    # (.aux.xml, .aux, .msk, .ovr: one stat or HEAD each), so sidecar nodata and masks are honoured.
    # GDAL's block cache defaults to 5 % of RAM; eoseg reads each block once (windows follow the chunk
    # grid), so a large cache only grows memory with the scene. 64 MiB (the value is in bytes).
    config: dict[str, str | int] = {"GDAL_DISABLE_READDIR_ON_OPEN": "TRUE", "GDAL_CACHEMAX": 64 * 2**20}
    if not is_s3(uri):
        return config
    endpoint = s3_endpoint_url()
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        config["AWS_S3_ENDPOINT"] = parsed.netloc
        config["AWS_HTTPS"] = "YES" if parsed.scheme == "https" else "NO"
        # S3-compatible servers on an IP or localhost cannot do virtual-hosted bucket names.
        config["AWS_VIRTUAL_HOSTING"] = "FALSE"
    config["CPL_VSIL_USE_TEMP_FILE_FOR_RANDOM_WRITE"] = "YES"
    return config


@contextlib.contextmanager
def gdal_env(uri: str) -> Iterator[None]:
    """A ``rasterio.Env`` configured for reading ``uri``."""
    import rasterio

    with rasterio.Env(**gdal_config_for(uri)):
        yield


def fetch_to_local(uri: str, directory: str) -> str:
    """A local path holding ``uri``'s bytes (the path itself for local files; a download for S3)."""
    if not is_s3(uri):
        return uri
    local = os.path.join(directory, Path(urlparse(uri).path).name)
    s3_filesystem().get_file(uri, local)
    return local


def join(uri: str, *parts: str) -> str:
    """``uri`` with ``parts`` appended: ``/`` for S3 keys, the operating system's separator for paths."""
    if is_s3(uri):
        return "/".join([uri.rstrip("/"), *parts])
    return os.path.join(uri, *parts)


def open_file(uri: str, mode: str = "rb", **options: Any) -> Any:
    """A file object for ``uri`` (fsspec; for S3 ``"wb"`` is a multipart upload, visible once closed).

    ``options`` go to the file system's ``open`` (e.g. ``block_size``, ``cache_type``).
    """
    if is_s3(uri):
        return s3_filesystem().open(uri, mode, **options)
    return open(uri, mode)


def read_text(uri: str) -> str | None:
    """The UTF-8 text of the file or object at ``uri``, or None when there is none."""
    try:
        with open_file(uri, "rb") as handle:
            return bytes(handle.read()).decode("utf-8")
    except FileNotFoundError:
        return None


def file_names(uri: str) -> set[str]:
    """The names of the files directly in the folder (or S3 prefix) ``uri``; empty when there is none."""
    if is_s3(uri):
        fs = s3_filesystem()
        fs.invalidate_cache(uri)
        try:
            return {str(name).rsplit("/", 1)[-1] for name in fs.ls(uri, detail=False)}
        except FileNotFoundError:
            return set()
    return set(os.listdir(uri)) if os.path.isdir(uri) else set()


def read_ranges(uri: str, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of each ``(start, end)`` range of the file or object at ``uri`` (S3: concurrent GETs)."""
    if is_s3(uri):
        fs = s3_filesystem()
        return [bytes(b) for b in fs.cat_ranges([uri] * len(ranges), *map(list, zip(*ranges, strict=True)))]
    with open(uri, "rb") as handle:
        out = []
        for start, end in ranges:
            handle.seek(start)
            out.append(handle.read(end - start))
        return out
