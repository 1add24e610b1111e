"""Ray Tune glue shared by sweeps and evaluations: the trial's device, per-epoch checkpoints to
Tune, the checkpoints a killed driver left unnamed, the environment Tune reads, and quieter Ray
advice. Ray is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path


class GPUUnusable(RuntimeError):
    """Ray assigned the trial a GPU, but this node's CUDA cannot be used (wrong torch build for
    the driver, no driver, a GPU that is only a scheduling resource): the same on every retry."""


def device_and_threads(resources: dict[str, float]) -> tuple[str, int]:
    """The device and torch threads of a trial holding ``resources`` ({cpu, gpu}): the first
    GPU Ray assigned (``cuda:0`` under its CUDA_VISIBLE_DEVICES), else the CPU.

    A trial that holds GPUs on a node whose CUDA is unusable raises :class:`GPUUnusable` with
    one line, instead of silently training on the CPU (or a CUDA traceback deep in the first
    step). ``RAYDNAS_DEVICE=cpu`` in the trials' environment computes on the CPU whatever Ray
    assigned: for clusters whose GPUs are resources only (Ray's fake multi-node provider)."""
    import ray
    import torch

    from ..config.experiment import threads_for_cpus

    threads = threads_for_cpus(resources["cpu"])  # what ``threads: null`` resolves to
    gpus = ray.get_gpu_ids() if ray.is_initialized() else []
    if not gpus or os.environ.get("RAYDNAS_DEVICE", "").lower() == "cpu":
        return "cpu", threads
    if not torch.cuda.is_available():
        node = ray.util.get_node_ip_address()
        raise GPUUnusable(
            f"node {node}: Ray assigned this trial GPU {[str(g) for g in gpus]} "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}) but "
            f"torch {torch.__version__} cannot use CUDA there (torch.cuda.is_available() is "
            "False): install the torch build for that node's driver, or set "
            "sweep.resources.gpu: 0 (RAYDNAS_DEVICE=cpu if its GPUs are not real)")
    # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPUs: the first one is cuda:0
    frac = resources["gpu"]
    if 0 < frac < 1:
        torch.cuda.set_per_process_memory_fraction(frac, 0)
    return "cuda:0", threads


def with_tune_checkpoints(run, view=None) -> None:
    """Run ``run(report, restore, log)`` (a resumable search or evaluation) inside a Tune trial:
    every epoch's checkpoint goes to Tune with its metrics (``view(metrics)`` of them if given),
    a restarted trial continues from the checkpoint Tune hands back, and a trial restored from
    its final checkpoint reports its final result again (nothing ran).

    With the :func:`checkpoint_keeper` running the experiment (local storage), Tune's saved
    state may lag the trial by a snapshot period; the trial then continues from the newest
    checkpoint Tune registered (the keeper's pointer in the trial directory), first reporting
    again, without training, the results the saved state had not seen (so the scheduler and
    searcher see every epoch once); a trial Tune had already ended (a scheduler's stop) reports
    and ends without training. A trial's first report waits until a saved experiment state
    lists the trial, so no trial that reported can be missing from the state a resume reads."""
    view = view or dict
    import logging

    from ray import tune

    # one "Checkpoint successfully created" line per epoch and trial drowns the progress table
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    tdir = _trial_storage_dir()  # this trial's directory on local storage, or None
    trial_id = tune.get_context().get_trial_id()
    waited = [tdir is None]  # the wait for a saved state that lists this trial is over
    reported, history = [], []

    def send(metrics: dict, ckpt_dir: str | None = None) -> None:
        if not waited[0]:
            if (tdir.parent / KEEPER_FLAG).is_file():
                _await_listed(tdir, trial_id)
            waited[0] = True
        if ckpt_dir is None:
            tune.report(metrics)
        else:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(ckpt_dir))

    def report(metrics: dict, ckpt_path: Path) -> None:
        reported.append(metrics.get("epoch"))
        shown = view(metrics)
        history.append(shown)
        with tempfile.TemporaryDirectory(prefix="raydnas-ckpt-") as d:
            shutil.copy2(ckpt_path, Path(d) / ckpt_path.name)
            _write_history(Path(d), history)
            send(shown, d)

    restore_dir = None
    try:
        source, known = _restore_source(tune.get_checkpoint(), tdir, trial_id)
        if source is not None:
            restore_dir = tempfile.mkdtemp(prefix="raydnas-restore-")
            if isinstance(source, Path):
                shutil.copytree(source, restore_dir, dirs_exist_ok=True)
            else:
                source.to_directory(restore_dir)
            history[:] = _read_history(Path(restore_dir)) or []
        replay = history[len(history) if known is None else known:]
        if replay:  # results Tune's saved state had not seen: the same results again, in order
            for m in replay[:-1]:
                send(m)
            with tempfile.TemporaryDirectory(prefix="raydnas-ckpt-") as d:
                shutil.copytree(restore_dir, d, dirs_exist_ok=True)
                send(replay[-1], d)
        if history and tdir is not None and _marked(tdir / DONE, trial_id):
            if not replay:  # Tune had ended it (a scheduler's stop): say so again, train nothing
                send(history[-1])
            return
        restore = Path(restore_dir) / "checkpoint.pt" if restore_dir else None
        verbose = os.environ.get("RAYDNAS_TRIAL_LOG", "0") == "1"
        last = run(report, restore, print if verbose else (lambda s: None))
        if not reported and not replay and last:
            send(view(last))
    finally:
        if restore_dir:
            shutil.rmtree(restore_dir, ignore_errors=True)


