"""The `url_list` source kind: a JSON file naming one URL per image (OCR-VQA), expanded into one task each."""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import quote

from ..catalog import SourceFile, check_relative
from .context import DownloadRun, DownloadTask, TaskOutcome, task_for


def expand_url_list(run: DownloadRun, task: DownloadTask, outcome: TaskOutcome) -> None:
    """Turn a url_list file into one task per entry (the first `limit`), or mark the list corrupt."""
    src = task.source
    try:
        data = json.loads((run.root / task.path).read_text())
        entries = data.items() if isinstance(data, dict) else ((e.get("id"), e) for e in data)
        seen: set[str] = set()
        for key, entry in entries:
            if run.limit and len(outcome.items) >= run.limit:
                break
            item = _item_task(run, src, "" if key is None else str(key), entry)
            if item.path not in seen:  # a repeated id is the same file: one row, one download
                seen.add(item.path)
                outcome.items.append(item)
    except (ValueError, AttributeError, TypeError) as err:
        outcome.record = dataclasses.replace(outcome.record, status="corrupt",
                                             error=f"not a JSON list of entries with {src.items_url_key!r}: {err}")
        outcome.items = []


def _item_task(run: DownloadRun, src: SourceFile, key: str, entry) -> DownloadTask:
    url = entry.get(src.items_url_key) if isinstance(entry, dict) else entry
    if "/" in key or "\\" in key or key in ("", ".", ".."):
        # The row keeps a quoted, harmless path: nobody joining it to the root can escape.
        rel = src.items_dest.format(id=quote(key, safe="") or "%00")
        return DownloadTask(rel, None, None, None, "", None, f"refused: entry id {key!r} is not a plain file name")
    rel = check_relative(src.items_dest.format(id=key), "item")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return DownloadTask(rel, None, None, None, "", None, f"entry {key!r} has no http(s) {src.items_url_key}")
    return task_for(run, rel, url, None, None, None)
