"""The checkpoint keeper: Tune runs with ``num_to_keep=None`` and saves its experiment state on its
own period; the keeper deletes superseded checkpoints once a saved state no longer names them
(so the driver's cost stays linear in the trials), and repairs what a killed driver left. Ray is
imported inside the functions."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from .keeper_files import (
    CKPT_DIR,
    DONE,
    KEEPER_FLAG,
    LISTED,
    POINTER,
    crc,
    pointer_target,
    write_atomic,
)

# Lazy imports: Ray and pyarrow load only when the keeper is built, inside a running study.


def checkpoint_keeper():
    """A Tune callback for experiments on local (or mounted) storage run with
    ``CheckpointConfig(num_to_keep=None)``: it deletes each trial's older checkpoints itself,
    once an experiment state that no longer names them is on storage.

    Tune's own ``num_to_keep`` deletes the older checkpoint as soon as a newer one is
    registered, so it saves the whole experiment state (every trial's, and a copy of the
    driver's files of every trial) after every trial checkpoint (``sync_every_n_trial_
    checkpoints`` in ``ray/tune/execution/experiment_state.py``): O(trials) per epoch, O(trials²)
    per study. With this keeper Tune saves the state on its own period (``auto``: at most ~5 %
    of the time) and the keeper, in the driver, per trial:

    * on each registered checkpoint, writes ``.raydnas_checkpoint`` (the trial id and the
      checkpoint directory: the newest checkpoint Tune registered);
    * when a saved state has reached storage (same bytes as the state Tune wrote in its
      staging directory), deletes the trial's checkpoints older than the one that state names,
      and marks every trial that state lists (``.raydnas_listed``);
    * when Tune ends a trial, writes ``.raydnas_done``;
    * once the first state is on storage, writes ``.raydnas_keeper`` in the experiment.

    :func:`with_tune_checkpoints` reads these files, so a resume from a state older than the
    trials continues every trial from its newest checkpoint without running an epoch twice;
    :func:`tidy_checkpoints` removes the last superseded checkpoints after ``fit``. The
    callback keeps nothing of a run when the Tuner pickles it."""
    import pyarrow.fs as pafs
    from ray.tune import Callback

    log = logging.getLogger("raydnas.sweep.tune_util")

    class CheckpointKeeper(Callback):
        def __init__(self):
            self._fresh()

        def _fresh(self):
            self._trials = None  # Tune's own (growing) list of the experiment's trials
            self._exp = None  # the experiment directory on storage (False: not local)
            self._state = None  # the experiment state Tune writes before copying it to _exp
            self._pending = None  # the newest state written and not yet seen on storage
            self._recorded = 0  # _trials[:_recorded] are in a pending or confirmed state
            self._dirty = set()  # trials with a checkpoint registered since the last record
            self._listed = set()  # ids of the trials marked LISTED by this keeper
            self._flagged = False

        def __getstate__(self):  # pickled with the Tuner: nothing of a run
            return {}

        def __setstate__(self, state):
            self._fresh()

        def _attach(self, trials) -> bool:
            if self._exp is None and trials:
                st = trials[0].storage
                if not isinstance(st.storage_filesystem, pafs.LocalFileSystem):
                    self._exp = False
                else:
                    self._exp = Path(st.experiment_fs_path)
                    # a flag of an earlier driver: trials wait for LISTED only once this one
                    # has seen its own first state on storage
                    (self._exp / KEEPER_FLAG).unlink(missing_ok=True)
            return bool(self._exp)

        def on_step_begin(self, iteration, trials, **info):
            self._trials = trials

        def on_step_end(self, iteration, trials, **info):
            if self._pending is not None:
                try:
                    self._confirm()
                except Exception:  # noqa: BLE001 - bookkeeping never stops the experiment
                    log.debug("checkpoint keeper: confirm failed", exc_info=True)

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            # before Tune registers it; a failure here leaves it unregistered (Tune logs it)
            if self._attach(trials) and isinstance(checkpoint.filesystem, pafs.LocalFileSystem):
                write_atomic(Path(trial.path) / POINTER, json.dumps(
                    {"trial": trial.trial_id, "checkpoint": Path(checkpoint.path).name}))
                self._dirty.add(trial)

        def on_trial_complete(self, iteration, trials, trial, **info):
            if self._attach(trials) and trial.status == "RUNNING" and \
                    trial.has_reported_at_least_once:
                write_atomic(Path(trial.path) / DONE, trial.trial_id)

        def get_state(self):
            # Tune calls this while saving the experiment state, right after writing it
            try:
                self._record()
            except Exception:  # noqa: BLE001
                log.debug("checkpoint keeper: record failed", exc_info=True)
            return None  # nothing for Tune to save

        def _state_file(self) -> Path | None:
            if self._state is None or not self._state.is_file():
                from ray.train.constants import _get_ray_train_session_dir

                found = Path(_get_ray_train_session_dir()).glob(
                    f"*/{self._exp.name}/driver_artifacts/experiment_state-*.json")
                self._state = max(found, key=lambda p: p.stat().st_mtime_ns, default=None)
            return self._state

        def _record(self) -> None:
            trials = self._trials
            if not trials or not self._attach(trials):
                return
            path = self._state_file()
            if path is None:
                return
            size, check = path.stat().st_size, crc(path)
            pend = self._pending or {"new": [], "latest": {}}
            pend["new"] += trials[self._recorded:]
            self._recorded = len(trials)
            for t in self._dirty:
                if t.checkpoint is not None:
                    pend["latest"][t] = t.checkpoint.path
            self._dirty = set()
            pend.update(name=path.name, size=size, crc=check, checked=None)
            self._pending = pend

        def _confirm(self) -> None:
            pend = self._pending
            f = self._exp / pend["name"]
            try:
                st = f.stat()
            except OSError:
                return
            if st.st_size != pend["size"] or st.st_mtime_ns == pend["checked"]:
                return
            pend["checked"] = st.st_mtime_ns
            if crc(f) != pend["crc"]:
                return
            self._pending = None
            for t in pend["new"]:  # the state on storage lists them
                if t.trial_id not in self._listed:
                    d = Path(t.path)
                    d.mkdir(parents=True, exist_ok=True)
                    write_atomic(d / LISTED, t.trial_id)
                    self._listed.add(t.trial_id)
            for t, latest in pend["latest"].items():
                self._drop_older(t, latest)
            if not self._flagged:
                (self._exp / KEEPER_FLAG).touch()
                self._flagged = True

        @staticmethod
        def _drop_older(trial, latest: str) -> None:
            """Delete the checkpoints Tune registered for ``trial`` before ``latest`` (the one
            the state on storage names) and forget them in Tune's own list."""
            cm = trial.run_metadata.checkpoint_manager
            results = getattr(cm, "_checkpoint_results", None)
            if not isinstance(results, list):
                return
            paths = [r.checkpoint.path for r in results]
            if latest not in paths:
                return
            old = results[:paths.index(latest)]
            if not old:
                return
            cm._checkpoint_results = results[len(old):]
            trial.invalidate_json_state()
            trial.run_metadata.invalidate_cache()
            for r in old:
                if isinstance(r.checkpoint.filesystem, pafs.LocalFileSystem):
                    shutil.rmtree(r.checkpoint.path, ignore_errors=True)

    return CheckpointKeeper()


