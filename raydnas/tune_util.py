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

    threads = max(1, int(resources["cpu"]))
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
    its final checkpoint reports its final result again (nothing ran)."""
    view = view or dict
    import logging

    from ray import tune

    # one "Checkpoint successfully created" line per epoch and trial drowns the progress table
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    reported = []

    def report(metrics: dict, ckpt_path: Path) -> None:
        reported.append(metrics.get("epoch"))
        with tempfile.TemporaryDirectory(prefix="raydnas-ckpt-") as d:
            shutil.copy2(ckpt_path, Path(d) / ckpt_path.name)
            tune.report(view(metrics), checkpoint=tune.Checkpoint.from_directory(d))

    restore_dir = None
    ckpt = tune.get_checkpoint()
    try:
        if ckpt is not None:
            restore_dir = tempfile.mkdtemp(prefix="raydnas-restore-")
            ckpt.to_directory(restore_dir)
        restore = Path(restore_dir) / "checkpoint.pt" if restore_dir else None
        verbose = os.environ.get("RAYDNAS_TRIAL_LOG", "0") == "1"
        last = run(report, restore, print if verbose else (lambda s: None))
        if not reported and last:
            tune.report(view(last))
    finally:
        if restore_dir:
            shutil.rmtree(restore_dir, ignore_errors=True)


def repair_lost_checkpoints(experiment: Path, log=print) -> list[str]:
    """Call before ``Tuner.restore(experiment)``; returns the trial directories repaired, each
    also said in one ``log`` line.

    Tune deletes a trial's older checkpoint (``num_to_keep``) as soon as a newer one is
    reported, but saves the experiment state only every few seconds. A driver killed in between
    leaves a state whose trial resumes from a checkpoint directory that is gone, and Tune then
    fails the trial ("Could not recover from checkpoint as it does not exist on storage
    anymore"). Such a trial's newest checkpoint directory is renamed to the name the state
    expects: the trial resumes from its latest epoch instead of failing. Local storage only."""
    states = sorted(experiment.glob("experiment_state-*.json"))  # Tune takes the newest name
    if not states:
        return []
    try:
        trials = json.loads(states[-1].read_text()).get("trial_data", [])
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
        tdir = experiment / rel
        if (tdir / name).exists() or not tdir.is_dir():
            continue
        found = sorted(p for p in tdir.iterdir() if p.is_dir()
                       and re.fullmatch(r"checkpoint_\d+", p.name))
        if found:
            found[-1].rename(tdir / name)
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