# Files shared by the checkpoint keeper (the driver) and with_tune_checkpoints (the trials)
KEEPER_FLAG = ".raydnas_keeper"  # experiment directory: the keeper runs this experiment
POINTER = ".raydnas_checkpoint"  # trial directory: the newest checkpoint Tune registered
LISTED = ".raydnas_listed"  # trial directory: a saved experiment state lists the trial
DONE = ".raydnas_done"  # trial directory: Tune ended the trial (finished, or a scheduler's stop)
HISTORY = "raydnas_reported.json"  # checkpoint directory: the results reported with checkpoints
LISTED_WAIT_S = 300.0  # a trial's first report waits at most this long for LISTED
_CKPT_DIR = re.compile(r"checkpoint_\d+")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _marked(path: Path, trial_id: str) -> bool:
    """Whether the marker file ``path`` exists and names ``trial_id`` (a marker of another
    trial that used the directory before does not count)."""
    try:
        return path.read_text().strip() == trial_id
    except OSError:
        return False


def _write_history(ckpt_dir: Path, history: list) -> None:
    def plain(o):
        return o.item() if hasattr(o, "item") else str(o)

    (ckpt_dir / HISTORY).write_text(json.dumps(history, default=plain))


def _read_history(ckpt_dir: Path) -> list | None:
    try:
        h = json.loads((ckpt_dir / HISTORY).read_text())
    except (OSError, ValueError):
        return None
    return h if isinstance(h, list) else None