def snapshot_period(trials: int) -> str:
    """``TUNE_GLOBAL_CHECKPOINT_S`` for an experiment of ``trials`` trials run with the
    :func:`checkpoint_keeper`: one second per 40 trials, at least 10 s.

    A saved experiment state costs the driver O(trials) (Tune writes every trial's state, then
    copies its whole staging directory, ~6 files per trial, to storage in a background thread:
    ~0.5 s of driver CPU at 1600 trials). Tune's ``auto`` period (10 s, or 19 times the write,
    the copy not counted) keeps it at 10 s up to thousands of trials, so its share of the
    driver's time grows with the study; a period that grows with the trials keeps it at a
    few per cent. Resume is exact whatever the period (the keeper's files); a longer period
    only delays the first report of a trial created after the study started (see
    :func:`with_tune_checkpoints`)."""
    return str(max(10, -(-trials // 40)))


def tidy_checkpoints(experiment: Path | str) -> int:
    """After ``Tuner.fit()`` returned (its final experiment state is on storage): in every trial
    directory the keeper kept, delete the checkpoints other than the newest (the one its
    pointer names). Returns how many were deleted. Local storage only."""
    n = 0
    try:
        entries = [e for e in os.scandir(experiment) if e.is_dir()]
    except OSError:
        return 0
    for e in entries:
        tdir = Path(e.path)
        keep = pointer_target(tdir, None)
        if keep is None:
            continue
        for c in tdir.iterdir():
            if c.name != keep.name and CKPT_DIR.fullmatch(c.name) and c.is_dir():
                shutil.rmtree(c, ignore_errors=True)
                n += 1
    return n


def repair_lost_checkpoints(experiment: Path | str, log=print) -> list[str]:
    """Call before ``Tuner.restore(experiment)``; returns the trial directories repaired, each
    also said in one ``log`` line. ``experiment``: a local directory, or an absolute path or
    storage URI (``s3://...``) as a string.

    Tune deletes a trial's older checkpoint (``num_to_keep``) as soon as a newer one is
    reported, but saves the experiment state only every few seconds (to remote storage in the
    background). A driver killed in between leaves a state whose trial resumes from a
    checkpoint directory that is gone, and Tune then fails the trial ("Could not recover from
    checkpoint as it does not exist on storage anymore"). Such a trial's newest checkpoint
    directory is renamed to the name the state expects: the trial resumes from its latest epoch
    instead of failing."""
    import pyarrow.fs as pafs

    path = experiment if isinstance(experiment, str) else str(Path(experiment).resolve())
    try:
        fs, root = pafs.FileSystem.from_uri(path)
        entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except (OSError, ValueError):
        return []  # unreadable storage: Tune reports on it
    states = sorted(i.path for i in entries if i.type == pafs.FileType.File
                    and re.fullmatch(r"experiment_state-.*\.json", i.base_name))
    if not states:  # Tune takes the newest name
        return []
    try:
        with fs.open_input_stream(states[-1]) as f:
            trials = json.loads(f.read()).get("trial_data", [])
    except (OSError, ValueError):
        return []  # not a state this function understands: Tune reports on it
    repaired = []
    for entry in trials:
        try:
            trial, runtime = (json.loads(part) for part in entry)
            name = (runtime.get("last_result") or {}).get("checkpoint_dir_name")
            rel = trial.get("relative_logdir")
        except (TypeError, ValueError, AttributeError):
            continue
        if not name or not rel:
            continue
        tdir = f"{root}/{rel}"
        if fs.get_file_info(f"{tdir}/{name}").type != pafs.FileType.NotFound \
                or fs.get_file_info(tdir).type != pafs.FileType.Directory:
            continue
        found = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(tdir))
                       if i.type == pafs.FileType.Directory
                       and re.fullmatch(r"checkpoint_\d+", i.base_name))
        if found:
            if isinstance(fs, pafs.LocalFileSystem):
                # the newest checkpoint Tune registered (the keeper's pointer), else the
                # highest-numbered directory
                newest = pointer_target(Path(tdir), trial.get("trial_id"))
                fs.move(str(newest) if newest is not None else found[-1], f"{tdir}/{name}")
                if newest is not None:
                    write_atomic(Path(tdir) / POINTER, json.dumps(
                        {"trial": trial.get("trial_id"), "checkpoint": name}))
            else:  # object stores move files, not directories
                pafs.copy_files(found[-1], f"{tdir}/{name}", source_filesystem=fs,
                                destination_filesystem=fs)
                fs.delete_dir(found[-1])
            repaired.append(rel)
            log(f"note: {rel}: the checkpoint Tune's last snapshot names was deleted before the "
                "kill; resuming from the trial's newest one")
    return repaired
