"""The layouts table under slicing.train_time: rows planned on the train-time size, overview-only counts for
pretraining, and, with everything off, the same bytes as a table laid out without the option."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.slicing.runner import write_layouts
from components.slicing.strategies import plan_layout
from components.slicing.table import LAYOUT_SCHEMA, layout_schema
from components.slicing.train_time import TrainTimeResize, draw, resize_as_grid
from components.slicing.uhd import eval_pre_resize

ECCV = TrainTimeResize(textvqa_long_side=1024, resize_as_grid_p=0.1, seed=0)
SIZES = {"textvqa/train_images/a.jpg": (500, 375), "textvqa/train_images/b.png": (2000, 600),
         "coco/train2017/six.jpg": (1008, 672), **{f"coco/train2017/{i:03d}.jpg": (640, 480) for i in range(60)}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_time_corpus")
    for path, size in SIZES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (90, 120, 200)).save(root / path)
    pq.write_table(pa.table({"path": list(SIZES)}), root / "images.parquet")
    return root


def lay_out(corpus, out, **kw):
    return write_layouts(corpus / "images.parquet", corpus, out, "uhd", "uhd-eccv", batch_rows=7, workers=1,
                         progress=False, **kw)


def test_rows_follow_the_train_time_sizes(corpus, tmp_path):
    summary = lay_out(corpus, tmp_path / "on.parquet", train_time=ECCV, overview_only=True)
    table = pq.read_table(tmp_path / "on.parquet")
    assert table.schema.equals(layout_schema(overview_only=True)) and summary.images == len(SIZES)
    rows = {r["path"]: r for r in table.to_pylist()}
    picked = 0
    for path, size in SIZES.items():
        row = rows[path]
        if "textvqa" in path:
            train_size = eval_pre_resize(*size, 1024)
            assert max(train_size) == 1024
        elif path.endswith("six.jpg"):
            train_size = None  # already 6 slices: never resized, whatever its coin
        else:
            train_size = resize_as_grid(*size, 6, 336) if draw(0, path) < 0.1 else None
            picked += train_size is not None
        assert (row["width"], row["height"]) == size  # the file's size; the training size beside it
        pre = (row["pre_resized_w"], row["pre_resized_h"])
        assert pre == (train_size or (None, None))
        planned = plan_layout(*(train_size or size), "uhd", "uhd-eccv")
        assert row["num_tokens"] == planned.num_tokens and row["n_slices"] == planned.n_slices
        assert row["overview_tokens_spatial_resampler"] == 144 and row["overview_tokens_resampler"] == 64
    assert 0 < picked < 60  # some coins fall each way on 60 images at p = 0.1


def test_all_off_is_the_plain_table_byte_for_byte(corpus, tmp_path):
    lay_out(corpus, tmp_path / "plain.parquet")  # the call as it was before the option existed
    lay_out(corpus, tmp_path / "off.parquet", train_time=TrainTimeResize(), overview_only=False)
    assert (tmp_path / "off.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()
    table = pq.read_table(tmp_path / "off.parquet")
    assert table.schema.equals(LAYOUT_SCHEMA)
    for row in table.to_pylist():
        expected = plan_layout(row["width"], row["height"], "uhd", "uhd-eccv").to_record()
        assert {k: row[k] for k in expected} == expected and row["pre_resized_w"] is None
