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

import contextlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .study import Study, check_fits, parse_study

STUDY_FILE = "raydnas_study.json"


@dataclass
class SweepSummary:
    """What a finished (or interrupted) sweep did; ``exit_code`` is what the CLI returns."""

    experiment: str
    total: int
    done: int
    failed: int
    unfinished: int
    reasons: dict[str, int] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    wall_seconds: float = 0.0
    search_seconds: float = 0.0
    optuna_storage: str | None = None
    optuna_best: dict[str, Any] = field(default_factory=dict)  # method -> best point (seed mean)
    report: str | None = None
    evaluations: dict[str, int] | None = None  # done / failed / unfinished evaluation trials

    @property
    def exit_code(self) -> int:
        if self.unfinished:
            return 130
        return 1 if self.failed else 0


def trial_dirname(trial) -> str:
    """``<method>_seed<k>[_p<point>]_<id>``: readable trial directories."""
    c = trial.config
    m = str(c.get("method", "trial")).replace("/", "-")
    p = "" if c.get("point") is None else f"_p{c['point']}"
    if c.get("kind") == "evaluate":
        return f"eval-{m}_seed{c.get('seed')}{p}_e{c.get('eval_seed')}_{trial.trial_id}"
    return f"{m}_seed{c.get('seed')}{p}_{trial.trial_id}"


def _fingerprint(study: Study) -> dict[str, Any]:
    return {
        "base": study.base,
        "methods": [{"name": m.name, "axes": m.axes, "set": m.overrides} for m in study.methods],
        "seeds": study.seeds,
        "optuna": None if study.optuna is None else {
            "params": [[p.key, p.kind, p.args] for p in study.optuna.params],
            "n_trials": study.optuna.n_trials, "metric": study.optuna.metrics,
            "mode": study.optuna.modes, "aggregate": study.optuna.aggregate},
        "evaluate": None if study.evaluate is None else study.evaluate.fingerprint(),
    }


