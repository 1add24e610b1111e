"""The Ray Tune trial: the unchanged ``raydnas.search.run_search`` with ``report`` bound to Tune.

Per trial: the experiment config is rebuilt from the study and the trial's flat keys (so a bad
value fails validation here too), the device comes from the GPUs Ray assigned
(``ray.get_gpu_ids()``; a CPU trial would otherwise see every GPU), torch threads from the CPUs
it holds, data is loaded inside the trial, and everything (checkpoint.pt, metrics.jsonl,
final.json, tb/) is written to the trial's working directory, which Tune syncs to the storage as
artifacts. Every epoch's checkpoint goes to Tune, so a crashed trial resumes from its last epoch.

A failure that would only repeat on retry (a NaN loss, CUDA out of memory) leaves a
``failure.json`` marker: a retry on the same node re-raises it at once instead of recomputing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .study import Study

FAILURE_MARKER = "failure.json"


def _device_and_threads(study: Study | dict) -> tuple[str, int]:
    import ray
    import torch

    resources = study if isinstance(study, dict) else study.resources
    threads = max(1, int(resources["cpu"]))
    gpus = ray.get_gpu_ids() if ray.is_initialized() else []
    if gpus and torch.cuda.is_available():
        # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPUs: the first one is cuda:0
        frac = resources["gpu"]
        if 0 < frac < 1:
            torch.cuda.set_per_process_memory_fraction(frac, 0)
        return "cuda:0", threads
    return "cpu", threads


def search_trial(config: dict[str, Any], study: Study) -> None:
    """Function trainable: one complete search with one method, seed (and Optuna point); or,
    for ``kind: evaluate`` configs (the study's evaluation stage), one evaluation."""
    if config.get("kind") == "evaluate":
        from .stage import job_of

        return evaluation_trial(config, job_of(config, study), study.resources)
    from ..search import NonFiniteLoss, run_search

    method = next(m for m in study.methods if m.name == config["method"])
    params = {k: config[k] for k in method.params if config.get(k) is not None}
    cfg = study.trial_config(method, config["seed"], params)
    out = Path(os.getcwd())
    marker = out / FAILURE_MARKER
    if marker.is_file():
        raise RuntimeError(json.loads(marker.read_text())["error"])
    device, threads = _device_and_threads(study)

    def run(report, restore, log):
        try:
            return run_search(cfg, out, report=report, resume=False, restore=restore,
                              device=device, threads=threads, log=log)
        except Exception as e:  # deterministic failures: do not recompute them on retry
            oom = type(e).__name__ == "OutOfMemoryError"
            if isinstance(e, NonFiniteLoss) or oom:
                marker.write_text(json.dumps({"error": f"{type(e).__name__}: {e}"}))
            raise

    _with_tune_checkpoints(run)


def _with_tune_checkpoints(run) -> None:
    """Run ``run(report, restore, log)`` (a resumable search or evaluation) inside a Tune trial:
    every epoch's checkpoint goes to Tune with its metrics, a restarted trial continues from the
    checkpoint Tune hands back, and a trial restored from its final checkpoint reports its
    final result again (nothing ran)."""
    import logging

    from ray import tune

    # one "Checkpoint successfully created" line per epoch and trial drowns the progress table
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    reported = []

    def report(metrics: dict, ckpt_path: Path) -> None:
        reported.append(metrics.get("epoch"))
        with tempfile.TemporaryDirectory(prefix="raydnas-ckpt-") as d:
            shutil.copy2(ckpt_path, Path(d) / ckpt_path.name)
            tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(d))

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
            tune.report(dict(last))
    finally:
        if restore_dir:
            shutil.rmtree(restore_dir, ignore_errors=True)


def evaluation_trial(config: dict[str, Any], job, resources: dict[str, float]) -> None:
    """One evaluation (raydnas.evaluation.run_evaluation) as a Tune trial: per-epoch
    checkpoints to Tune, resumed from the last one after a crash, files in the trial directory."""
    from ..evaluation import run_evaluation

    device, threads = _device_and_threads(resources)
    _with_tune_checkpoints(lambda report, restore, log: run_evaluation(
        job, Path(os.getcwd()), report=report, resume=False, restore=restore, device=device,
        threads=threads, log=log))
