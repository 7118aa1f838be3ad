"""New acquisitions: which scenes under a prefix still need a map.

A scene ``SCENES/NAME.tif`` (or ``.tiff``) maps to ``OUTPUT/NAME.tif`` with the outputs of
:meth:`eoseg.outputs.RunOutputs.for_map` beside it, and to the STAC item ``OUTPUT/NAME.item.json``
(:func:`eoseg.catalog.stac.item_uri_for_map`). A run writes the item last, so a scene is **up to date** when
its COG exists, is not older than the scene (modification times), and its item exists. Otherwise it is

- ``new``: no output at all;
- ``partial``: a previous run stopped part-way (stores or a COG without its catalogue item);
- ``stale``: the COG is older than the scene (the scene was replaced after it was mapped).

Files beside a scene named ``NAME.reference.tif``/``.tiff``/``.geojson`` are not scenes: they are
that scene's reference map, used for scores.

**Acquisitions of many tiles** (:func:`list_acquisitions`, ``group_by="folder"``): each direct sub-folder
``SCENES/ACQ/`` is one acquisition, and every scene file anywhere under it is one of its tiles (one grid,
one mosaic); it maps to ``OUTPUT/ACQ.tif``. Its modification time is its newest tile's, so a tile added
or replaced after the map was made makes the acquisition ``stale`` (a tile removed does not). Files
directly under ``SCENES/`` stay single scenes. Hidden files (``.name``: partial uploads and eoseg's own
temporary files) are ignored. Everything here is plain Python over :mod:`eoseg.io.storage`.
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from eoseg.errors import ConfigurationError, SceneNotFoundError
from eoseg.io import storage
from eoseg.outputs import RunOutputs

SCENE_SUFFIXES = (".tif", ".tiff")
REFERENCE_MARKER = ".reference"
REFERENCE_SUFFIXES = (".tif", ".tiff", ".geojson")


@dataclass(frozen=True)
class SceneFile:
    """One input scene found under a prefix.

    Attributes:
        uri: absolute local path or ``s3://`` URI.
        modified: last modification time, POSIX seconds (S3: the object's LastModified).
        size: bytes.
        reference_uri: the scene's reference map (``NAME.reference.*`` beside it), if any.
        tiles: for an acquisition of many tiles, every tile's URI in name order (``uri`` is the first,
            ``modified`` the newest tile's time, ``size`` their sum); empty for one file.
        acquisition: the map name of an acquisition of many tiles (its folder's name).
    """

    uri: str
    modified: float
    size: int
    reference_uri: str | None = None
    tiles: tuple[str, ...] = ()
    acquisition: str | None = None

    @property
    def name(self) -> str:
        return PurePosixPath(self.uri).name

    @property
    def stem(self) -> str:
        """The name of the scene's map: the file's stem, or the acquisition's name."""
        return self.acquisition or scene_stem(self.uri)


class SceneStatus(enum.StrEnum):
    NEW = "new"
    PARTIAL = "partial"
    STALE = "stale"
    UP_TO_DATE = "up-to-date"


@dataclass(frozen=True)
class SceneDecision:
    """What to do with one scene, and why."""

    scene: SceneFile
    status: SceneStatus
    map_uri: str
    reason: str

    @property
    def needs_processing(self) -> bool:
        return self.status is not SceneStatus.UP_TO_DATE


def scene_stem(uri: str) -> str:
    """``NAME`` of ``.../NAME.tif`` or ``.../NAME.tiff``."""
    name = PurePosixPath(str(uri)).name
    for suffix in SCENE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def map_uri_for(scene_uri: str, output_prefix: str) -> str:
    """``OUTPUT_PREFIX/<scene stem>.tif``: where the map of ``scene_uri`` goes."""
    return join_uri(output_prefix, f"{scene_stem(scene_uri)}.tif")


def join_uri(prefix: str, name: str) -> str:
    prefix = storage.normalise_uri(prefix)
    return f"{prefix}/{name}" if storage.is_s3(prefix) else str(Path(prefix) / name)


def _is_scene_name(name: str) -> bool:
    return (
        not name.startswith(".") and name.lower().endswith(SCENE_SUFFIXES) and _reference_stem(name) is None
    )


def _reference_stem(name: str) -> str | None:
    lower = name.lower()
    for suffix in REFERENCE_SUFFIXES:
        if lower.endswith(REFERENCE_MARKER + suffix) and not name.startswith("."):
            return name[: -len(REFERENCE_MARKER + suffix)]
    return None


@contextlib.contextmanager
def _fresh_s3_listings() -> Iterator[Any]:
    """The s3fs file system with no cached listings before or after use.

    s3fs caches directory listings per process. Outputs are written by other processes (Dask workers),
    so a listing kept after this call would hide them from later existence checks in this process.
    """
    fs = storage.s3_filesystem()
    fs.invalidate_cache()
    try:
        yield fs
    finally:
        fs.invalidate_cache()


def _list_s3_files(prefix: str, *, recursive: bool) -> list[tuple[str, float, int]]:
    bucket = prefix[len(storage.S3_SCHEME) :].split("/", 1)[0]
    with _fresh_s3_listings() as fs:
        if not fs.exists(f"{storage.S3_SCHEME}{bucket}"):
            raise SceneNotFoundError(
                f"{prefix}: bucket {bucket!r} not found (check the name and AWS_ENDPOINT_URL)"
            )
        entries = fs.find(prefix, maxdepth=None if recursive else 1, withdirs=False, detail=True)
    files = []
    for key, info in entries.items():
        if info.get("type") != "file":
            continue
        stamp = info.get("LastModified") or info.get("last_modified")
        mtime = stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)
        files.append((f"{storage.S3_SCHEME}{key}", mtime, int(info.get("size") or 0)))
    return files


def _list_files(prefix: str, *, recursive: bool) -> list[tuple[str, float, int]]:
    """``(uri, mtime, size)`` of every file under ``prefix`` (direct children unless ``recursive``)."""
    if storage.is_s3(prefix):
        return _list_s3_files(prefix, recursive=recursive)
    root = Path(prefix)
    if not root.is_dir():
        raise SceneNotFoundError(
            f"{prefix}: no such directory. Give the folder (or s3:// prefix) that holds the scenes."
        )
    paths = root.rglob("*") if recursive else root.iterdir()
    files = []
    for path in paths:
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts):
            stat = path.stat()
            files.append((str(path), stat.st_mtime, stat.st_size))
    return files


