"""``run_sweep``: one study → one Ray Tune experiment, locally or on a cluster, resumable.

* Ray: without ``address`` a local Ray sized to this machine starts and is shut down at the end
  (also on Ctrl-C and errors); ``address="auto"`` (or ``ray://…``) joins a running cluster; an
  already initialized Ray (tests, notebooks) is used as is and left running.
* Resume: if ``<storage>/<name>`` holds an experiment, running the same command again (or with
  ``resume=True``) continues it with ``Tuner.restore``: finished trials are kept, started ones
  continue from their last epoch's checkpoint, the Optuna studies continue.
* Failures: ``FailureConfig(max_failures)`` retries a crashed trial from its checkpoint; trials that
  end in error are counted with their reason in the summary and the exit status is 1.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..config.experiment import load_config
from ..errors import ConfigError
from ..reduce import reduce as reduce_fn
from ..reduce.decision_report import decision_lines
from ..results import remote
from ..results.remote import is_uri
from .keeper import (
    checkpoint_keeper,
    repair_lost_checkpoints,
    snapshot_period,
    tidy_checkpoints,
)
from .study import Study, check_fits, parse_study
from .summary import SweepSummary, optuna_best, print_summary, summarize
from .tune_setup import node_capacities, reporter, slots, tensorboard_callback, trial_dirname
from .tune_util import quiet_ray_advice, temporary_env

# Lazy imports: Ray, and the modules built on it (searcher, trainable), load only when a study
# runs: parse_study and validate_study work without them.

STUDY_FILE = "raydnas_study.json"


def _fingerprint(study: Study) -> dict[str, Any]:
    if study.benchmarks:  # a suite: each benchmark's study, and the race they share
        return {"benchmarks": {n: _fingerprint(b) for n, b in study.benchmarks.items()},
                "skipped": study.skipped,
                **({"race": study.race.to_dict()} if study.race is not None else {})}
    return {
        "base": study.base,
        "methods": [{"name": m.name, "axes": m.axes, "set": m.overrides} for m in study.methods],
        "seeds": study.seeds,
        "optuna": None if study.optuna is None else {
            "params": [[p.key, p.kind, p.args] for p in study.optuna.params],
            "n_trials": study.optuna.n_trials, "metric": study.optuna.metrics,
            "mode": study.optuna.modes, "aggregate": study.optuna.aggregate},
        "evaluate": None if study.evaluate is None else study.evaluate.fingerprint(),
        # only with a race: experiments started before races existed keep their fingerprint
        **({"race": study.race.to_dict()} if study.race is not None else {}),
    }


def _check_same_study(study: Study, exists: bool) -> None:
    """Refuse to continue an experiment that was started from a different study; record the
    study beside the experiment (``raydnas reduce`` reads its race rules there), also on remote
    storage."""
    fp = json.loads(json.dumps(_fingerprint(study)))
    if is_uri(study.storage):
        uri = study.experiment_path.rstrip("/") + "/" + STUDY_FILE
        text = remote.read_text(uri) if exists else None
        path = None
    else:
        path = Path(study.experiment_path) / STUDY_FILE
        text = path.read_text() if exists and path.is_file() else None
    if text is not None:
        old = json.loads(text)
        if old != fp:
            diff = sorted(k for k in fp if fp[k] != old.get(k))
            raise ConfigError(study.source, "sweep.name", study.name,
                              f"the experiment {study.experiment_path} was started from a "
                              f"different study ({', '.join(diff)} differ); choose another "
                              "sweep.name (--name) or storage (--storage)")
    if path is None:
        remote.write_text(uri, json.dumps(fp, indent=1))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fp, indent=1))


def run_sweep(config: str | Path, *, overrides: list[str] | None = None, resume: bool = False,
              retry_failed: bool = False, address: str | None = None,
              storage: str | None = None, name: str | None = None, reduce: bool = True,
              num_cpus: int | None = None, quiet: bool = False) -> SweepSummary:
    """Run (or continue) the study in ``config`` as one Ray Tune experiment.

    Args:
        config: an experiment YAML with a ``sweep:`` (and optionally ``optuna:``) block.
        overrides: ``key.path=value`` edits of the YAML (as ``raydnas search --set``).
        resume: require an existing experiment to continue (rerunning continues anyway).
        retry_failed: also rerun trials that ended in error, from their last checkpoint.
        address: a Ray cluster to join (``auto``); None starts a local Ray.
        storage, name: override ``sweep.storage`` / ``sweep.name``.
        reduce: call ``raydnas.reduce.reduce`` on the experiment at the end, if available.
        num_cpus: size of the local Ray (default: every CPU of this machine).
        quiet: no progress table (the final summary is still printed).

    Raises:
        ConfigError: bad study, before anything starts.
    """
    cfg = load_config(config, overrides)
    study = parse_study(cfg, storage=storage, name=name)
    if cfg.sweep is None and cfg.optuna is None and cfg.evaluate is None:
        raise ConfigError(cfg.source, "sweep", None,
                          "a sweep: block (methods or grid, seeds), an optuna: or an evaluate: "
                          f"block; this config is one search: raydnas search {cfg.source}")

    import ray

    quiet_ray_advice()
    started = not ray.is_initialized()  # a Ray someone else started is left as it is
    if started:
        if address:  # join a running cluster (disconnecting later leaves it running)
            ray.init(address=address, log_to_driver=True)
        else:  # a local Ray for this sweep only
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                     log_to_driver=True)
    try:
        return _run(study, cfg.source, resume=resume, retry_failed=retry_failed,
                    reduce=reduce, quiet=quiet)
    finally:
        if started:
            ray.shutdown()


def _run(study: Study, source: str, *, resume: bool, retry_failed: bool, reduce: bool,
         quiet: bool) -> SweepSummary:
    import ray
    from ray import tune

    from .suite_searcher import make_searcher
    from .trainable import search_trial

    nodes = node_capacities()
    check_fits(study, nodes)
    live = sum(1 for n in ray.nodes() if n.get("Alive"))  # nodes also lists launchable types
    if not is_uri(study.storage) and (live > 1 or len(nodes) > live):
        print(f"note: a cluster ({live} nodes now) and a local storage path ({study.storage}); "
              "on a real cluster use storage every node reaches (s3://..., gs://..., or NFS)",
              flush=True)
    exp = study.experiment_path
    can = tune.Tuner.can_restore(exp)
    if resume and not can:
        raise ConfigError(source, "--resume", exp, "an existing experiment (none found there)")
    _check_same_study(study, can)
    trainable = tune.with_resources(tune.with_parameters(search_trial, study=study),
                                    {"cpu": study.resources["cpu"], "gpu": study.resources["gpu"]})
    if study.optuna is None:
        # let every trial be pending at once so an autoscaler sees the whole demand
        pending = study.total_trials()
    else:
        pending = max(1, slots(study, nodes))
    env = {"TUNE_MAX_PENDING_TRIALS_PG": str(pending),
           "RAY_AIR_NEW_OUTPUT": "0",  # the classic table reporter below
           # remote storage: a snapshot per checkpoint is what we want (consistent resume)
           "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
    # local storage: Tune keeps every checkpoint and saves the experiment state on its own
    # period; the keeper deletes superseded checkpoints once a saved state no longer names
    # them (num_to_keep=1 would save the whole state after every trial checkpoint: O(trials²))
    local = not is_uri(exp)
    if local and "TUNE_GLOBAL_CHECKPOINT_S" not in os.environ:
        env["TUNE_GLOBAL_CHECKPOINT_S"] = snapshot_period(study.total_trials())
    if study.evaluate is not None:  # evaluation trials report test_acc, not the search metric
        env["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    t0 = time.perf_counter()
    with temporary_env(env):
        if can:
            print(f"continuing the experiment in {exp}", flush=True)
            repair_lost_checkpoints(exp, log=lambda m: print(m, flush=True))
            tuner = tune.Tuner.restore(exp, trainable, resume_unfinished=True,
                                       resume_errored=retry_failed)
        else:
            searcher = make_searcher(study)
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher, num_samples=study.total_trials(),
                    max_concurrent_trials=study.max_concurrent,
                    metric=study.scheduler.metric if study.scheduler else study.metric,
                    mode=study.scheduler.mode if study.scheduler else study.mode,
                    scheduler=study.scheduler.build() if study.scheduler else None,
                    reuse_actors=True,
                    trial_dirname_creator=trial_dirname, trial_name_creator=trial_dirname),
                run_config=tune.RunConfig(
                    name=study.name, storage_path=study.storage,
                    failure_config=tune.FailureConfig(max_failures=study.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=None if local else 1),
                    sync_config=tune.SyncConfig(sync_artifacts=True),
                    callbacks=[tensorboard_callback()] + ([checkpoint_keeper()] if local else []),
                    progress_reporter=None if quiet else reporter(study),
                    verbose=0 if quiet else 1),
            )
        results = tuner.fit()
    if local:  # the final state is saved: each trial keeps its newest checkpoint only
        tidy_checkpoints(exp)
    summary = summarize(results, study, time.perf_counter() - t0)
    if study.optuna is not None:
        summary.optuna_best = optuna_best(study)
    if reduce and not summary.unfinished:
        summary.report, summary.decision = _reduce(exp)
    print_summary(summary, study)
    return summary


def _reduce(exp: str) -> tuple[str | None, list[str]]:
    """The report's path and its decision lines (None, [] if the report failed)."""
    try:
        df = reduce_fn(exp)
    except Exception as e:  # the sweep's results stand even if the report fails
        print(f"raydnas reduce failed: {type(e).__name__}: {e}", flush=True)
        return None, []
    out = getattr(df, "attrs", {}).get("out_dir")
    return (f"{out}/report.md" if out else exp), decision_lines(df)
