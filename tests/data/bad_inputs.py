"""A corpus of bad (and unusual but valid) LLaVA inputs, generated in code: images + one annotation file.

`build_corpus(root)` writes `root/images/...`, `root/outside.jpg` (a real image outside the image root,
which an unsafe path must never reach) and `root/annotations.json`, and returns the cases: one per
sample, with the reason codes it must end with (an empty set: valid).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

NON_UTF8_MARK = "@@NON_UTF8@@"  # replaced by raw invalid bytes in the written file
ESCAPE_MARK = "@@ESCAPE@@"  # replaced by the JSON escape \udc80: valid JSON, a lone surrogate once parsed


@dataclass
class Case:
    name: str
    sample: object  # what goes into the JSON list
    reasons: set[str] = field(default_factory=set)  # expected reason codes; empty: valid
    size: tuple[int, int] | None = None  # expected (width, height) of a valid image sample


def patch_png_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims (width, height), with the IHDR CRC recomputed so decoders accept the header."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + data[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return data[:16] + ihdr + crc + data[33:]


def _png_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kw)
    return buf.getvalue()


def write_images(images: Path) -> None:
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.new("RGB", (64, 48), (200, 30, 40)).save(images / "good.jpg")
    Image.new("CMYK", (40, 30), (10, 200, 30, 0)).save(images / "cmyk.jpg")
    grey16 = Image.fromarray(rng.integers(0, 65535, (30, 40), dtype=np.uint16).astype(np.int32), mode="I")
    grey16.convert("I;16").save(images / "grey16.png")
    palette = Image.new("P", (40, 30), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.save(images / "palette_t.png", transparency=0)
    Image.new("LA", (40, 30), (120, 200)).save(images / "la.png")
    Image.new("1", (40, 30), 1).save(images / "one_bit.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: a 400x100 file is displayed 100x400
    Image.new("RGB", (400, 100), (0, 90, 200)).save(images / "rotated.jpg", exif=exif)
    Image.new("RGB", (1, 1), (1, 2, 3)).save(images / "tiny.png")
    Image.new("L", (1, 20000), 128).save(images / "tall.png")
    noisy = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, "JPEG", quality=90)
    (images / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # header intact
    (images / "empty.jpg").write_bytes(b"")
    (images / "text.jpg").write_text("this is not a JPEG\n")
    small = _png_bytes(Image.new("RGB", (8, 8), (5, 5, 5)))
    (images / "bomb.png").write_bytes(patch_png_size(small, 50000, 50000))
    (images / "wide.png").write_bytes(patch_png_size(small, 70000, 1))  # pixels fine, side > 65535
    (images / "sub").mkdir(exist_ok=True)
    Image.new("RGB", (10, 20)).save(images / "sub" / "nested.png")


def _turns(*values: str, roles=("human", "gpt")) -> list[dict]:
    return [{"from": roles[i % 2], "value": v} for i, v in enumerate(values)]


def cases(root: Path) -> list[Case]:
    q, a = "<image>\nWhat is in the picture?", "A red square."
    img = "good.jpg"

    def image_case(name, image, reasons=(), size=None, conv=None):
        return Case(name, {"id": name, "image": image, "conversations": conv or _turns(q, a)}, set(reasons), size)

    return [
        image_case("ok_jpg", img, size=(64, 48)),
        image_case("ok_token_at_end", img, conv=_turns("Write a terse but informative summary of the picture.\n"
                                                      "<image>", "a red square"), size=(64, 48)),
        image_case("ok_multi_turn", img, conv=_turns(q, a, "And the colour?", "Red.", "Sure?", "Yes."),
                   size=(64, 48)),
        Case("ok_text_only", {"id": "ok_text_only", "conversations": _turns("Tell me a joke.", "No.")}),
        Case("ok_int_id", {"id": 12345, "image": img, "conversations": _turns(q, a)}, size=(64, 48)),
        image_case("ok_dotted_path", "./sub/../good.jpg", size=(64, 48)),
        image_case("ok_nested", "sub/nested.png", size=(10, 20)),
        image_case("cmyk", "cmyk.jpg", size=(40, 30)),
        image_case("grey16", "grey16.png", size=(40, 30)),
        image_case("palette_transparency", "palette_t.png", size=(40, 30)),
        image_case("la", "la.png", size=(40, 30)),
        image_case("one_bit", "one_bit.png", size=(40, 30)),
        image_case("exif_rotated", "rotated.jpg", size=(100, 400)),
        image_case("tiny_1x1", "tiny.png", size=(1, 1)),
        image_case("tall_1x20000", "tall.png", size=(1, 20000)),
        image_case("truncated", "truncated.jpg", size=(400, 300)),  # valid on headers; image_truncated decoded
        image_case("no_image_token", img, {"missing_image_token"}, conv=_turns("What is this?", a)),
        image_case("two_image_tokens", img, {"multiple_image_tokens"}, conv=_turns("<image>\n<image>\nHm?", a)),
        image_case("later_image_token", img, {"unexpected_image_token"},
                   conv=_turns(q, a, "<image>\nAnd this one?", "Blue.")),
        Case("text_only_with_token", {"id": "text_only_with_token", "conversations": _turns("<image>\nHi", "Hello")},
             {"unexpected_image_token"}),
        # gpt first: roles are wrong, the first turn lacks <image> and the human turn after it has a stray one
        image_case("gpt_first", img, {"bad_roles", "missing_image_token", "unexpected_image_token"},
                   conv=_turns(a, q, roles=("gpt", "human"))),
        image_case("user_role", img, {"bad_roles"}, conv=_turns(q, a, roles=("user", "gpt"))),
        image_case("empty_turn", img, {"empty_turn"}, conv=_turns(q, "")),
        image_case("blank_turn", img, {"empty_turn"}, conv=_turns(q, "  \n\t")),
        image_case("bad_roles_and_empty", img, {"bad_roles", "empty_turn"},
                   conv=[{"from": "human", "value": q}, {"from": "human", "value": ""}]),
        image_case("dup", img, size=(64, 48)),
        Case("dup#2", {"id": "dup", "image": img, "conversations": _turns(q, "another answer")}, {"duplicate_id"}),
        image_case("non_utf8", img, {"non_utf8"}, conv=_turns(q, f"caf{NON_UTF8_MARK} au lait")),
        image_case("surrogate_bytes", img, {"non_utf8"}, conv=_turns(q, "encoded \ud800 surrogate")),  # CESU bytes
        image_case("lone_surrogate_escape", img, {"non_utf8"}, conv=_turns(q, f"lone {ESCAPE_MARK} escape")),
        image_case("dotdot_path", "../outside.jpg", {"unsafe_path"}),
        image_case("dotdot_deep", "sub/../../outside.jpg", {"unsafe_path"}),
        image_case("absolute_path", str(root / "outside.jpg"), {"unsafe_path"}),
        image_case("odd_turns", img, {"malformed"}, conv=_turns(q, a, "one more?")),
        Case("not_an_object", "just a string", {"malformed"}),
        Case("no_conversations", {"id": "no_conversations", "image": img}, {"malformed"}),
        image_case("value_not_a_string", img, {"malformed"}, conv=[{"from": "human", "value": q},
                                                                    {"from": "gpt", "value": 5}]),
        Case("image_list", {"id": "image_list", "image": [img, img], "conversations": _turns(q, a)}, {"malformed"}),
        image_case("missing_file", "missing.jpg", {"image_missing"}),
        image_case("zero_byte", "empty.jpg", {"image_unreadable"}),
        image_case("text_as_jpg", "text.jpg", {"image_unreadable"}),
        image_case("bomb_50000x50000", "bomb.png", {"image_too_large"}),
        image_case("side_70000", "wide.png", {"image_bad_size"}),
    ]


def build_corpus(root: Path) -> tuple[Path, Path, list[Case]]:
    """Write the images and `annotations.json`; return (annotation file, image root, cases in file order)."""
    image_root = root / "images"
    write_images(image_root)
    Image.new("RGB", (32, 32)).save(root / "outside.jpg")
    all_cases = cases(root)
    parts = []
    for case in all_cases:
        text = json.dumps(case.sample, ensure_ascii=False).encode("utf-8", "surrogatepass")
        text = text.replace(NON_UTF8_MARK.encode(), b"\xe9\xff")  # latin-1 e-acute + 0xff
        parts.append(text.replace(ESCAPE_MARK.encode(), b"\\udc80"))
    path = root / "annotations.json"
    path.write_bytes(b"[\n" + b",\n".join(parts) + b"\n]\n")
    return path, image_root, all_cases