def _under(uri: str, prefix: str) -> bool:
    return uri == prefix or uri.startswith(prefix.rstrip("/") + "/")


def list_scenes(
    prefix: str, *, recursive: bool = False, exclude_prefix: str | None = None
) -> list[SceneFile]:
    """Scenes (``*.tif``/``*.tiff``) under ``prefix`` with their modification times, sorted by URI.

    Args:
        prefix: a local directory or an ``s3://bucket/prefix``.
        recursive: also look in sub-folders (default: direct children only).
        exclude_prefix: leave out anything under this prefix (the output prefix, when it is inside
            the scenes prefix).

    Raises:
        SceneNotFoundError: the directory or bucket does not exist.
        ConfigurationError: two scenes would write the same map (same name in different folders).
    """
    prefix = storage.normalise_uri(prefix)
    exclude = storage.normalise_uri(exclude_prefix) if exclude_prefix else None
    files = [f for f in _list_files(prefix, recursive=recursive) if not (exclude and _under(f[0], exclude))]
    references = {}
    for uri, _, _ in files:
        stem = _reference_stem(PurePosixPath(uri).name)
        if stem is not None:
            references[(str(PurePosixPath(uri).parent), stem)] = uri
    scenes: list[SceneFile] = []
    seen: dict[str, str] = {}
    for uri, mtime, size in sorted(files):
        name = PurePosixPath(uri).name
        if not _is_scene_name(name):
            continue
        stem = scene_stem(uri)
        if stem in seen:
            raise ConfigurationError(
                f"{seen[stem]} and {uri} would both be mapped to {stem}.tif; rename one of "
                "them or process the folders separately"
            )
        seen[stem] = uri
        scenes.append(
            SceneFile(
                uri=uri,
                modified=mtime,
                size=size,
                reference_uri=references.get((str(PurePosixPath(uri).parent), stem)),
            )
        )
    return scenes


def list_acquisitions(prefix: str, *, exclude_prefix: str | None = None) -> list[SceneFile]:
    """The acquisitions under ``prefix``: one per sub-folder (its scene files are the tiles of one mosaic),
    and one per scene file directly under ``prefix``; sorted by map name.

    Args:
        prefix: a local directory or an ``s3://bucket/prefix``.
        exclude_prefix: leave out anything under this prefix (the output prefix).

    Raises:
        SceneNotFoundError: the directory or bucket does not exist.
        ConfigurationError: a folder and a file directly under ``prefix`` would write the same map.
    """
    prefix = storage.normalise_uri(prefix).rstrip("/")
    singles = {scene.stem: scene for scene in list_scenes(prefix, exclude_prefix=exclude_prefix)}
    exclude = storage.normalise_uri(exclude_prefix) if exclude_prefix else None
    groups: dict[str, list[tuple[str, float, int]]] = {}
    for uri, mtime, size in sorted(_list_files(prefix, recursive=True)):
        folder, _, rest = uri[len(prefix) + 1 :].partition("/")
        if rest and _is_scene_name(PurePosixPath(uri).name) and not (exclude and _under(uri, exclude)):
            groups.setdefault(folder, []).append((uri, mtime, size))
    clashes = sorted(set(groups) & set(singles))
    if clashes:
        raise ConfigurationError(
            f"{prefix}/{clashes[0]}/ and {singles[clashes[0]].uri} would both be mapped to {clashes[0]}.tif; "
            "rename one of them"
        )
    acquisitions = {
        name: SceneFile(
            uri=files[0][0],
            modified=max(mtime for _, mtime, _ in files),
            size=sum(size for _, _, size in files),
            tiles=tuple(uri for uri, _, _ in files),
            acquisition=name,
        )
        for name, files in groups.items()
    }
    return [scene for _, scene in sorted({**singles, **acquisitions}.items())]


