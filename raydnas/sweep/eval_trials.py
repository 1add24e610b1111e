"""``raydnas evaluate EXPERIMENT`` as one Ray Tune experiment: a trial per (searched trial ×
evaluation seed), in ``<experiment>/evaluation/<protocol>/<search trial>_seed<k>/`` (the same
layout as an in-process evaluation, so ``raydnas reduce`` reads either).

Like a sweep: a local Ray unless ``address`` joins a cluster; fractional GPUs pack several
evaluations on one GPU; every epoch's checkpoint goes to Tune, so a crashed trial resumes from
its last epoch and running the same command again after the driver was killed continues the
experiment (``Tuner.restore``). Cells whose evaluation already finished are not run again.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..evaluation import run_evaluation
from .keeper import checkpoint_keeper, repair_lost_checkpoints, snapshot_period, tidy_checkpoints
from .tune_util import device_and_threads, quiet_ray_advice, temporary_env, with_tune_checkpoints

# Lazy imports: Ray loads only when evaluation trials run.

JOBS_FILE = "raydnas_eval_jobs.json"


def _done(out: Path) -> bool:
    f = out / "final.json"
    if not f.is_file():
        return False
    try:
        return bool(json.loads(f.read_text()).get("complete"))
    except ValueError:
        return False


def grid_trial(config: dict[str, Any], jobs: list, resources: dict[str, float]) -> None:
    """Function trainable: evaluation number ``config["job"]``."""
    evaluation_trial(config, jobs[config["job"]], resources)


def run_evaluation_trials(plans: list, *, resources: dict[str, float], address: str | None = None,
                          num_cpus: int | None = None, quiet: bool = False,
                          max_failures: int = 2) -> list[tuple[Any, Path, dict | None]]:
    """Run ``plans`` (all of one experiment and protocol) as Tune trials; returns, per plan,
    (job, directory, last metrics or None)."""
    import ray
    from ray import tune

    todo = [pl for pl in plans if not _done(pl.out)]
    if todo:
        quiet_ray_advice()
        root = todo[0].out.parent
        fp = [[pl.out.name, pl.job.describe()] for pl in todo]
        started = not ray.is_initialized()
        if started:
            if address:
                ray.init(address=address, log_to_driver=True)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                         log_to_driver=True)
        stack = contextlib.ExitStack()
        env = {"RAY_AIR_NEW_OUTPUT": "0",
               "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
               "TUNE_MAX_PENDING_TRIALS_PG": str(len(todo))}
        if "TUNE_GLOBAL_CHECKPOINT_S" not in os.environ:  # see snapshot_period
            env["TUNE_GLOBAL_CHECKPOINT_S"] = snapshot_period(len(todo))
        try:
            stack.enter_context(temporary_env(env))
            jobs = [pl.job for pl in todo]
            trainable = tune.with_resources(
                tune.with_parameters(grid_trial, jobs=jobs, resources=resources),
                {"cpu": resources["cpu"], "gpu": resources["gpu"]})
            saved = root / JOBS_FILE
            same = saved.is_file() and json.loads(saved.read_text()) == json.loads(json.dumps(fp))
            if same and tune.Tuner.can_restore(str(root)):
                print(f"continuing the evaluation experiment in {root}", flush=True)
                repair_lost_checkpoints(root, log=lambda m: print(m, flush=True))
                tuner = tune.Tuner.restore(str(root), trainable, resume_unfinished=True,
                                           resume_errored=True)
            else:
                root.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps(fp, indent=1))
                names = [pl.out.name for pl in todo]

                def dirname(trial) -> str:
                    return names[trial.config["job"]]

                from ray.tune import CLIReporter

                reporter = None if quiet else CLIReporter(
                    metric_columns={"epoch": "epoch", "train_acc": "train_acc",
                                    "test_acc": "test_acc"},
                    parameter_columns={"job": "job"}, max_report_frequency=20,
                    max_progress_rows=12)
                tuner = tune.Tuner(
                    trainable, param_space={"job": tune.grid_search(list(range(len(todo))))},
                    tune_config=tune.TuneConfig(trial_dirname_creator=dirname,
                                                trial_name_creator=dirname, reuse_actors=True),
                    run_config=tune.RunConfig(
                        name=root.name, storage_path=str(root.parent.resolve()),
                        failure_config=tune.FailureConfig(max_failures=max_failures),
                        # every checkpoint kept in Tune's eyes; the keeper deletes superseded
                        # ones once a saved state no longer names them (num_to_keep=1 saves
                        # the whole state after every checkpoint: O(trials²))
                        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                        sync_config=tune.SyncConfig(sync_artifacts=True),
                        callbacks=[checkpoint_keeper()],
                        progress_reporter=reporter, verbose=0 if quiet else 1))
            t0 = time.perf_counter()
            tuner.fit()
            tidy_checkpoints(root)  # the final state is saved: the newest checkpoint only
            print(f"evaluation trials: {time.perf_counter() - t0:.0f} s", flush=True)
        finally:
            stack.close()
            if started:
                ray.shutdown()
    rows = []
    for pl in plans:
        f = pl.out / "final.json"
        m = json.loads(f.read_text()).get("metrics") if _done(pl.out) else None
        rows.append((pl.job, pl.out, m))
    return rows


def evaluation_trial(config: dict[str, Any], job, resources: dict[str, float]) -> None:
    """One evaluation (raydnas.evaluation.run_evaluation) as a Tune trial: per-epoch
    checkpoints to Tune, resumed from the last one after a crash, files in the trial directory."""
    device, threads = device_and_threads(resources)
    with_tune_checkpoints(lambda report, restore, log: run_evaluation(
        job, Path(os.getcwd()), report=report, resume=False, restore=restore, device=device,
        threads=threads, log=log))
