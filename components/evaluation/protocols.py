"""Each paper's evaluation protocol, in one table: ``eval.protocol`` picks a row and the row sets everything.

What a protocol decides, per benchmark: the decoding (beams, sampling temperature), the eval-only pre-resize, the
batch size of the reference run, and how image files are opened. The prompts and scorers are LLaVA-1.5's in both
(components.evaluation.benchmarks); only these settings differ, and none of them is in either paper's text.

llava-1.5  LLaVA-1.5's scripts (haotian-liu/LLaVA scripts/v1_5/eval/*.sh, docs/Evaluation.md: "we evaluate the models
           with greedy decoding"; shared/reference/eval.md §1): greedy everywhere, no pre-resize, batch size 1
           (``create_data_loader`` asserts it), ``Image.open(...).convert('RGB')``. Reproduces LLaVA-1.5 Table 4 and
           the LLaVA-1.5 rows of LLaVA-UHD's tables; the arXiv v1 UHD numbers defer to it (no UHD eval code of
           that version exists, shared/reference/uhd.md §7).
uhd-eccv   LLaVA-UHD's own scripts (thunlp/LLaVA-UHD@dd7f6cc, branch LLaVA-UHD-v1: eval.sh, scripts/v1_5/eval/*.sh,
           llava/eval/model_vqa_{loader,science,mmbench}.py; eval.md §5.6, uhd.md §3.2), the code of the released
           checkpoint and of the ECCV Table 1: 3 beams for GQA, ScienceQA, TextVQA, VizWiz and VQAv2, 5 for MME,
           greedy POPE and MMBench (``--num_beams 1``), MMBench-CN sampled (``--temperature 0.2``,
           ``do_sample=True``; ``--top_p`` left at None, so the checkpoint's generation_config decides it: we use
           the model's own). Every image's long side is forced to 1024 (up or down, ``resize_image_keep_ratio``)
           before slicing, except MMBench EN and CN (the line is commented out in model_vqa_mmbench.py).

Sampling is seeded per question (``sampling_seed``), so a rerun writes the same answers; the reference's
unseeded sampling cannot be reproduced draw for draw, only in distribution. Not reproducible either: UHD's POPE
script reads ``llava_pope_test_my.jsonl``, which was never published; we use LLaVA's ``llava_pope_test.jsonl``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Decoding:
    """How one benchmark's answers are generated: ``temperature`` 0 is greedy/beam search, > 0 samples."""

    num_beams: int = 1
    temperature: float = 0.0

    @property
    def sampled(self) -> bool:
        return self.temperature > 0


GREEDY = Decoding()


@dataclass(frozen=True)
class Protocol:
    name: str
    reproduces: str  # the paper table whose numbers this protocol's settings produced
    decoding: Mapping[str, Decoding] = field(default_factory=dict)  # benchmarks not listed: greedy
    pre_resize: int = 0  # long side forced to this before slicing; 0 = off
    no_pre_resize: frozenset[str] = frozenset()  # benchmarks the reference does not pre-resize
    batch_size: int = 1  # the reference run's (eval.batch_size 0 means this)
    image_loading: str = "reference"  # components.slicing.pixels.LOADINGS: the references' Image.open().convert()

    def decoding_for(self, benchmark: str) -> Decoding:
        return self.decoding.get(benchmark, GREEDY)

    def pre_resize_for(self, benchmark: str) -> int:
        return 0 if benchmark in self.no_pre_resize else self.pre_resize


_UHD_BEAMS = {name: Decoding(num_beams=3) for name in ("gqa", "scienceqa", "textvqa", "vizwiz", "vqav2")}

PROTOCOLS: Mapping[str, Protocol] = MappingProxyType({
    "llava-1.5": Protocol(
        "llava-1.5", "LLaVA-1.5 Table 4 (and the LLaVA-1.5 rows of LLaVA-UHD Table 1)"),
    "uhd-eccv": Protocol(
        "uhd-eccv", "LLaVA-UHD ECCV Table 1 (the released checkpoint guozonghao96/llava-uhd-144-13b)",
        decoding=MappingProxyType({**_UHD_BEAMS, "mme": Decoding(num_beams=5),
                                   "mmbench_cn": Decoding(temperature=0.2)}),
        pre_resize=1024, no_pre_resize=frozenset({"mmbench", "mmbench_cn"})),
})


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown eval.protocol {name!r}; known: {list(PROTOCOLS)}") from None


def sampling_seed(uid: Any) -> int:
    """The seed of one sampled answer: a function of the question's id alone, so a rerun, a resumed run or another
    batch order draws the same tokens."""
    digest = hashlib.sha256(repr(uid).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)