def reference_for(scene_uri: str) -> str | None:
    """The scene's reference map ``NAME.reference.{tif,tiff,geojson}`` beside it, if one exists."""
    scene_uri = storage.normalise_uri(scene_uri)
    folder = scene_uri.rsplit("/", 1)[0]
    for suffix in REFERENCE_SUFFIXES:
        candidate = f"{folder}/{scene_stem(scene_uri)}{REFERENCE_MARKER}{suffix}"
        if storage.exists(candidate):
            return candidate
    return None


def list_outputs(output_prefix: str) -> dict[str, float | None]:
    """Names directly under ``output_prefix`` and their modification times (None for folders/stores)."""
    output_prefix = storage.normalise_uri(output_prefix)
    if storage.is_s3(output_prefix):
        names: dict[str, float | None] = {}
        with _fresh_s3_listings() as fs:
            listing = fs.ls(output_prefix, detail=True) if fs.exists(output_prefix) else []
        for info in listing:
            name = PurePosixPath(info["name"]).name
            stamp = info.get("LastModified")
            names[name] = stamp.timestamp() if info.get("type") == "file" and stamp is not None else None
        return names
    root = Path(output_prefix)
    if not root.is_dir():
        return {}
    return {entry.name: (entry.stat().st_mtime if entry.is_file() else None) for entry in os.scandir(root)}


def decide(scene: SceneFile, output_prefix: str, outputs: dict[str, float | None]) -> SceneDecision:
    """Whether ``scene`` has an up-to-date map among ``outputs`` (from :func:`list_outputs`)."""
    from eoseg.catalog.stac import item_uri_for_map  # pystac: ~0.1 s that `eoseg tile` does not need

    map_uri = join_uri(output_prefix, f"{scene.stem}.tif")
    run = RunOutputs.for_map(map_uri)
    names = {
        key: PurePosixPath(uri).name
        for key, uri in {
            "cog": run.cog,
            "tiles": run.tiles,
            "labels": run.labels,
            "item": item_uri_for_map(run.cog),
        }.items()
    }
    if names["cog"] not in outputs:
        if names["tiles"] in outputs or names["labels"] in outputs:
            return SceneDecision(
                scene, SceneStatus.PARTIAL, map_uri, "no COG, but stores from an interrupted run"
            )
        return SceneDecision(scene, SceneStatus.NEW, map_uri, "no map yet")
    cog_time = outputs[names["cog"]]
    if cog_time is not None and cog_time < scene.modified:
        return SceneDecision(scene, SceneStatus.STALE, map_uri, "the map is older than the scene")
    if names["item"] not in outputs:
        return SceneDecision(
            scene,
            SceneStatus.PARTIAL,
            map_uri,
            f"a COG but no catalogue item ({names['item']}): the run stopped before the end",
        )
    return SceneDecision(scene, SceneStatus.UP_TO_DATE, map_uri, "map and catalogue item are up to date")


def plan_reprocessing(
    scenes_prefix: str,
    output_prefix: str,
    *,
    recursive: bool = False,
    group_by: Literal["file", "folder"] = "file",
) -> list[SceneDecision]:
    """One decision per scene under ``scenes_prefix``: which need a (new) map in ``output_prefix``.

    With ``group_by="folder"`` a scene is an acquisition of many tiles (:func:`list_acquisitions`;
    ``recursive`` then does not apply).

    Raises:
        ConfigurationError: the output prefix is the scenes prefix (maps would overwrite the scenes).
    """
    scenes_prefix = storage.normalise_uri(scenes_prefix)
    output_prefix = storage.normalise_uri(output_prefix)
    if scenes_prefix == output_prefix:
        raise ConfigurationError(
            f"the output prefix {output_prefix} is the scenes prefix: maps are named like "
            "their scenes and would overwrite them. Choose another output prefix."
        )
    if group_by == "folder":
        scenes = list_acquisitions(scenes_prefix, exclude_prefix=output_prefix)
    else:
        scenes = list_scenes(scenes_prefix, recursive=recursive, exclude_prefix=output_prefix)
    outputs = list_outputs(output_prefix)
    return [decide(scene, output_prefix, outputs) for scene in scenes]