def _pointer_target(tdir: Path, trial_id: str | None) -> Path | None:
    """The checkpoint directory the keeper's pointer in ``tdir`` names (the newest Tune
    registered for the trial), if it exists and, given ``trial_id``, is that trial's."""
    try:
        p = json.loads((tdir / POINTER).read_text())
        target = tdir / p["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if trial_id is not None and p.get("trial") != trial_id:
        return None
    return target if _CKPT_DIR.fullmatch(target.name) and target.is_dir() else None


def _trial_storage_dir() -> Path | None:
    """The running trial's directory on storage if the storage is a local (or mounted) file
    system, else None. Tune's public context names only the trial's local working directory."""
    try:
        import pyarrow.fs as pafs
        from ray.train._internal.session import get_session

        storage = get_session().storage
        if isinstance(storage.storage_filesystem, pafs.LocalFileSystem):
            return Path(storage.trial_fs_path)
    except Exception:  # noqa: BLE001 - no session or another Ray layout: Tune's checkpoints only
        pass
    return None


def _restore_source(ckpt, tdir: Path | None, trial_id: str):
    """Where a (re)started trial continues from: (a checkpoint directory, a Tune checkpoint or
    None; how many of the results in its history Tune's saved state has seen, None for all)."""
    import pyarrow.fs as pafs

    tune_dir = None
    if ckpt is not None and isinstance(ckpt.filesystem, pafs.LocalFileSystem):
        tune_dir = Path(ckpt.path)
    seen = len(_read_history(tune_dir) or []) if tune_dir is not None else 0
    newest = _pointer_target(tdir, trial_id) if tdir is not None else None
    if newest is not None and (tune_dir is None or newest.name != tune_dir.name):
        if len(_read_history(newest) or []) > seen:  # registered after the saved state
            return newest, seen
    if ckpt is None:
        return None, None
    return (tune_dir if tune_dir is not None else ckpt), None


def _await_listed(tdir: Path, trial_id: str) -> None:
    """Wait until the keeper says a saved experiment state lists this trial (a trial created
    after the last snapshot would otherwise be unknown to a resume, and run again)."""
    import time

    deadline = time.monotonic() + LISTED_WAIT_S
    while not _marked(tdir / LISTED, trial_id):
        if time.monotonic() > deadline:
            print(f"note: {tdir.name}: no saved experiment state lists this trial after "
                  f"{LISTED_WAIT_S:.0f} s; reporting anyway", flush=True)
            return
        time.sleep(0.2)


def _crc(path: Path) -> int:
    import zlib

    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


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
    import logging as _logging

    import pyarrow.fs as pafs
    from ray.tune import Callback

    log = _logging.getLogger("raydnas.sweep.tune_util")

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
                _write_atomic(Path(trial.path) / POINTER, json.dumps(
                    {"trial": trial.trial_id, "checkpoint": Path(checkpoint.path).name}))
                self._dirty.add(trial)

        def on_trial_complete(self, iteration, trials, trial, **info):
            if self._attach(trials) and trial.status == "RUNNING" and \
                    trial.has_reported_at_least_once:
                _write_atomic(Path(trial.path) / DONE, trial.trial_id)

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
            size, crc = path.stat().st_size, _crc(path)
            pend = self._pending or {"new": [], "latest": {}}
            pend["new"] += trials[self._recorded:]
            self._recorded = len(trials)
            for t in self._dirty:
                if t.checkpoint is not None:
                    pend["latest"][t] = t.checkpoint.path
            self._dirty = set()
            pend.update(name=path.name, size=size, crc=crc, checked=None)
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
            if _crc(f) != pend["crc"]:
                return
            self._pending = None
            for t in pend["new"]:  # the state on storage lists them
                if t.trial_id not in self._listed:
                    d = Path(t.path)
                    d.mkdir(parents=True, exist_ok=True)
                    _write_atomic(d / LISTED, t.trial_id)
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
        keep = _pointer_target(tdir, None)
        if keep is None:
            continue
        for c in tdir.iterdir():
            if c.name != keep.name and _CKPT_DIR.fullmatch(c.name) and c.is_dir():
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
                newest = _pointer_target(Path(tdir), trial.get("trial_id"))
                fs.move(str(newest) if newest is not None else found[-1], f"{tdir}/{name}")
                if newest is not None:
                    _write_atomic(Path(tdir) / POINTER, json.dumps(
                        {"trial": trial.get("trial_id"), "checkpoint": name}))
            else:  # object stores move files, not directories
                pafs.copy_files(found[-1], f"{tdir}/{name}", source_filesystem=fs,
                                destination_filesystem=fs)
                fs.delete_dir(found[-1])
            repaired.append(rel)
            log(f"note: {rel}: the checkpoint Tune's last snapshot names was deleted before the "
                "kill; resuming from the trial's newest one")
    return repaired


@contextlib.contextmanager
def temporary_env(env: dict[str, str]):
    """Set environment variables for the block (Tune reads them in this process), then restore
    what was there."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _RaydnasAdvice(logging.Filter):
    """Drops Ray's own advice that contradicts or duplicates raydnas's: the token-auth notice
    of a new local Ray (auth stays on), and "Resume experiment with: Tuner.restore(...)" (the
    way to continue is running the same raydnas command again, which raydnas says itself)."""

    DROP = ("Token authentication is enabled for this Ray cluster",
            "Resume experiment with: Tuner.restore", "Resume training with:")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(d in msg for d in self.DROP)


def quiet_ray_advice() -> None:
    """Install :class:`_RaydnasAdvice` on the Ray loggers that print such advice (once)."""
    for name in ("ray._private.authentication.authentication_token_setup", "ray.tune.tune",
                 "ray.tune.impl.tuner_internal"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _RaydnasAdvice) for f in lg.filters):
            lg.addFilter(_RaydnasAdvice())
