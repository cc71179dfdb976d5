"""eval.protocol: each paper's evaluation settings per benchmark, pinned against the reference scripts
(shared/reference/eval.md §1, §5.6; uhd.md §3.2), the retired keys, seeded MMBench-CN sampling, the pre-resize
that skips MMBench, and the provenance that records the protocol."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from components.config import ConfigError, Params, load_params, parse
from components.data.synthetic import DatasetWriter, SyntheticSpec
from components.data.synthetic_eval import write_benchmarks
from components.evaluation.benchmarks import Question
from components.evaluation.exported_model import provenance
from components.evaluation.protocols import PROTOCOLS, get_protocol, sampling_seed
from components.evaluation.report import write_reports
from components.evaluation.runner import run_benchmark
from components.evaluation.suite import EvalPlan, run_suite
from components.inference.generate import open_rgb
from components.slicing.pixels import load_image
from tests.conftest import REPO

ALL = ("textvqa", "pope", "gqa", "mme", "scienceqa", "mmbench", "mmbench_cn", "vqav2", "vizwiz")

# (num_beams, temperature, pre_resize) per benchmark, as the reference shell scripts pass them
EXPECTED = {
    "llava-1.5": {name: (1, 0.0, 0) for name in ALL},
    "uhd-eccv": {"gqa": (3, 0.0, 1024), "scienceqa": (3, 0.0, 1024), "textvqa": (3, 0.0, 1024),
                 "vizwiz": (3, 0.0, 1024), "vqav2": (3, 0.0, 1024), "mme": (5, 0.0, 1024), "pope": (1, 0.0, 1024),
                 "mmbench": (1, 0.0, 0), "mmbench_cn": (1, 0.2, 0)},
}


@pytest.mark.parametrize("protocol", sorted(EXPECTED))
def test_each_protocol_pins_every_benchmarks_settings(protocol):
    plan = EvalPlan(ALL, protocol=protocol, extreme_aspect=())
    got = {name: (plan.decoding(name).num_beams, plan.decoding(name).temperature, plan.pre_resize(name))
           for name in ALL}
    assert got == EXPECTED[protocol]
    rules = get_protocol(protocol)
    assert rules.batch_size == 1 and rules.image_loading == "reference"  # both references: bs 1, Image.open().convert
    assert plan.effective_batch_size == 8  # the embedded default's explicit batch size is kept ...
    assert EvalPlan(ALL, protocol=protocol, batch_size=0, extreme_aspect=()).effective_batch_size == 1  # ... 0: 1


def test_num_beams_overrides_only_the_beams():
    plan = EvalPlan(ALL, protocol="uhd-eccv", num_beams={"mme": 2, "mmbench_cn": 3}, extreme_aspect=())
    assert plan.beams("mme") == 2 and plan.beams("textvqa") == 3
    assert plan.decoding("mmbench_cn").num_beams == 3 and plan.decoding("mmbench_cn").temperature == 0.2


def test_unknown_protocol_names_the_known_ones():
    with pytest.raises(ValueError, match="llava-1.5"):
        EvalPlan(ALL, protocol="uhd-scripts", extreme_aspect=())


@pytest.mark.parametrize("key,value", [("decoding", "uhd-scripts"), ("pre_resize", 1024)])
def test_retired_eval_keys_name_eval_protocol(key, value):
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["eval"][key] = value
    with pytest.raises(ConfigError, match=rf"eval\.{key} was replaced by eval\.protocol"):
        parse(Params, data)


def test_profiles_use_their_papers_protocol_at_the_references_batch_size():
    expected = {"params.yaml": ("llava-1.5", 8), "params/smoke.yaml": ("llava-1.5", 8),
                "params/paper-7b.yaml": ("llava-1.5", 1), "params/paper-13b.yaml": ("llava-1.5", 1),
                "params/paper-eccv-13b.yaml": ("uhd-eccv", 1)}
    for path, (protocol, batch) in expected.items():
        plan = EvalPlan.from_params(load_params(REPO / path).eval)
        assert (plan.protocol, plan.effective_batch_size) == (protocol, batch), path


def test_sampling_seed_depends_on_the_question_alone():
    assert sampling_seed(7) == sampling_seed(7) != sampling_seed(8)
    assert sampling_seed("7") != sampling_seed(7) and 0 <= sampling_seed(7) < 2**63


@pytest.fixture(scope="module")
def sampled_questions(tmp_path_factory) -> list[Question]:
    root = tmp_path_factory.mktemp("imgs")
    out = []
    for i in range(6):
        path = root / f"{i}.png"
        Image.new("RGB", (40 + 9 * i, 60), (40 * i, 255 - 30 * i, 90)).save(path)
        out.append(Question(i, path, "请直接回答选项字母。" + " A" * i, max_new_tokens=6, temperature=0.2))
    return out


def test_sampled_answers_are_reproducible_and_differ_from_greedy(tiny, sampled_questions, tmp_path):
    model, tok = tiny
    state = torch.random.get_rng_state()
    first = run_benchmark(model, tok, sampled_questions, tmp_path / "a.jsonl", batch_size=8)
    assert torch.equal(torch.random.get_rng_state(), state)  # the run leaves the global generator alone
    torch.manual_seed(12345)  # another global state: the per-question seeds decide the draws
    run_benchmark(model, tok, sampled_questions[::-1], tmp_path / "b.jsonl", batch_size=1)
    assert [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()] == [
        json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()][::-1]
    # a resumed run ends with the same bytes
    run_benchmark(model, tok, sampled_questions[:2], tmp_path / "c.jsonl", batch_size=8)
    run_benchmark(model, tok, sampled_questions, tmp_path / "c.jsonl", batch_size=8)
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    assert all(r["metadata"]["temperature"] == 0.2 and r["metadata"]["seed"] == sampling_seed(r["question_id"])
               for r in first)
    greedy = [Question(q.question_id, q.image, q.prompt_text, q.max_new_tokens) for q in sampled_questions]
    plain = run_benchmark(model, tok, greedy, tmp_path / "greedy.jsonl", batch_size=8)
    assert [r["text"] for r in plain] != [r["text"] for r in first]
    assert "temperature" not in plain[0]["metadata"]  # greedy answers files keep their old shape


@pytest.fixture(scope="module")
def eccv_suite(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    write_benchmarks(DatasetWriter(out), SyntheticSpec(eval_scenes=1))
    plan = EvalPlan(("pope", "mmbench_cn"), protocol="uhd-eccv", batch_size=0, max_new_tokens=2, extreme_aspect=())
    result = run_suite(*tiny, out / "eval", tmp_path_factory.mktemp("out"), plan, log=lambda *_: None)
    return result, plan, out / "eval"


def test_uhd_eccv_pre_resizes_everything_but_mmbench_and_samples_mmbench_cn(eccv_suite):
    result, _, _ = eccv_suite
    pope, cn = result["benchmarks"]["pope"], result["benchmarks"]["mmbench_cn"]
    assert pope["preprocessing"]["pre_resize"] == 1024 and cn["preprocessing"]["pre_resize"] == 0
    assert pope["preprocessing"]["image_loading"] == "reference"
    assert pope["decoding"] == {**pope["decoding"], "protocol": "uhd-eccv", "num_beams": 1, "do_sample": False,
                                "batch_size": 1}
    assert cn["decoding"]["do_sample"] is True and cn["decoding"]["temperature"] == 0.2
    rows = [json.loads(x) for x in Path(cn["answers"]).read_text().splitlines()]
    assert rows and all(r["metadata"]["temperature"] == 0.2 for r in rows)


def test_provenance_records_the_protocol(eccv_suite, tiny):
    _, plan, root = eccv_suite
    prov = provenance("0" * 64, tiny[0], "synthetic", plan, str(root))
    assert prov["protocol"] == "uhd-eccv" and prov["batch_size"] == 1 and prov["image_loading"] == "reference"
    assert "ECCV" in prov["protocol_reproduces"] and "decoding" not in prov and "pre_resize" not in prov
    assert set(PROTOCOLS) == {"llava-1.5", "uhd-eccv"}


def test_results_table_names_the_protocol(eccv_suite, tiny, tmp_path):
    result, plan, root = eccv_suite
    write_reports(result, provenance("0" * 64, tiny[0], "synthetic", plan, str(root)), tmp_path)
    assert "This run's protocol: `uhd-eccv`" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "provenance.json").read_text())["provenance"]["protocol"] == "uhd-eccv"


# ---------------------------------------------------------------------------------------------- image loading


def _rotated_jpeg(path: Path) -> Image.Image:
    """A 60x20 picture stored as 20x60 with EXIF orientation 6 (a phone photo): left half red, right half blue."""
    shown = Image.new("RGB", (60, 20), (255, 0, 0))
    shown.paste((0, 0, 255), (30, 0, 60, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    shown.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=95, exif=exif)
    return shown


def test_project_loading_shows_the_photo_upright_the_references_as_stored(tmp_path):
    path = tmp_path / "rotated.jpg"
    shown = _rotated_jpeg(path)
    project, reference = load_image(path), load_image(path, loading="reference")
    assert project.size == shown.size == (60, 20) and reference.size == (20, 60)
    assert project.getpixel((5, 10))[0] > 200 and project.getpixel((55, 10))[2] > 200  # red left, blue right
    assert reference.mode == project.mode == "RGB"
    assert open_rgb(path, "reference").size == (20, 60) and open_rgb(path).size == (60, 20)


def test_project_loading_composites_transparency_on_white_the_references_drop_alpha(tmp_path):
    path = tmp_path / "rgba.png"
    rgba = Image.new("RGBA", (8, 8), (200, 10, 10, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 4, 8))  # left half fully transparent, stored colour black
    rgba.save(path)
    project, reference = load_image(path), load_image(path, loading="reference")
    assert project.getpixel((1, 1)) == (255, 255, 255) and reference.getpixel((1, 1)) == (0, 0, 0)
    assert project.getpixel((6, 1)) == reference.getpixel((6, 1)) == (200, 10, 10)
    with pytest.raises(ValueError, match="reference"):
        load_image(path, loading="viewer")


def test_embedded_eval_images_load_the_same_either_way(tmp_path):
    """Why the embedded default's answers stay byte-identical under llava-1.5's reference loading: its benchmark
    images are plain RGB JPEG/PNG, with no EXIF rotation and no transparency."""
    write_benchmarks(DatasetWriter(tmp_path), SyntheticSpec(eval_scenes=1))
    files = [p for p in (tmp_path / "eval").rglob("*") if p.suffix in (".jpg", ".png")]
    assert len(files) > 10
    for path in files:
        assert load_image(path).tobytes() == load_image(path, loading="reference").tobytes(), path


def test_batch_size_1_answers_every_question_alone_as_the_references(tiny, tmp_path):
    """No shared image prefix either: under bf16 it changes answers (benchmarks/eval_batching_bf16.py)."""
    model, tok = tiny
    path = tmp_path / "one.png"
    Image.new("RGB", (50, 40), (10, 200, 40)).save(path)
    qs = [Question(f"q{j}", path, f"Question {j}?" + " more" * j, max_new_tokens=3) for j in range(3)]
    calls, original = [], model.generate

    def recording(*args, **kwargs):
        calls.append((kwargs["input_ids"].shape[0], kwargs.get("past_key_values") is not None))
        return original(*args, **kwargs)

    model.generate = recording
    try:
        alone = run_benchmark(model, tok, qs, tmp_path / "bs1.jsonl", batch_size=1)
    finally:
        del model.generate
    assert calls == [(1, False)] * 3
    shared = run_benchmark(model, tok, qs, tmp_path / "bs8.jsonl", batch_size=8)
    assert [r["text"] for r in shared] == [r["text"] for r in alone]  # float32: the same answers either way
