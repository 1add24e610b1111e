"""A run of epochs that a checkpoint after every epoch makes resumable: the one loop shared by
a search (:func:`raydnas.run_search`) and an evaluation (:func:`raydnas.run_evaluation`).

A run says what an epoch is and what its checkpoint holds (:class:`ResumableRun`); this module
owns the order, the same for both::

    restore_from(run, ...)   # continue from checkpoint.pt (or its previous copy, if damaged)
    run_epochs(run, ...)     # per epoch: run it, append its record, save the checkpoint
                             # atomically, write the outputs, log to TensorBoard, report;
                             # until the last epoch or a stop (raydnas.stop)

Running it again continues where it stopped; a finished run does nothing and returns its last
record. A report callback (Ray Tune's) always sees a checkpoint that holds the epoch reported.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

from . import checkpoint as ckpt
from .stop import ended

Report = Callable[[dict, Path], None]
Log = Callable[[str], None]


class ResumableRun(ABC):
    """The contract of a resumable run: ``history`` (one record per completed epoch),
    ``total_epochs``, and the five methods below."""

    history: list[dict[str, Any]]
    total_epochs: int

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return len(self.history)

    def finished(self) -> bool:
        """All epochs ran, or the last record says the run stopped (:func:`raydnas.stop.ended`)."""
        return self.epoch >= self.total_epochs or ended(self.history[-1] if self.history
                                                        else None)

    @abstractmethod
    def run_epoch(self) -> dict[str, Any]:
        """Run the next epoch; its record (the loop appends it to ``history``)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything the checkpoint holds (loadable with ``weights_only=True``), ``history``
        included."""

    @abstractmethod
    def load_state_dict(self, saved: dict[str, Any], source: Path) -> None:
        """Restore from a checkpoint (``source``: its file); a checkpoint of another run is a
        :class:`~raydnas.errors.ConfigError` before anything changes."""

    @abstractmethod
    def write_outputs(self, record: dict[str, Any]) -> None:
        """The files a user reads after each epoch (``metrics.jsonl``, ``final.json``, ...),
        written atomically."""

    def open_log(self, purge_step: int | None) -> Any:
        """A TensorBoard writer (``purge_step``: the first step of a continuation, whose
        events from a crashed earlier try TensorBoard drops), or None for no log."""
        return None

    def log_epoch(self, writer: Any, record: dict[str, Any]) -> None:
        """Write the epoch's record to the writer :meth:`open_log` returned."""


def restore_from(run: ResumableRun, out: Path, *, resume: bool = True,
                 restore: str | Path | None = None, map_location: Any = "cpu",
                 log: Log = print) -> dict[str, Any] | None:
    """Continue ``run`` from ``restore`` (a checkpoint file, e.g. one Ray Tune handed back), else
    from ``out/checkpoint.pt`` when ``resume`` and it exists (its previous copy if it is
    damaged). Says in one line what it did; returns the checkpoint loaded, or None."""
    path = out / ckpt.CHECKPOINT_NAME
    source = Path(restore) if restore else (path if resume and path.is_file() else None)
    if source is None:
        return None
    saved, source = ckpt.load_or_previous(source, map_location=map_location, log=log)
    run.load_state_dict(saved, source)
    if run.finished():
        log(f"already finished: {out} holds all {run.epoch} epoch(s) of this run (nothing to "
            "do; --fresh starts over)")
    else:
        log(f"resuming from {source} after epoch {run.epoch}/{run.total_epochs}")
    return saved


def run_epochs(run: ResumableRun, out: Path, *, report: Report | None = None,
               log: Log = print, stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Run the epochs ``run`` has left (or until ``stop_after_epochs`` are complete: a
    resumable pause); returns the last record ({} if none)."""
    path = out / ckpt.CHECKPOINT_NAME
    record = run.history[-1] if run.history else {}
    writer = None if run.finished() else run.open_log(run.epoch + 1 if run.epoch else None)
    try:
        while not run.finished():
            if stop_after_epochs is not None and run.epoch >= stop_after_epochs:
                break
            record = run.run_epoch()
            run.history.append(record)
            ckpt.save(run.state_dict(), path)
            run.write_outputs(record)
            if writer is not None:
                run.log_epoch(writer, record)
            if report is not None:
                report(record, path)
            if ended(record):
                log(f"early stop after epoch {record['epoch']}: {record['early_stop']}")
    finally:
        if writer is not None:
            writer.close()
    return record