def _check_same_study(study: Study, exists: bool) -> None:
    """Refuse to continue an experiment that was started from a different study."""
    if "://" in study.storage:
        return
    path = Path(study.experiment_path) / STUDY_FILE
    fp = json.loads(json.dumps(_fingerprint(study)))
    if exists and path.is_file():
        old = json.loads(path.read_text())
        if old != fp:
            diff = sorted(k for k in fp if fp[k] != old.get(k))
            raise ConfigError(study.source, "sweep.name", study.name,
                              f"the experiment {study.experiment_path} was started from a "
                              f"different study ({', '.join(diff)} differ); choose another "
                              "sweep.name (--name) or storage (--storage)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fp, indent=1))


def _node_capacities() -> list[dict[str, float]]:
    """Resources of every live node, plus node types an autoscaler may launch (`ray up`)."""
    import ray

    nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    boot = Path.home() / "ray_bootstrap_config.yaml"  # written on the head node by `ray up`
    if boot.is_file():
        import yaml

        try:
            types = (yaml.safe_load(boot.read_text()) or {}).get("available_node_types", {})
            nodes += [dict(t.get("resources", {})) for t in types.values()]
        except Exception:  # an unreadable bootstrap file must not stop the sweep
            pass
    return nodes


def _slots(study: Study, nodes: list[dict[str, float]]) -> int:
    n = 0
    need = study.resources
    for r in nodes:
        k = [r.get("CPU", 0.0) / need["cpu"]] if need["cpu"] else []
        k += [r.get("GPU", 0.0) / need["gpu"]] if need["gpu"] else []
        n += int(min(k) + 1e-9) if k else 0
    return max(1, n)


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


def _tensorboard_callback():
    """Tune's TensorBoard logger, except that every trial's HPARAMS entry holds every Optuna
    key: a key that does not apply to a trial's method is logged as NaN instead of being left
    out (Tune drops None), so TensorBoard's HPARAMS tab, which takes its columns from one
    arbitrary trial, shows every tuned parameter."""
    import math

    from ray.tune.logger import TBXLoggerCallback
    from ray.tune.utils import flatten_dict

    class Callback(TBXLoggerCallback):
        def _try_log_hparams(self, trial, result):
            from tensorboardX.summary import hparams

            params = {k: (math.nan if v is None else v)
                      for k, v in flatten_dict(trial.evaluated_params).items()
                      if v is None or isinstance(v, (str, bool, int, float))}
            try:
                for tag in hparams(hparam_dict=params, metric_dict=result):
                    self._trial_writer[trial].file_writer.add_summary(tag)
            except Exception:  # noqa: BLE001 - never fail a sweep over its TensorBoard hparams
                logging.getLogger(__name__).warning("could not log hparams of %s", trial)

    return Callback()


def _reporter(study: Study):
    from ray.tune import CLIReporter

    class Reporter(CLIReporter):
        """Tune's table without its "Result logdir: /tmp/ray/..." staging path (the results
        are in the experiment directory, printed at the start and in the summary)."""

        def _progress_str(self, *args, **kwargs) -> str:
            text = super()._progress_str(*args, **kwargs)
            return "\n".join(ln for ln in text.split("\n")
                             if not ln.startswith("Result logdir:"))

    metrics = {"epoch": "epoch", "val_acc": "val_acc", "discrete_val_acc": "disc_acc",
               "discretization_gap": "gap"}
    if study.evaluate is not None:
        metrics["test_acc"] = "test_acc"
    if study.metric not in metrics:
        metrics[study.metric] = study.metric
    params = {"method": "method", "seed": "seed"}
    if study.evaluate is not None:
        params["eval_seed"] = "eval_seed"
    if study.optuna is not None:
        params["point"] = "point"
        for p in study.optuna.params:
            params[p.key] = p.key
    return Reporter(metric_columns=metrics, parameter_columns=params, max_report_frequency=20,
                    sort_by_metric=True, max_column_length=40,
                    max_progress_rows=12, max_error_rows=8)


def _reason(error: Any) -> str:
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text[:200]


def summarize(results, study: Study, wall: float) -> SweepSummary:
    done, failed, unfinished = 0, 0, 0
    reasons: Counter[str] = Counter()
    best, search_s = None, 0.0
    evals = Counter()
    n_search = 0
    for r in results:
        m = r.metrics or {}
        if (r.config or {}).get("kind") == "evaluate":
            p = study.evaluate.protocol
            evals["failed" if r.error is not None else
                  "done" if m.get("epoch") == p.epochs else "unfinished"] += 1
            if r.error is not None:
                reasons[_reason(r.error)] += 1
            continue
        n_search += 1
        search_s += _epoch_seconds(r)
        if r.error is not None:
            failed += 1
            reasons[_reason(r.error)] += 1
            continue
        cfg = r.config or {}
        method = next((x for x in study.methods if x.name == cfg.get("method")), None)
        epochs = study.trial_config(method, cfg["seed"]).epochs if method else None
        if epochs is None or m.get("epoch", 0) < epochs and not m.get("early_stop"):
            unfinished += 1
            continue
        done += 1
        v = m.get(study.metric)
        if isinstance(v, (int, float)) and (best is None or (
                v > best["value"] if study.mode == "max" else v < best["value"])):
            best = {"value": v, "metric": study.metric, "method": cfg.get("method"),
                    "seed": cfg.get("seed"), "point": cfg.get("point"),
                    "genotype": m.get("genotype"), "path": r.path}
    unfinished += max(0, study.search_trials() - n_search)
    s = SweepSummary(study.experiment_path, study.search_trials(), done, failed, unfinished,
                     dict(reasons), best, wall, search_s, study.journal_path())
    if study.evaluate is not None:
        expected = done * len(study.evaluate.seeds)
        evals["unfinished"] = max(evals["unfinished"],
                                  expected - evals["done"] - evals["failed"])
        s.evaluations = {k: evals[k] for k in ("done", "failed", "unfinished")}
        s.unfinished += evals["unfinished"]
        s.failed += evals["failed"]
    return s


def _epoch_seconds(r) -> float:
    """Sum of a trial's per-epoch search times, from its metrics history."""
    try:
        df = r.metrics_dataframe
        if df is not None and "epoch_seconds" in df:
            return float(df.drop_duplicates("epoch", keep="last")["epoch_seconds"].sum())
    except Exception:
        pass
    return 0.0


def optuna_best(study: Study) -> dict[str, Any]:
    """Per method, the best Optuna point so far (its seed aggregate), read from the storage.

    Multi-objective studies give the size of their Pareto front instead.
    """
    import optuna

    from .searcher import open_storage

    storage = open_storage(study.journal_path())
    out: dict[str, Any] = {}
    for m in study.methods:
        try:
            st = optuna.load_study(study_name=study.study_name(m), storage=storage)
            if len(study.optuna.metrics) > 1:
                out[m.name] = {"pareto_front": len(st.best_trials)}
            else:
                b = st.best_trial
                out[m.name] = {"point": b.number, "value": b.value, "params": b.params}
        except (KeyError, ValueError):  # no study yet, or no complete point
            continue
    return out


def print_summary(s: SweepSummary, study: Study) -> None:
    p = print
    p("\n== raydnas sweep ==")
    p(f"trials: {s.total} total, {s.done} done, {s.failed} failed, {s.unfinished} unfinished"
      f"   (wall {s.wall_seconds:.0f} s, search time summed over trials {s.search_seconds:.0f} s)")
    if s.evaluations is not None:
        e = s.evaluations
        p(f"evaluations ({study.evaluate.protocol.label}): {e['done']} done, {e['failed']} "
          f"failed, {e['unfinished']} unfinished")
    for why, n in sorted(s.reasons.items(), key=lambda kv: -kv[1]):
        p(f"  failed x{n}: {why}")
    if s.best:
        b = s.best
        pt = "" if b["point"] is None else f" point {b['point']}"
        p(f"best {b['metric']} = {b['value']:.4f}: {b['method']} seed {b['seed']}{pt}")
        if b.get("genotype"):
            p(f"  genotype {b['genotype']}")
    if s.optuna_best:
        agg = study.optuna.aggregate
        p(f"Optuna, best point per method ({agg} of {study.optuna.metrics[0]} over seeds):")
        for name, b in s.optuna_best.items():
            if "pareto_front" in b:
                p(f"  {name}: {b['pareto_front']} points on the Pareto front")
            else:
                ps = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in b["params"].items())
                p(f"  {name}: {b['value']:.4f} at point {b['point']} ({ps})")
    p(f"results:     {s.experiment}")
    p(f"TensorBoard: tensorboard --logdir {s.experiment}")
    if s.optuna_storage:
        how = f"optuna-dashboard {s.optuna_storage}"
        p(f"Optuna:      {s.optuna_storage}   (studies {study.name}/<method>; {how})")
    if s.report:
        p(f"report:      {s.report}")
    else:
        p(f"report:      raydnas reduce {s.experiment}")
    if s.unfinished:
        p("interrupted: run the same command again to continue")


def validate_study(cfg, *, storage: str | None = None, name: str | None = None) -> Study:
    """Check a config's ``sweep``/``optuna`` blocks (what ``raydnas validate`` calls)."""
    return parse_study(cfg, storage=storage, name=name)


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
    from ..config import load_config

    cfg = load_config(config, overrides)
    study = parse_study(cfg, storage=storage, name=name)
    if cfg.sweep is None and cfg.optuna is None:
        print(f"{cfg.source}: no sweep block; running one method x 1 seed", flush=True)

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
    from ray import tune

    from .searcher import StudySearcher
    from .trainable import search_trial

    nodes = _node_capacities()
    check_fits(study, nodes)
    if "://" not in study.storage and len(nodes) > 1:
        print(f"note: {len(nodes)} nodes and a local storage path ({study.storage}); on a real "
              "cluster use storage every node reaches (s3://..., gs://..., or an NFS path)",
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
        pending = max(1, _slots(study, nodes))
    env = {"TUNE_MAX_PENDING_TRIALS_PG": str(pending),
           "RAY_AIR_NEW_OUTPUT": "0",  # the classic table reporter below
           # a snapshot per checkpoint is what we want (consistent resume): no warning about it
           "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
    if study.evaluate is not None:  # evaluation trials report test_acc, not the search metric
        env["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    t0 = time.perf_counter()
    with temporary_env(env):
        if can:
            print(f"continuing the experiment in {exp}", flush=True)
            tuner = tune.Tuner.restore(exp, trainable, resume_unfinished=True,
                                       resume_errored=retry_failed)
        else:
            searcher = StudySearcher(study)
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher, num_samples=study.total_trials(),
                    max_concurrent_trials=study.max_concurrent, metric=study.metric,
                    mode=study.mode, reuse_actors=True,
                    trial_dirname_creator=trial_dirname, trial_name_creator=trial_dirname),
                run_config=tune.RunConfig(
                    name=study.name, storage_path=study.storage,
                    failure_config=tune.FailureConfig(max_failures=study.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    sync_config=tune.SyncConfig(sync_artifacts=True),
                    callbacks=[_tensorboard_callback()],
                    progress_reporter=None if quiet else _reporter(study),
                    verbose=0 if quiet else 1),
            )
        results = tuner.fit()
    summary = summarize(results, study, time.perf_counter() - t0)
    if study.optuna is not None:
        summary.optuna_best = optuna_best(study)
    if reduce and not summary.unfinished:
        summary.report = _reduce(exp)
    print_summary(summary, study)
    return summary


def _reduce(exp: str) -> str | None:
    try:
        from ..reduce import reduce as reduce_fn
    except ImportError:
        return None
    try:
        df = reduce_fn(exp)
    except Exception as e:  # the sweep's results stand even if the report fails
        print(f"raydnas reduce failed: {type(e).__name__}: {e}", flush=True)
        return None
    out = getattr(df, "attrs", {}).get("out_dir")
    return f"{out}/report.md" if out else exp
