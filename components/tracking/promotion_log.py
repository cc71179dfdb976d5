"""The promotion log: who moved which alias of which model version, when and why, and every rejected promotion.

Two copies of the same records:
- in the registry itself, as registered-model tags `promotion_log.<000001>` (one JSON record each), so the log
  travels with whatever MLFLOW_TRACKING_URI is in use; `uhd rollback` reads this copy;
- appended to a JSONL file in the repository (`reports/registry/promotions.jsonl`), a git-tracked audit trail
  that shows up in review. It is deliberately *not* a DVC out: DVC deletes a stage's outs before re-running it
  (history would be lost) and `uhd promote/rollback` write it outside any stage (the stage would look changed).

Actions: `candidate` (alias candidate set), `promote` (champion moved after the gates passed), `force-promote`
(moved with --force; gate results recorded anyway), `reject` (gates failed, champion unchanged), `rollback`.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from collections.abc import Iterable
from pathlib import Path

from components.tracking.credentials import strip_credentials

TAG_PREFIX = "promotion_log."
CHAMPION_MOVES = ("promote", "force-promote")


def current_user() -> str:
    """$UHD_USER (a CI job can name the person it acts for), else the login name."""
    try:
        return os.environ.get("UHD_USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


def make_record(action: str, model_name: str, version: str | int | None, reason: str,
                from_champion: str | int | None = None, to_champion: str | int | None = None,
                gates: dict | None = None, tracking_uri: str | None = None, **extra) -> dict:
    def as_str(v):
        return None if v is None else str(v)

    return {"timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "user": current_user(),
            "action": action, "model_name": model_name, "version": as_str(version),
            "from_champion": as_str(from_champion), "to_champion": as_str(to_champion), "reason": reason,
            "gates": gates, "tracking_uri": strip_credentials(tracking_uri) if tracking_uri else tracking_uri, **extra}


def append_jsonl(path: str | Path, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:  # append only: history is never rewritten
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tag_key(seq: int) -> str:
    return f"{TAG_PREFIX}{seq:06d}"  # zero-padded so the tag keys sort in log order


def records_from_tags(tags: dict[str, str]) -> list[dict]:
    keys = sorted(k for k in tags if k.startswith(TAG_PREFIX))
    return [json.loads(tags[k]) for k in keys]


def champion_stack(records: Iterable[dict]) -> list[str]:
    """Replay the log: promotions push the new champion, a rollback pops one (so rollback twice goes back twice)."""
    stack: list[str] = []
    for rec in records:
        if rec["action"] in CHAMPION_MOVES and rec.get("to_champion"):
            stack.append(rec["to_champion"])
        elif rec["action"] == "rollback" and stack:
            stack.pop()
    return stack


def rollback_target(records: Iterable[dict], current: str | None) -> str | None:
    """The champion before `current` according to the log, or None when the log holds no earlier one."""
    stack = champion_stack(records)
    while stack and stack[-1] == current:
        stack.pop()
    # if the alias was moved outside this tool, the log's last champion is still the one to go back to
    return stack[-1] if stack else None
