"""The layouts table through Ray Data (a local Ray instance) equals the local-process result."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.slicing.runner import write_layouts

pytestmark = pytest.mark.slow


def test_ray_data_matches_local_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    sizes = [(640, 480), (4000, 1000), (300, 2400), (12, 12), (2048, 2048)] * 4
    paths = []
    for i, size in enumerate(sizes):
        Image.new("RGB", size).save(tmp_path / f"{i}.png")
        paths.append(f"{i}.png")
    paths.append("missing.png")
    pq.write_table(pa.table({"path": paths}), tmp_path / "images.parquet")
    local = write_layouts(tmp_path / "images.parquet", tmp_path, tmp_path / "local.parquet", "uhd", "uhd-eccv",
                          batch_rows=4, workers=1, progress=False)
    remote = write_layouts(tmp_path / "images.parquet", tmp_path, tmp_path / "ray.parquet", "uhd", "uhd-eccv",
                           batch_rows=4, ray_address="local", progress=False)
    assert pq.read_table(tmp_path / "ray.parquet").equals(pq.read_table(tmp_path / "local.parquet"))
    assert remote.metrics() == local.metrics()
    assert remote.metrics()["errors"] == 1
