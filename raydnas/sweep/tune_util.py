"""Ray Tune glue shared by sweeps and evaluations, trial side: the trial's device, per-epoch
checkpoints to Tune (and the continuation from the newest one, :mod:`.keeper` on the driver's
side), the environment Tune reads, and quieter Ray advice. Ray is imported inside the functions
(the trial's code runs where Ray already is; the rest of the package must import without it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ..config.experiment import threads_for_cpus
from .keeper_files import (
    DONE,
    KEEPER_FLAG,
    LISTED,
    LISTED_WAIT_S,
    marked,
    pointer_target,
    read_history,
    write_history,
)

# Lazy imports: Ray and pyarrow load only inside a running trial or study.


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
            write_history(Path(d), history)
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
            history[:] = read_history(Path(restore_dir)) or []
        replay = history[len(history) if known is None else known:]
        if replay:  # results Tune's saved state had not seen: the same results again, in order
            for m in replay[:-1]:
                send(m)
            with tempfile.TemporaryDirectory(prefix="raydnas-ckpt-") as d:
                shutil.copytree(restore_dir, d, dirs_exist_ok=True)
                send(replay[-1], d)
        if history and tdir is not None and marked(tdir / DONE, trial_id):
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
    seen = len(read_history(tune_dir) or []) if tune_dir is not None else 0
    newest = pointer_target(tdir, trial_id) if tdir is not None else None
    if newest is not None and (tune_dir is None or newest.name != tune_dir.name):
        if len(read_history(newest) or []) > seen:  # registered after the saved state
            return newest, seen
    if ckpt is None:
        return None, None
    return (tune_dir if tune_dir is not None else ckpt), None


def _await_listed(tdir: Path, trial_id: str) -> None:
    """Wait until the keeper says a saved experiment state lists this trial (a trial created
    after the last snapshot would otherwise be unknown to a resume, and run again)."""
    deadline = time.monotonic() + LISTED_WAIT_S
    while not marked(tdir / LISTED, trial_id):
        if time.monotonic() > deadline:
            print(f"note: {tdir.name}: no saved experiment state lists this trial after "
                  f"{LISTED_WAIT_S:.0f} s; reporting anyway", flush=True)
            return
        time.sleep(0.2)


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
