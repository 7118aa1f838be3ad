"""Which scenes need a (new) map: listing a prefix, comparing with the outputs (plain functions)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from eoseg.catalog.acquisitions import (
    SceneStatus,
    list_acquisitions,
    list_scenes,
    map_uri_for,
    plan_reprocessing,
    reference_for,
    scene_stem,
)
from eoseg.catalog.stac import item_uri_for_map
from eoseg.errors import ConfigurationError, SceneNotFoundError
from eoseg.outputs import RunOutputs


def _touch(path, *, mtime: float | None = None, data: bytes = b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _finished_outputs(scene, output_prefix, *, mtime: float):
    """What a finished run leaves: COG (at ``mtime``), stores, quick-look, and the STAC item last."""
    run = RunOutputs.for_map(map_uri_for(str(scene), str(output_prefix)))
    _touch(Path(run.cog), mtime=mtime)
    for store in (run.tiles, run.labels):
        os.makedirs(store, exist_ok=True)
    _touch(Path(run.quicklook), mtime=mtime)
    _touch(Path(item_uri_for_map(run.cog)), mtime=mtime)
    return run


def test_list_scenes_finds_tifs_with_mtimes_and_references(tmp_path):
    scenes = tmp_path / "scenes"
    _touch(scenes / "b.tif", mtime=1000)
    _touch(scenes / "a.TIFF", mtime=2000)
    _touch(scenes / "a.reference.geojson")
    _touch(scenes / "b.reference.tif")  # a reference map, not a scene
    _touch(scenes / ".c.tif.partial-1234")  # an unfinished copy
    _touch(scenes / ".hidden.tif")
    _touch(scenes / "notes.txt")
    _touch(scenes / "sub" / "d.tif")
    found = list_scenes(str(scenes))
    assert [scene.name for scene in found] == ["a.TIFF", "b.tif"]
    assert [scene.modified for scene in found] == [2000, 1000]
    assert found[0].reference_uri == str(scenes / "a.reference.geojson")
    assert found[1].reference_uri == str(scenes / "b.reference.tif")
    assert reference_for(str(scenes / "b.tif")) == str(scenes / "b.reference.tif")
    assert [scene.stem for scene in list_scenes(str(scenes), recursive=True)] == ["a", "b", "d"]
    assert scene_stem("s3://bucket/x/m_1_20090818.tiff") == "m_1_20090818"


def test_plan_marks_new_partial_stale_and_up_to_date(tmp_path):
    scenes, maps = tmp_path / "scenes", tmp_path / "maps"
    now = time.time()
    new = _touch(scenes / "new.tif", mtime=now - 100)
    done = _touch(scenes / "done.tif", mtime=now - 100)
    replaced = _touch(scenes / "replaced.tif", mtime=now - 10)
    no_cog = _touch(scenes / "no_cog.tif", mtime=now - 100)
    no_item = _touch(scenes / "no_item.tif", mtime=now - 100)
    _finished_outputs(done, maps, mtime=now - 50)
    _finished_outputs(replaced, maps, mtime=now - 50)  # mapped before the scene was replaced
    interrupted = _finished_outputs(no_cog, maps, mtime=now - 50)
    os.unlink(interrupted.cog)
    os.unlink(item_uri_for_map(interrupted.cog))
    cog_only = _finished_outputs(no_item, maps, mtime=now - 50)
    os.unlink(item_uri_for_map(cog_only.cog))

    plan = {decision.scene.stem: decision for decision in plan_reprocessing(str(scenes), str(maps))}
    assert {stem: d.status for stem, d in plan.items()} == {
        "new": SceneStatus.NEW,
        "done": SceneStatus.UP_TO_DATE,
        "replaced": SceneStatus.STALE,
        "no_cog": SceneStatus.PARTIAL,
        "no_item": SceneStatus.PARTIAL,
    }
    assert plan["new"].map_uri == str(maps / "new.tif")
    assert [stem for stem, d in plan.items() if d.needs_processing] == [
        "new",
        "no_cog",
        "no_item",
        "replaced",
    ]
    assert new.exists()

    # Once every map is written (after its scene), a second plan has nothing to do.
    for stem in ("new", "replaced", "no_cog", "no_item"):
        _finished_outputs(scenes / f"{stem}.tif", maps, mtime=now)
    assert not any(d.needs_processing for d in plan_reprocessing(str(scenes), str(maps)))


def test_output_prefix_inside_the_scenes_prefix_is_left_out(tmp_path):
    scenes = tmp_path / "scenes"
    scene = _touch(scenes / "a.tif", mtime=time.time() - 100)
    _finished_outputs(scene, scenes / "maps", mtime=time.time())
    plan = plan_reprocessing(str(scenes), str(scenes / "maps"), recursive=True)
    assert [(d.scene.stem, d.status) for d in plan] == [("a", SceneStatus.UP_TO_DATE)]


def test_bad_prefixes_are_refused(tmp_path):
    scenes = tmp_path / "scenes"
    _touch(scenes / "a.tif")
    _touch(scenes / "x" / "a.tif")
    with pytest.raises(ConfigurationError, match="overwrite them"):
        plan_reprocessing(str(scenes), str(scenes))
    with pytest.raises(ConfigurationError, match=re.escape("both be mapped to a.tif")):
        list_scenes(str(scenes), recursive=True)
    with pytest.raises(SceneNotFoundError, match="no such directory"):
        list_scenes(str(tmp_path / "missing"))


@pytest.mark.s3
def test_plan_on_s3_uses_object_times(s3_bucket, tmp_path):
    from eoseg.io.storage import s3_filesystem

    fs = s3_filesystem()
    fs.pipe_file(f"{s3_bucket}/incoming/a.tif", b"scene a")
    fs.pipe_file(f"{s3_bucket}/incoming/b.tif", b"scene b")
    fs.pipe_file(f"{s3_bucket}/incoming/.b.tif.partial", b"half")
    time.sleep(1.1)  # S3 times have one-second resolution
    fs.pipe_file(f"{s3_bucket}/maps/a.tif", b"map a")
    fs.pipe_file(f"{s3_bucket}/maps/a.item.json", b"{}")
    plan = {d.scene.stem: d for d in plan_reprocessing(f"{s3_bucket}/incoming", f"{s3_bucket}/maps")}
    assert {stem: d.status for stem, d in plan.items()} == {"a": SceneStatus.UP_TO_DATE, "b": SceneStatus.NEW}
    assert plan["b"].map_uri == f"{s3_bucket}/maps/b.tif"
    time.sleep(1.1)
    fs.pipe_file(f"{s3_bucket}/incoming/a.tif", b"scene a, reprocessed upstream")
    plan = {d.scene.stem: d for d in plan_reprocessing(f"{s3_bucket}/incoming", f"{s3_bucket}/maps")}
    assert plan["a"].status is SceneStatus.STALE
    # The listing is not kept: an object written afterwards by another process is seen at once.
    fs.pipe_file(f"{s3_bucket}/maps/b.tif", b"map b")
    assert s3_filesystem().exists(f"{s3_bucket}/maps/b.tif")
    with pytest.raises(SceneNotFoundError, match="bucket"):
        list_scenes("s3://no-such-bucket-eoseg/incoming")


def test_each_sub_folder_is_one_acquisition_of_many_tiles(tmp_path):
    scenes, maps = tmp_path / "scenes", tmp_path / "scenes" / "maps"
    for year, mtime in (("2023", 1000), ("2024", 2000)):  # the same tile names every year
        _touch(scenes / year / "tile_b.tif", mtime=mtime)
        _touch(scenes / year / "deeper" / "tile_a.tif", mtime=mtime + 1)
        _touch(scenes / year / "tile_a.reference.tif")  # not a tile
    _touch(scenes / "single.tif", mtime=500)
    _touch(maps / "2023.tif")  # outputs under the scenes prefix are not scenes
    found = list_acquisitions(str(scenes), exclude_prefix=str(maps))
    assert [(scene.stem, len(scene.tiles), scene.modified) for scene in found] == [
        ("2023", 2, 1001),
        ("2024", 2, 2001),
        ("single", 0, 500),
    ]
    assert found[0].tiles == (
        str(scenes / "2023" / "deeper" / "tile_a.tif"),
        str(scenes / "2023" / "tile_b.tif"),
    )
    # An acquisition is up to date until one of its tiles is newer than its map.
    for name in ("2023", "2024", "single"):
        _finished_outputs(scenes / f"{name}.tif", maps, mtime=3000)
    plan = plan_reprocessing(str(scenes), str(maps), group_by="folder")
    assert [(d.scene.stem, d.status) for d in plan] == [
        ("2023", SceneStatus.UP_TO_DATE),
        ("2024", SceneStatus.UP_TO_DATE),
        ("single", SceneStatus.UP_TO_DATE),
    ]
    _touch(scenes / "2024" / "tile_c.tif", mtime=4000)
    plan = plan_reprocessing(str(scenes), str(maps), group_by="folder")
    assert [d.status for d in plan] == [SceneStatus.UP_TO_DATE, SceneStatus.STALE, SceneStatus.UP_TO_DATE]
    assert plan[1].map_uri == str(maps / "2024.tif") and len(plan[1].scene.tiles) == 3
    _touch(scenes / "2024.tif")
    with pytest.raises(ConfigurationError, match=r"2024/ and .*2024.tif would both be mapped to 2024.tif"):
        list_acquisitions(str(scenes))


def test_acquisition_folders_under_an_s3_prefix(s3_bucket):
    from eoseg.io.storage import s3_filesystem

    fs = s3_filesystem()
    for key in ("2023/tile_a.tif", "2023/tile_b.tif", "2024/tile_a.tif", "2024/.tile_b.tif.partial"):
        fs.pipe_file(f"{s3_bucket}/city/{key}", b"tile")
    plan = plan_reprocessing(f"{s3_bucket}/city", f"{s3_bucket}/maps", group_by="folder")
    assert [(d.scene.stem, d.scene.tiles, d.map_uri, d.status) for d in plan] == [
        ("2023", (f"{s3_bucket}/city/2023/tile_a.tif", f"{s3_bucket}/city/2023/tile_b.tif"),
         f"{s3_bucket}/maps/2023.tif", SceneStatus.NEW),
        ("2024", (f"{s3_bucket}/city/2024/tile_a.tif",), f"{s3_bucket}/maps/2024.tif", SceneStatus.NEW),
    ]  # fmt: skip
