"""MMBench letter extraction and static CircularEval (lmms-eval ``MMBench_Evaluator`` port, no GPT judge).

Reference: EvolvingLMMs-Lab/lmms-eval ``lmms_eval/tasks/mmbench/mmbench_evals.py`` (``can_infer_option``,
``can_infer_text``, ``can_infer``, ``eval_sub_data``, ``eval_result``), itself a port of OpenCompass/VLMEvalKit.
Rows whose letter ``can_infer`` cannot settle go to :func:`extract_mcq_answer` (the ``mmbench_en_dev_static``
path) instead of the GPT judge.
"""

from __future__ import annotations

import math
import re
import string
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

OPTION_LETTERS = "ABCD"
_CIRCULAR = 1_000_000
_TUPS = (("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."),
         (":", ""), (":", ","), (":", "."), (":", ")"), (":", ")."))  # fmt: skip


def _is_absent(value: Any) -> bool:
    """A missing option: None (JSON null) or a float NaN (pandas' reading of an empty TSV cell)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def build_choices(row: Mapping[str, Any]) -> dict[str, str]:
    """``{letter: option text}`` for A-D, skipping absent options (reference ``build_choices``)."""
    return {ch: row[ch] for ch in OPTION_LETTERS if ch in row and not _is_absent(row[ch])}


def can_infer_option(answer: str, num_choice: int = 5) -> str | bool:
    """Letter heuristics. Letters A-E are always candidates; an "A" in a string of more than 3 tokens is
    treated as an article (reference quirk: that check breaks the bare-letter loop on its first pass)."""
    choices = string.ascii_uppercase[:num_choice]
    if "Failed to obtain answer via API" in answer:
        return False
    splits = [x.strip() for x in answer.split()]

    def count(prefix: str = "", suffix: str = "") -> int:
        return sum(1 for c in choices if prefix + c + suffix in splits)

    if count() == 1:
        for ch in choices:
            if "A" in splits and len(splits) > 3:
                break
            if ch in splits:
                return ch
    for pre, suf in _TUPS:
        if count(pre, suf) == 1:
            for ch in choices:
                if pre + ch + suf in splits:
                    return ch
    return False


def can_infer_text(answer: str, choices: Mapping[str, Any]) -> str | bool:
    """The unique option whose lower-cased text is a substring of the lower-cased answer, else False."""
    answer = answer.lower()
    cands = [k for k, v in choices.items() if str(v).lower() in answer]
    return cands[0] if len(cands) == 1 else False


def can_infer(answer: str, choices: Mapping[str, Any]) -> str | bool:
    """lmms-eval ``MMBench_Evaluator.can_infer``: option-letter heuristics, then option-text match.

    Returns the letter, or False when undecided.
    """
    copt = can_infer_option(answer)
    return copt if copt else can_infer_text(answer, choices)


_DECLARATION = re.compile(
    r"(?<![A-Za-z])(?:(?:the|my)\s+)?(?:(?:correct|best|final)\s+)?(?:answer|option|choice)\s*(?:is\b|[:=])\s*"
    r"\(?([A-Za-z])\)?(?![A-Za-z])",
    re.IGNORECASE,
)
_PAREN = re.compile(r"(?<![A-Za-z])\(([A-Z])\)(?![A-Za-z])")
_LEADING = re.compile(r"^([A-Z])(?:$|[\s.):,])")


def extract_mcq_answer(response: str, choices: Iterable[str] | None = None) -> str:
    """Static fallback letter extraction for rows ``can_infer`` leaves open; ``""`` when it abstains.

    A conservative reconstruction of lmms-eval's ``_task_utils/mcq_extract.py::extract_mcq_answer`` at the commit
    the goldens were made with (that exact revision is not in our reference store; the one we could read is a later
    rewrite that disagrees with the goldens on "b" and "A cat is on the mat"). Rules, first hit wins:
    1. the last declaration "answer is X" / "Answer: X" / "option X" (any case) -> X;
    2. a single upper-case parenthesised letter "(C)" -> C;
    3. an upper-case letter at the very start followed by the end, a space or ``.):,`` -> that letter.
    The letter must be one of ``choices`` (default A-D) or the result is ``""``. Lower-case bare letters abstain.
    """
    allowed = {c.upper() for c in (choices or OPTION_LETTERS)}
    text = response.strip()
    if not text:
        return ""
    declared = [m.group(1).upper() for m in _DECLARATION.finditer(text)]
    if declared:
        return declared[-1] if declared[-1] in allowed else ""
    parens = {m.group(1) for m in _PAREN.finditer(text)}
    if len(parens) == 1:
        letter = parens.pop()
        return letter if letter in allowed else ""
    if len(parens) > 1:
        return ""
    lead = _LEADING.match(text)
    if lead:
        return lead.group(1) if lead.group(1) in allowed else ""
    return ""


def _row_letter(row: Mapping[str, Any]) -> tuple[str | bool, str | bool]:
    """(prefetched letter or False, final letter after the static fallback)."""
    choices = build_choices(row)
    pred = str(row["prediction"])
    pre = can_infer(pred, dict(choices))
    if pre:
        return pre, pre
    return False, extract_mcq_answer(pred, list(choices)) or False


def mmbench_answer_letter(row: Mapping[str, Any]) -> str | bool:
    """The option letter CircularEval reads from ``row["prediction"]`` (``can_infer``, then the static fallback);
    False when neither settles one: the answer is unparseable."""
    return _row_letter(row)[1]


def _l2(row: Mapping[str, Any]) -> Any:
    for key in ("l2-category", "L2-category", "l2_category"):
        if key in row:
            return row[key]
    return None


def mmbench_circular(rows: Sequence[Mapping[str, Any]]) -> dict:
    """Static CircularEval over MMBench TSV-like rows (lmms-eval ``eval_result`` + ``eval_sub_data``).

    ``rows``: one dict per TSV row and circular pass: ``index`` (int; pass k of question q has ``k*1_000_000+q``),
    ``prediction`` (raw model text), ``answer`` (gold letter of that pass), ``A``..``D`` (option text, None/NaN when
    absent), ``category`` and ``L2-category`` (or ``l2-category``); other TSV columns are ignored.

    A main question (index < 1e6) scores 1 only if every row with ``index % 1e6 == q`` is answered right. As in the
    reference, all rows' letters are prefetched with ``can_infer`` first and any wrong prefetched letter fails the
    question; the rest go through :func:`extract_mcq_answer` and any miss fails it. Rows without a main row are
    ignored (the reference iterates main rows only).

    Returns ``overall_acc`` (mean hit), ``category_acc`` / ``l2_category_acc`` ({name: mean hit}, sorted by name as
    pandas' groupby does), ``per_question_hit`` ({main index (int): 0/1}) and ``single_pass_acc_main_copies``
    (plain accuracy of the main rows alone, the number VLMEvalKit#141 confuses with the circular one).
    Raises ValueError when there is no main row.
    """
    data = sorted(rows, key=lambda r: int(r["index"]))
    main = [r for r in data if int(r["index"]) < _CIRCULAR]
    if not main:
        raise ValueError("mmbench_circular: no main rows (index < 1e6)")
    groups: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for r in data:
        groups[int(r["index"]) % _CIRCULAR].append(r)

    hits: dict[int, int] = {}
    single: list[int] = []
    for r in main:
        idx = int(r["index"])
        single.append(int(_row_letter(r)[1] == r["answer"]))
        if idx in hits:
            continue
        letters = [_row_letter(s) for s in groups[idx]]
        hit = 1
        for s, (pre, _) in zip(groups[idx], letters, strict=True):
            if pre and pre != s["answer"]:
                hit = 0
                break
        if hit:
            for s, (pre, final) in zip(groups[idx], letters, strict=True):
                if not pre and final != s["answer"]:
                    hit = 0
                    break
        hits[idx] = hit

    def by(key) -> dict:
        acc: dict[Any, list[int]] = defaultdict(list)
        for r in main:
            acc[key(r)].append(hits[int(r["index"])])
        return {k: sum(v) / len(v) for k, v in sorted(acc.items(), key=lambda kv: str(kv[0]))}

    main_hits = [hits[int(r["index"])] for r in main]
    return {
        "overall_acc": sum(main_hits) / len(main_hits),
        "category_acc": by(lambda r: r.get("category")),
        "l2_category_acc": by(_l2) if any(_l2(r) is not None for r in main) else {},
        "per_question_hit": hits,
        "single_pass_acc_main_copies": sum(single) / len(single),
    }


def mmbench_circular_chance(rows: Sequence[Mapping[str, Any]]) -> float:
    """Expected ``overall_acc`` of :func:`mmbench_circular` for a uniform random letter on every row.

    ``rows``: ``index`` (as in :func:`mmbench_circular`) and ``options`` (how many options that pass offers). A main
    question is a hit only if every one of its passes is, so its chance is the product of 1/options over its
    passes; the mean runs over main questions, as ``overall_acc`` does. Raises ValueError when there is no main row.
    """
    passes: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        passes[int(r["index"]) % _CIRCULAR].append(int(r["options"]))
    main = [int(r["index"]) for r in rows if int(r["index"]) < _CIRCULAR]
    if not main:
        raise ValueError("mmbench_circular_chance: no main rows (index < 1e6)")
    return sum(math.prod(1 / n for n in passes[q]) for q in main) / len(main)
