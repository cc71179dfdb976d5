"""`uhd promote [--version N | --alias candidate] --reason TEXT [--force]`: move the registry alias `champion`.

The gates of the register stage (components/tracking/gates.py) are checked against the current champion's
recorded figures; a failing promotion is refused (exit 1) and logged as rejected. `--force` moves the alias
anyway and is logged as `force-promote` with the gate results. Every outcome goes to the promotion log (the
registry's copy and reports/registry/promotions.jsonl).
"""

from __future__ import annotations

import argparse
import json
import sys

from components.config import load_params
from components.tracking.mlflow_logging import resolve_tracking_uri
from components.tracking.registry import GateConfig, Registry, RegistryError, promote


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options shared with cli/rollback.py."""
    parser.add_argument("--reason", required=True, help="why: recorded in the promotion log")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--tracking-uri", default=None, help="default: params tracking.uri, $MLFLOW_TRACKING_URI")
    parser.add_argument("--log", default="reports/registry/promotions.jsonl", help="append-only promotion log")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def open_registry(args) -> tuple[Registry, object]:
    params = load_params(args.params)
    return Registry(params.registry.model_name, resolve_tracking_uri(args.tracking_uri or params.tracking.uri)), params


def report(outcome: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome, indent=2, sort_keys=True))
        return
    verb = {"promote": "promoted", "force-promote": "FORCE-promoted", "rollback": "rolled back to"}
    head = verb.get(outcome.get("action"), "not promoted:")
    print(f"{outcome['model_name']}: {head} version {outcome['version']} (champion was {outcome['champion_before']})")
    for reason in outcome["reasons"]:
        print(f"  - {reason}")
    print(f"  aliases now: {outcome['aliases_after']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uhd promote", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", help="the registered version to promote")
    which.add_argument("--alias", default="candidate", help="promote the version this alias points at")
    parser.add_argument("--force", action="store_true", help="move champion even if the gates fail (logged)")
    add_common(parser)
    args = parser.parse_args(argv)
    registry, params = open_registry(args)
    version = args.version or registry.aliases().get(args.alias)
    if version is None:
        print(f"uhd promote: {registry.name} has no alias {args.alias!r} (run the register stage)", file=sys.stderr)
        return 2
    try:
        outcome = promote(registry, version, args.reason, GateConfig.of(params.registry), args.log, force=args.force)
    except RegistryError as err:
        print(f"uhd promote: {err}", file=sys.stderr)
        return 2
    report(outcome, args.json)
    return 0 if outcome["promoted"] else 1


if __name__ == "__main__":
    sys.exit(main())
