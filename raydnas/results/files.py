"""Reading the JSON files a run or a Tune trial writes, tolerant of a file being written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None if it is missing or not (yet) whole."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One dict per whole line of ``path`` (a line being written is skipped)."""
    rows = []
    try:
        text = path.read_text()
    except OSError:
        return rows
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError:  # a line cut short by a killed writer
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def epoch_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-epoch rows ordered by ``epoch``; a repeated epoch (after a restore) keeps the last."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for r in rows:
        e = r.get("epoch", r.get("training_iteration"))
        if isinstance(e, (int, float)):
            by_epoch[int(e)] = r
    return [by_epoch[e] for e in sorted(by_epoch)]
