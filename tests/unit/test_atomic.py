"""Tables other stages read are replaced whole or not at all (#13: check, then rename)."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.atomic import write_table_atomically


def test_a_failed_write_leaves_the_previous_table_and_no_partial_file(tmp_path):
    path = tmp_path / "images.parquet"
    write_table_atomically(pa.table({"path": ["a.jpg", "b.jpg"]}), path)
    with pytest.raises(Exception, match="(?i)compression|unsupported|unknown"):
        write_table_atomically(pa.table({"path": ["c.jpg"]}), path, compression="no-such-codec")
    assert pq.read_table(path).column("path").to_pylist() == ["a.jpg", "b.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.parquet"]
    write_table_atomically(pa.table({"path": ["c.jpg"]}), path)
    assert pq.read_table(path).num_rows == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["images.parquet"]
