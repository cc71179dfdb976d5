"""The adapters read both benchmark layouts: the project's (what the embedded dataset writes) and LLaVA's
playground/data/eval (eval.zip plus what docs/Evaluation.md has users add: MME/, gqa/data/{images,
testdev_balanced_questions.json}, the MMBench-CN TSV under mmbench_cn/ as scripts/v1_5/eval/mmbench_cn.sh reads it)."""

import shutil
from pathlib import Path

import pytest

from components.data.synthetic import DatasetWriter, SyntheticSpec
from components.data.synthetic_eval import write_benchmarks
from components.evaluation.benchmarks import ADAPTERS, BenchmarkMissing, benchmark_root, load_benchmark

SEVEN = ("textvqa", "pope", "gqa", "mme", "scienceqa", "mmbench", "mmbench_cn")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> tuple[Path, Path]:
    """(project layout, the same files laid out as LLaVA's playground/data/eval)."""
    out = tmp_path_factory.mktemp("synthetic")
    write_benchmarks(DatasetWriter(out), SyntheticSpec(eval_scenes=1))
    project, llava = out / "eval", out / "playground_eval"
    shutil.copytree(project, llava)
    (llava / "mme").rename(llava / "MME")
    (llava / "gqa" / "data").mkdir()
    for name in ("images", "testdev_balanced_questions.json"):
        (llava / "gqa" / name).rename(llava / "gqa" / "data" / name)
    (llava / "mmbench_cn").mkdir()
    (llava / "mmbench" / "mmbench_dev_cn_20231003.tsv").rename(llava / "mmbench_cn" / "mmbench_dev_cn_20231003.tsv")
    return project, llava


def _fixed_answers(name, root, questions) -> dict:
    return {q.uid: "Yes" if name in ("pope", "mme") else "A" for q in questions}


@pytest.mark.parametrize("name", SEVEN)
def test_llava_layout_gives_the_same_questions_and_scores(layouts, name):
    project, llava = layouts
    ours, theirs = load_benchmark(name, project), load_benchmark(name, llava)
    assert [(q.uid, q.prompt_text) for q in theirs] == [(q.uid, q.prompt_text) for q in ours]
    assert all(q.image is None or not isinstance(q.image, Path) or q.image.exists() for q in theirs)
    adapter = ADAPTERS[name]
    score = adapter.score(theirs, _fixed_answers(name, llava, theirs), benchmark_root(name, llava))
    assert score["headline"] == adapter.score(ours, _fixed_answers(name, project, ours),
                                              benchmark_root(name, project))["headline"]


def test_llava_folder_names_are_found(layouts):
    _, llava = layouts
    assert benchmark_root("mme", llava).name == "MME" and benchmark_root("mmbench_cn", llava).name == "mmbench_cn"
    assert benchmark_root("mmbench", llava).name == "mmbench"
    assert load_benchmark("gqa", llava)[0].image.parent == llava / "gqa" / "data" / "images"


def test_missing_benchmark_is_reported_under_the_projects_name(tmp_path):
    with pytest.raises(BenchmarkMissing, match=r"eval/mme does not exist"):
        load_benchmark("mme", tmp_path / "eval")
