"""The files the checkpoint keeper (the driver, :mod:`raydnas.sweep.keeper`) and the trials
(:func:`raydnas.sweep.tune_util.with_tune_checkpoints`) share on local storage, and how they are
read and written. No Ray."""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path

KEEPER_FLAG = ".raydnas_keeper"  # experiment directory: the keeper runs this experiment
POINTER = ".raydnas_checkpoint"  # trial directory: the newest checkpoint Tune registered
LISTED = ".raydnas_listed"  # trial directory: a saved experiment state lists the trial
DONE = ".raydnas_done"  # trial directory: Tune ended the trial (finished, or a scheduler's stop)
HISTORY = "raydnas_reported.json"  # checkpoint directory: the results reported with checkpoints
LISTED_WAIT_S = 300.0  # a trial's first report waits at most this long for LISTED
CKPT_DIR = re.compile(r"checkpoint_\d+")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def marked(path: Path, trial_id: str) -> bool:
    """Whether the marker file ``path`` exists and names ``trial_id`` (a marker of another
    trial that used the directory before does not count)."""
    try:
        return path.read_text().strip() == trial_id
    except OSError:
        return False


def write_history(ckpt_dir: Path, history: list) -> None:
    """Write the results reported so far into a checkpoint directory (:data:`HISTORY`)."""
    def plain(o):
        return o.item() if hasattr(o, "item") else str(o)

    (ckpt_dir / HISTORY).write_text(json.dumps(history, default=plain))


def read_history(ckpt_dir: Path) -> list | None:
    """The results a checkpoint directory holds (:func:`write_history`), or None."""
    try:
        h = json.loads((ckpt_dir / HISTORY).read_text())
    except (OSError, ValueError):
        return None
    return h if isinstance(h, list) else None


def pointer_target(tdir: Path, trial_id: str | None) -> Path | None:
    """The checkpoint directory the keeper's pointer in ``tdir`` names (the newest Tune
    registered for the trial), if it exists and, given ``trial_id``, is that trial's."""
    try:
        p = json.loads((tdir / POINTER).read_text())
        target = tdir / p["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if trial_id is not None and p.get("trial") != trial_id:
        return None
    return target if CKPT_DIR.fullmatch(target.name) and target.is_dir() else None


def crc(path: Path) -> int:
    """CRC-32 of a file's bytes (a saved experiment state on storage against the staged one)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc
