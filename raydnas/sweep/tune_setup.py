"""The Ray Tune pieces a sweep is run with: trial directory names, node capacities, the
environment Tune reads, quieter Ray advice, the TensorBoard callback and the progress table."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import yaml

from .study import Study

# Lazy imports: Ray, Tune's loggers and tensorboardX load only when a study runs.


def trial_dirname(trial) -> str:
    """``[<benchmark>-]<method>_seed<k>[_p<point>]_<id>``: readable trial directories."""
    c = trial.config
    m = str(c.get("method", "trial")).replace("/", "-")
    if c.get("benchmark"):
        m = f"{c['benchmark']}-{m}"
    p = "" if c.get("point") is None else f"_p{c['point']}"
    if c.get("kind") == "evaluate":
        return f"eval-{m}_seed{c.get('seed')}{p}_e{c.get('eval_seed')}_{trial.trial_id}"
    return f"{m}_seed{c.get('seed')}{p}_{trial.trial_id}"


def node_capacities() -> list[dict[str, float]]:
    """Resources of every live node, plus node types an autoscaler may launch (`ray up`)."""
    import ray

    nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    boot = Path.home() / "ray_bootstrap_config.yaml"  # written on the head node by `ray up`
    if boot.is_file():
        try:
            types = (yaml.safe_load(boot.read_text()) or {}).get("available_node_types", {})
            nodes += [dict(t.get("resources", {})) for t in types.values()]
        except Exception:  # an unreadable bootstrap file must not stop the sweep
            pass
    return nodes


def slots(study: Study, nodes: list[dict[str, float]]) -> int:
    """How many trials of the study fit on these nodes at once (at least 1)."""
    n = 0
    need = study.resources
    for r in nodes:
        k = [r.get("CPU", 0.0) / need["cpu"]] if need["cpu"] else []
        k += [r.get("GPU", 0.0) / need["gpu"]] if need["gpu"] else []
        n += int(min(k) + 1e-9) if k else 0
    return max(1, n)


class _DropNaNNotice(logging.Filter):
    """Drops tensorboardX's "NaN or Inf found in input tensor." (the value is still logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "NaN or Inf found in input tensor" not in record.getMessage()


def tensorboard_callback():
    """Tune's TensorBoard logger, except that every trial's HPARAMS entry holds every Optuna
    key: a key that does not apply to a trial's method is logged as NaN instead of being left
    out (Tune drops None), so TensorBoard's HPARAMS tab, which takes its columns from one
    arbitrary trial, shows every tuned parameter."""

    from ray.tune.logger import TBXLoggerCallback

    # metrics that are NaN by design (a std with one seed, an Optuna key that does not apply)
    # are logged as NaN; tensorboardX warns about each one, which is noise
    logging.getLogger("tensorboardX.x2num").addFilter(_DropNaNNotice())
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


def sortable(trials, metric: str | None) -> bool:
    """Whether Tune can sort ``trials``' table by ``metric``: every finished one reports it."""
    return all((t.last_result or {}).get(metric) is not None
               for t in trials if t.status == "TERMINATED")


def _reporter_class():
    from ray.tune import CLIReporter

    global StudyReporter

    class StudyReporter(CLIReporter):
        """Tune's table without its "Result logdir: /tmp/ray/..." staging path (the results
        are in the experiment directory, printed at the start and in the summary), sorted by
        the study's metric only while every finished trial reports it (evaluation trials
        report test_acc; Tune's sort would compare None with None and end the sweep), and with
        a "Current best trial" line only for a trial whose config has every parameter column
        (Tune raises on a missing one: search trials have no eval_seed).

        A module-level class: a resumed experiment unpickles its reporter by reference, so
        it runs this code, not the code of the run that started it."""

        def _current_best_trial(self, trials):
            # Tune's "Current best trial" line looks up every parameter column in that trial's
            # config and raises on a missing one (a search trial has no eval_seed): no line then
            best, metric = super()._current_best_trial(trials)
            cols = self._parameter_columns or {}
            config = (best.last_result or {}).get("config", {}) if best is not None else {}
            if best is not None and any(c not in config for c in cols):
                return None, metric
            return best, metric

        def _progress_str(self, trials, *args, **kwargs) -> str:
            self._sort_by_metric = self._sort_by_metric and sortable(trials, self._metric)
            text = super()._progress_str(trials, *args, **kwargs)
            return "\n".join(ln for ln in text.split("\n")
                             if not ln.startswith("Result logdir:"))

    StudyReporter.__qualname__ = "StudyReporter"
    return StudyReporter


def __getattr__(name: str):
    # StudyReporter is made on first use (importing this module must not import Ray); a
    # pickle of it resolves the name here
    if name == "StudyReporter":
        return _reporter_class()
    raise AttributeError(name)


def reporter(study: Study):
    """Tune's progress table with the study's metric and parameter columns."""
    Reporter = globals().get("StudyReporter") or _reporter_class()

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


