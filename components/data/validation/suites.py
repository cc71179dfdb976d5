"""Great Expectations: the rules as expectation suites, their results as plain data, and the agreement check.

Great Expectations 1.x evaluates the rules (rules.py) as two expectation suites (annotations, images) over
the complete check tables (ephemeral context, pandas data source, result_format COMPLETE with `row` /
`image_index` as unexpected_index_column_names). Nothing is published unless, reason by reason, the rows GX
reports as unexpected are exactly the rows routed to quarantine with that reason (`duplicate_id`: GX lists
every row of a duplicated id; the first occurrence stays valid, the later ones are quarantined); any
disagreement raises `ValidationEngineError`.

With workers != 1, GX is imported in a child process while the stream runs (the import alone takes 3-5 s)
and evaluates the suites there (`GxEngine`); `import_gx` and `evaluate_with_gx` are module-level for that pool.
"""

from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from .rules import Rule


class ValidationEngineError(RuntimeError):
    """Great Expectations and the streamed checks disagree (or GX failed): nothing is published."""


EXAMPLES = 20  # unexpected rows kept per expectation in gx_report.json (all of them are in quarantine.parquet)
_LIST_KEYS = ("partial_unexpected_list", "partial_unexpected_counts", "partial_unexpected_index_list",
              "unexpected_list", "unexpected_index_list")


def import_gx() -> float:
    """Import Great Expectations (3-5 s); returns the seconds it took (0 when already imported)."""
    started = time.perf_counter()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations  # noqa: F401
    return time.perf_counter() - started


def run_gx_suites(tables: dict[str, tuple[pd.DataFrame, tuple[Rule, ...], str]], dataset: str) -> dict:
    """Evaluate each table's rules as a GX 1.x expectation suite (ephemeral context, pandas data source,
    result_format COMPLETE with the table's index column); returns {table: ExpectationSuiteValidationResult}."""
    import_gx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = context.data_sources.add_pandas(name=f"{dataset}-validate")
        results = {}
        for name, (frame, rules, index_column) in tables.items():
            batch_definition = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("all_rows")
            suite = context.suites.add(gx.ExpectationSuite(name=f"{dataset}.{name}"))
            for rule in rules:
                suite.add_expectation(rule.expectation())
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{dataset}.{name}", data=batch_definition, suite=suite))
            results[name] = definition.run(
                batch_parameters={"dataframe": frame},
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [index_column],
                               "return_unexpected_index_query": False},
            )
    return results


def evaluate_with_gx(tables: dict[str, tuple[pd.DataFrame, tuple[Rule, ...], str]], dataset: str) -> dict:
    """Run the suites and reduce each result to plain data (picklable, so this can run in a child process):
    per suite `success`, `statistics`, `expectations` (one summary per expectation, with its rule, reason
    and first unexpected rows), `unexpected` {rule: sorted unexpected index values}, `after_first` {unique
    rule: the unexpected rows that are not the first of their value} and `json` (GX's own result dict,
    unexpected lists cut to EXAMPLES)."""
    payload = {}
    for name, result in run_gx_suites(tables, dataset).items():
        index_column = tables[name][2]
        rules = {rule.name: rule for rule in tables[name][1]}
        unexpected, after_first, expectations = {}, {}, []
        for item in result.results:
            config, res = item.expectation_config, item.result or {}
            rule = rules[config.meta["rule"]]
            if item.exception_info and item.exception_info.get("raised_exception"):
                raise ValidationEngineError(f"GX expectation {config.type} on {rule.column} raised: "
                                            f"{item.exception_info.get('exception_message')}")
            listed = res.get("unexpected_index_list") or []
            unexpected[rule.name] = sorted(int(d[index_column]) for d in listed)
            if rule.kind == "unique":
                after_first[rule.name] = sorted(_after_first(listed, rule.column, index_column))
            expectations.append({
                "rule": rule.name, "reason": rule.reason, "type": config.type, "column": rule.column,
                "kwargs": {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "column")},
                "success": bool(item.success), "element_count": res.get("element_count"),
                "missing_count": res.get("missing_count"), "unexpected_count": res.get("unexpected_count"),
                "examples": [{k: _plain(v) for k, v in d.items()} for d in listed[:5]],
            })
        payload[name] = {
            "success": bool(result.success),
            "statistics": {k: _plain(v) for k, v in result.statistics.items()},
            "expectations": expectations,
            "unexpected": unexpected,
            "after_first": after_first,
            "json": _trimmed(result.to_json_dict()),
        }
    return payload


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _trimmed(data: dict) -> dict:
    for item in data.get("results", []):
        res = item.get("result") or {}
        for key in _LIST_KEYS:
            if isinstance(res.get(key), list) and len(res[key]) > EXAMPLES:
                res[key] = res[key][:EXAMPLES]
                res[f"{key}_truncated_to"] = EXAMPLES
    return data


def _after_first(listed: list[dict], column: str, index_column: str) -> set[int]:
    """GX lists every row of a duplicated value; the policy keeps the first occurrence valid."""
    first: set = set()
    rows = set()
    for item in sorted(listed, key=lambda d: int(d[index_column])):
        value, row = item[column], int(item[index_column])
        if value in first:
            rows.add(row)
        else:
            first.add(value)
    return rows


class GxEngine:
    """Where the suites run: in this process (workers=1), or in a child process that imports GX (3-5 s)
    while the stream runs on this one and is handed the check tables at the end."""

    def __init__(self, in_process: bool):
        self.pool = None if in_process else ProcessPoolExecutor(max_workers=1)
        self.import_s = self.pool.submit(import_gx) if self.pool else None

    def evaluate(self, tables: dict, dataset: str) -> dict:
        if self.pool is None:
            return evaluate_with_gx(tables, dataset)
        return self.pool.submit(evaluate_with_gx, tables, dataset).result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def reconcile_with_gx(name: str, rules: tuple[Rule, ...], gx: dict, streamed: dict[str, set[int]],
                      first_of_duplicates: bool = False) -> None:
    """Reason by reason, GX's unexpected rows must be exactly the rows the stream routed."""
    for reason in dict.fromkeys(rule.reason for rule in rules):
        from_gx: set[int] = set()
        for rule in rules:
            if rule.reason != reason:
                continue
            if rule.name not in gx["unexpected"]:
                raise ValidationEngineError(f"{name}: GX returned no result for rule {rule.name}")
            if rule.kind == "unique" and first_of_duplicates:
                from_gx.update(gx["after_first"][rule.name])
            else:
                from_gx.update(gx["unexpected"][rule.name])
        if from_gx != streamed[reason]:
            only_gx, only_stream = sorted(from_gx - streamed[reason]), sorted(streamed[reason] - from_gx)
            raise ValidationEngineError(
                f"{name}: Great Expectations and the streamed checks disagree on {reason!r}: "
                f"{len(only_gx)} row(s) only GX flags (first: {only_gx[:5]}), "
                f"{len(only_stream)} only the stream flags (first: {only_stream[:5]}); nothing was published")
