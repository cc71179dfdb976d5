"""file -> normalized slices: modes, orientation, shapes, and parity with the reference preprocessing."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from components.slicing.headers import read_header
from components.slicing.pixels import SIGLIP, encode_image, load_image, normalize, to_rgb
from components.slicing.strategies import plan_layout


def photo(width, height, seed=0) -> Image.Image:
    """Smooth colour field with some edges: photo-like, so JPEG draft decoding is representative."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(20):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        draw.rectangle((x, y, x + width // 20, y + height // 30), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def jpeg_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def test_normalization_matches_clip_image_processor():
    image = photo(64, 48)
    ours = normalize(image)
    ref = CLIPImageProcessorPil(do_resize=False, do_center_crop=False)(image, return_tensors="np")["pixel_values"][0]
    assert ours.shape == ref.shape == (3, 48, 64)
    assert np.abs(ours - ref).max() < 1e-5


@pytest.mark.parametrize(("strategy", "preset"), [("uhd", "uhd-eccv"), ("uhd", "uhd-arxiv"), ("uhd", "uhd-eccv-eval"),
                                                   ("uhd", "paper"), ("fixed2x2", "fixed2x2"), ("pad336", "pad336"),
                                                   ("anyres", "onevision")])
@pytest.mark.parametrize("size", [(1920, 1080), (500, 2000), (100, 60), (1, 1)])
def test_encoded_shapes_follow_the_layout(strategy, preset, size):
    layout = plan_layout(*size, strategy=strategy, preset=preset)
    enc = encode_image(photo(*size), layout)
    if strategy == "anyres":
        assert enc.overview.shape == (3, 384, 384)
        assert enc.slices.shape == (layout.num_crops - 1, 3, 384, 384)
        return
    assert enc.overview.shape == (3, layout.overview[1], layout.overview[0])
    assert len(enc.slices) == layout.n_slices
    for tile, (w, h) in zip(enc.slices, layout.slices, strict=True):
        assert tile.shape == (3, h, w)
    assert all(a.dtype == np.float32 for a in enc.images)


GREY_LEVEL = 1 / 255 / 0.2613  # one 8-bit step in CLIP-normalized units (largest channel step)


def test_uhd_pixels_equal_the_reference_flow_without_draft():
    """Reference: whole image PIL-bicubic-resized to the grid, cut, CLIPImageProcessor per slice. Our torch
    uint8 antialiased bicubic is PIL's kernel; only the last-bit rounding differs."""
    data = jpeg_bytes(photo(1600, 900))
    layout = plan_layout(1600, 900, "uhd", "uhd-eccv")
    image = Image.open(io.BytesIO(data)).convert("RGB")
    (sw, sh), (cols, rows) = layout.slices[0], layout.grid
    canvas = image.resize((cols * sw, rows * sh), Image.BICUBIC)
    proc = CLIPImageProcessorPil(do_resize=False, do_center_crop=False)
    ref = [proc(canvas.crop((c * sw, r * sh, (c + 1) * sw, (r + 1) * sh)), return_tensors="np")["pixel_values"][0]
           for r in range(rows) for c in range(cols)]
    ref.append(proc(image.resize(layout.overview, Image.BICUBIC), return_tensors="np")["pixel_values"][0])
    exact = encode_image(io.BytesIO(data), layout, draft=False)
    diffs = [np.abs(a - b) for a, b in zip(ref, exact.images, strict=True)]
    assert np.mean([d.mean() for d in diffs]) < 0.05 * GREY_LEVEL
    assert max(d.max() for d in diffs) <= 3 * GREY_LEVEL
    drafted = encode_image(io.BytesIO(jpeg_bytes(photo(4000, 3000))), plan_layout(4000, 3000, "uhd", "uhd-eccv"))
    full = encode_image(io.BytesIO(jpeg_bytes(photo(4000, 3000))), plan_layout(4000, 3000, "uhd", "uhd-eccv"),
                        draft=False)
    mad = np.mean([np.abs(a - b).mean() for a, b in zip(drafted.images, full.images, strict=True)])
    assert mad < 0.01, mad


@pytest.mark.parametrize("size", [(30, 20), (7, 300), (2000, 1500)])
def test_resize_matches_pil_bicubic_up_and_down(size):
    from components.slicing.pixels import resize

    image = photo(640, 480)
    ours = resize(np.asarray(image), size).astype(np.float64)
    ref = np.asarray(image.resize(size, Image.BICUBIC)).astype(np.float64)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).mean() < 0.05 and np.abs(ours - ref).max() <= 3


def test_exif_orientation_is_honoured_for_size_and_pixels():
    image = photo(300, 100)  # displayed landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated by 90 degrees, displayed upright
    data = jpeg_bytes(image.transpose(Image.Transpose.ROTATE_90), exif=exif)
    loaded = load_image(io.BytesIO(data))
    assert loaded.size == (300, 100)
    header = read_header(io.BytesIO(data))
    assert (header.width, header.height, header.orientation) == (300, 100, 6)
    enc = encode_image(io.BytesIO(data), plan_layout(300, 100, "uhd", "uhd-eccv"))
    assert enc.overview.shape[2] > enc.overview.shape[1]  # still landscape
    with pytest.raises(ValueError, match="re-run the layouts stage"):
        encode_image(io.BytesIO(data), plan_layout(100, 300, "uhd", "uhd-eccv"))


def _modes():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    la = Image.new("LA", (8, 8), (10, 0))
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red
    i16 = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    return {"RGBA": (rgba, (255, 255, 255)), "P+transparency": (palette, (255, 255, 255)),
            "LA": (la, (255, 255, 255)), "CMYK": (cmyk, (255, 0, 0)), "I;16": (i16, (255, 255, 255)),
            "L": (Image.new("L", (8, 8), 128), (128, 128, 128)), "1": (Image.new("1", (8, 8), 1), (255, 255, 255))}


@pytest.mark.parametrize("mode", list(_modes()))
def test_any_mode_becomes_rgb(mode):
    image, expected = _modes()[mode]
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((3, 3)) == expected


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_file_round_trip(tmp_path, fmt):
    path = tmp_path / f"deep.{fmt.lower()}"
    Image.fromarray(np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)).save(path, fmt)
    rgb = load_image(path)
    assert rgb.mode == "RGB" and rgb.size == (64, 32)
    values = np.asarray(rgb)[..., 0]
    assert values.min() == 0 and values.max() == 255


def test_siglip_normalization_for_anyres():
    enc = encode_image(Image.new("RGB", (50, 50), (255, 255, 255)), plan_layout(50, 50, "anyres", "onevision"))
    assert np.allclose(enc.overview, 1.0)
    assert np.allclose(normalize(Image.new("RGB", (2, 2), (0, 0, 0)), SIGLIP), -1.0)
