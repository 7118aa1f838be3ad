"""Tile from s3:// and mosaic to s3:// against a real S3 endpoint on loopback (moto_server process)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from conftest import REAL_SCENES
from rio_cogeo.cogeo import cog_validate

from eoseg.errors import CorruptSceneError, OutputExistsError, SceneNotFoundError
from eoseg.io.storage import s3_filesystem
from eoseg.mosaic.cog import mosaic_to_cog
from eoseg.tile.stage import tile_scene

pytestmark = pytest.mark.s3


def test_tile_from_s3_and_mosaic_to_s3(s3_bucket, tmp_path, shared_data):
    fs = s3_filesystem()
    scene_uri = f"{s3_bucket}/scenes/RGB.byte.tif"
    fs.put_file(str(REAL_SCENES["landsat"]), scene_uri)
    store_uri = f"{s3_bucket}/stores/landsat.zarr"
    cog_uri = f"{s3_bucket}/maps/landsat_b1.tif"

    info = tile_scene(scene_uri, store_uri, chunk_size=256, show_progress=False)
    assert info.source_uri == scene_uri and info.complete
    mosaic_to_cog(store_uri, cog_uri, band=1, show_progress=False)

    fs.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_bucket}/maps")) == ["landsat_b1.tif"]
    local = tmp_path / "downloaded.tif"
    fs.get_file(cog_uri, str(local))
    assert cog_validate(str(local), quiet=True) == (True, [], [])
    with rasterio.open(REAL_SCENES["landsat"]) as src, rasterio.open(local) as out:
        np.testing.assert_array_equal(out.read(1), src.read(1))
        assert (out.crs, out.transform, out.nodata) == (src.crs, src.transform, src.nodata)

    with pytest.raises(OutputExistsError):
        mosaic_to_cog(store_uri, cog_uri, band=1, show_progress=False)


def test_truncated_upload_on_s3_is_refused_and_leaves_nothing(s3_bucket, shared_data):
    fs = s3_filesystem()
    data = REAL_SCENES["naip"].read_bytes()
    scene_uri = f"{s3_bucket}/incoming/naip.tif"
    with fs.open(scene_uri, "wb") as handle:
        handle.write(data[: len(data) // 2])
    store_uri = f"{s3_bucket}/stores/naip.zarr"
    with pytest.raises(CorruptSceneError, match=r"s3://.*naip\.tif"):
        tile_scene(scene_uri, store_uri, chunk_size=256, show_progress=False)
    fs.invalidate_cache()
    assert not fs.exists(store_uri)


def test_missing_s3_object(s3_bucket, tmp_path):
    with pytest.raises(SceneNotFoundError, match=r"s3://.*/nothing-here\.tif: scene not found"):
        tile_scene(f"{s3_bucket}/nothing-here.tif", str(tmp_path / "x.zarr"), show_progress=False)
    assert not (tmp_path / "x.zarr").exists()
