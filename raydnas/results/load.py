"""Read a Ray Tune experiment directory into trial records, without Tune's Python API.

Layout read (Ray Tune 2.60, local or remote storage)::

    <storage>/<name>/experiment_state-*.json   trial ids, status, config, trial dir (may lag)
    <storage>/<name>/<trial dir>/params.json    the trial's flat config
    <storage>/<name>/<trial dir>/result.json    one JSON object per reported epoch
    <storage>/<name>/<trial dir>/error.txt      present once the trial raised
    <storage>/<name>/<trial dir>/final.json     raydnas artifacts (synced with sync_artifacts)
    <storage>/<name>/<trial dir>/metrics.jsonl

A trial ends up in one of five states:

* ``complete``: the search ran all its epochs (``final.json`` says ``complete``), or stopped
  itself (``early_stop`` in its last metrics), or Tune says TERMINATED and the number of epochs
  in ``config.yaml`` was reached.
* ``stopped``: a stop rule ended it (``stopped_reason`` in its last metrics: ``dead``,
  ``collapsed``, ``margin_stalled``, ``hessian``), or Tune terminated it before its last epoch
  (a trial scheduler such as ASHA: reason ``scheduler``). Its last epoch is used; it is
  counted in ``n_stopped`` and its reason in ``stopped_reasons``, which the report shows
  beside every mean.
* ``failed``: Tune says ERROR, or ``error.txt`` exists and the search did not finish.
* ``running``: not finished and not failed: Tune says RUNNING, or it has results but not its
  last epoch (still running, or its driver was killed).
* ``missing``: known to the experiment but without a single result (pending, never started).

Only ``complete`` and ``stopped`` trials enter the statistics; the others are listed.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..axes import AXIS_NAMES
from ..errors import ConfigError
from .files import epoch_rows, read_json, read_jsonl
from .remote import fetch_remote, is_uri

USED = ("complete", "stopped")
@dataclass
class Trial:
    """One trial of the experiment as found on disk."""

    trial_id: str
    path: Path | None
    config: dict[str, Any]
    status: str
    epochs: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    error: str | None = None

    @property
    def last(self) -> dict[str, Any]:
        return self.epochs[-1] if self.epochs else {}

    @property
    def stopped_reason(self) -> str | None:
        """Why the trial stopped before its last epoch: a stop rule's code (``dead``,
        ``collapsed``, ``margin_stalled``, ``hessian``), ``scheduler`` (Tune ended it), or
        None for a trial that was not stopped."""
        if self.status != "stopped":
            return None
        return str(self.last.get("stopped_reason") or "scheduler")

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def method(self) -> str:
        m = self.config.get("method")
        if m:
            return str(m)
        names = [str(self.config[a]) for a in AXIS_NAMES if a in self.config]
        return "/".join(names) if names else "?"

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """Dotted config keys (``regularizer.rho``, ``optim.a_lr``): the Optuna/grid point."""
        return {k: v for k, v in sorted(self.config.items()) if "." in k}

    @property
    def point(self) -> Any:
        return self.config.get("point")

    def group_key(self) -> tuple:
        hp = tuple((k, json.dumps(v, sort_keys=True)) for k, v in self.hyperparameters.items())
        return (self.method, json.dumps(self.point), hp)

    def describe(self) -> str:
        where = self.path.name if self.path is not None else "(no trial directory)"
        why = f": {self.error}" if self.error else ""
        n = len(self.epochs)
        return (f"{self.trial_id} [{self.status}] {self.method} seed {self.seed} "
                f"({n} epoch{'' if n == 1 else 's'}) {where}{why}")


@dataclass
class Experiment:
    """An experiment directory: where it is, its name and its trials."""

    path: Path
    name: str
    trials: list[Trial]
    source: str
    #: evaluation trials (``kind: evaluate``, a study's ``evaluate:`` stage), kept apart from
    #: the search trials; ``raydnas.reduce.truth`` joins their test accuracy
    evaluations: list[Trial] = field(default_factory=list)

    def by_status(self, *statuses: str) -> list[Trial]:
        return [t for t in self.trials if t.status in statuses]


def _state_entries(path: Path) -> dict[str, dict[str, Any]]:
    """Trial id -> {status, config, dir, error} from the newest ``experiment_state-*.json``."""
    files = sorted(path.glob("experiment_state-*.json"))
    if not files:
        return {}
    data = read_json(files[-1])
    out: dict[str, dict[str, Any]] = {}
    for item in (data or {}).get("trial_data", []) if isinstance(data, dict) else []:
        try:
            state = json.loads(item[0]) if isinstance(item[0], str) else item[0]
            runtime = json.loads(item[1]) if isinstance(item[1], str) else item[1]
        except (ValueError, IndexError, TypeError):
            continue
        if not isinstance(state, dict) or "trial_id" not in state:
            continue
        cfg = state.get("config")
        out[state["trial_id"]] = {
            "status": state.get("status"),
            "config": cfg if isinstance(cfg, dict) else {},
            "dir": state.get("relative_logdir"),
            "error": (runtime or {}).get("error_filename") if isinstance(runtime, dict) else None,
        }
    return out


def _configured_epochs(trial_dir: Path) -> int | None:
    p = trial_dir / "config.yaml"
    if not p.is_file():
        return None
    try:
        raw = yaml.safe_load(p.read_text())
        return int(raw.get("epochs")) if isinstance(raw, dict) and raw.get("epochs") else None
    except Exception:  # noqa: BLE001 - an unreadable artifact only loses this hint
        return None


def _status(tune_status: str | None, epochs: list[dict], final: dict | None, failed: bool,
            wanted: int | None) -> str:
    if not epochs:
        return "failed" if failed else ("running" if tune_status == "RUNNING" else "missing")
    last = epochs[-1]
    if last.get("stopped_reason"):  # a stop rule ended it: what it is, not a finished search
        return "stopped"
    done = bool(final and final.get("complete")
                and final.get("metrics", {}).get("epoch") == last.get("epoch"))
    done = done or bool(last.get("early_stop"))
    if wanted is not None and last.get("epoch", 0) >= wanted:
        done = True
    if done:
        return "complete"
    if failed:
        return "failed"
    if tune_status == "TERMINATED":
        return "stopped"
    return "running"


def _first_error_line(path: Path) -> str | None:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:200] if lines else "error.txt present"


def _load_trial(trial_id: str, d: Path | None, entry: dict[str, Any]) -> Trial:
    config = dict(entry.get("config") or {})
    if d is None:
        return Trial(trial_id, None, config, "missing")
    params = read_json(d / "params.json")
    if isinstance(params, dict):
        config = params
    rows = epoch_rows(read_jsonl(d / "result.json"))
    own = epoch_rows(read_jsonl(d / "metrics.jsonl"))
    # the search's own history holds every metric (Tune is reported a part of each epoch,
    # raydnas.sweep.reported); Tune's record is used where it is ahead (a running trial)
    if own and len(own) >= len(rows):
        rows = own
    final = read_json(d / "final.json")
    final = final if isinstance(final, dict) else None
    error = _first_error_line(d / "error.txt") if (d / "error.txt").is_file() else None
    failed = error is not None or entry.get("status") == "ERROR"
    if failed and error is None:
        error = "Tune reports ERROR"
    status = _status(entry.get("status"), rows, final, failed, _configured_epochs(d))
    if status == "complete":
        error = None  # recovered after a failure (error.txt stays behind)
    if rows and "trial_id" in rows[-1]:
        trial_id = str(rows[-1]["trial_id"])
    return Trial(trial_id, d, config, status, rows, final, error)


def not_an_experiment(path: str) -> ConfigError:
    """The error for a path that holds no experiment and no search run."""
    return ConfigError("raydnas reduce", "EXPERIMENT", path,
                       "a Ray Tune experiment directory (experiment_state-*.json and/or trial "
                       "directories holding params.json) or one search run directory "
                       "(raydnas search --out DIR)")


def _single_run(d: Path, source: str) -> Experiment:
    """One ``raydnas search`` run as an experiment of one trial (its cell drawing, α plot and
    numbers; statistics across seeds are n/a)."""
    try:
        raw = yaml.safe_load((d / "config.yaml").read_text()) or {}
    except Exception:  # noqa: BLE001 - an unreadable config only loses the method name
        raw = {}
    config: dict[str, Any] = {}
    for a in AXIS_NAMES:
        v = raw.get(a)
        config[a] = v.get("name") if isinstance(v, dict) else (v or "?")
    config["method"] = "/".join(str(config[a]) for a in AXIS_NAMES)
    config["seed"] = raw.get("seed")
    rows = epoch_rows(read_jsonl(d / "metrics.jsonl"))
    final = read_json(d / "final.json")
    final = final if isinstance(final, dict) else None
    status = _status("TERMINATED" if final and final.get("complete") else None, rows, final,
                     False, raw.get("epochs") if isinstance(raw.get("epochs"), int) else None)
    trial = Trial(d.name, d, config, status, rows, final, None)
    return Experiment(d, d.resolve().name, [trial], source)


def load_experiment(path: str | Path, *, cache: Path | None = None) -> Experiment:
    """Read every trial of an experiment directory (or storage URI).

    Raises:
        ConfigError: ``path`` is not an experiment directory.
    """
    source = str(path)
    if is_uri(source):
        cache = cache or Path(tempfile.mkdtemp(prefix="raydnas-reduce-"))
        local = fetch_remote(source, cache)
    else:
        local = Path(path).expanduser()
    if not local.is_dir():
        raise not_an_experiment(source)
    if (local / "config.yaml").is_file() and (local / "final.json").is_file() \
            and not (local / "params.json").is_file():
        return _single_run(local, source)
    entries = _state_entries(local)
    dirs = {d.name: d for d in sorted(local.iterdir())
            if d.is_dir() and ((d / "params.json").is_file() or (d / "result.json").is_file())}
    if not entries and not dirs:
        raise not_an_experiment(source)
    trials: list[Trial] = []
    seen_dirs: set[str] = set()
    for tid, entry in entries.items():
        name = Path(entry["dir"]).name if entry.get("dir") else None
        d = dirs.get(name) if name else None
        if d is not None:
            seen_dirs.add(d.name)
        trials.append(_load_trial(tid, d, entry))
    for name, d in dirs.items():
        if name not in seen_dirs:  # written after the last state snapshot
            trials.append(_load_trial(name, d, {}))
    name = Path(source.rstrip("/")).name if is_uri(source) else local.resolve().name
    evals = [t for t in trials if t.config.get("kind") == "evaluate"]
    trials = [t for t in trials if t.config.get("kind") != "evaluate"]
    return Experiment(local, name, trials, source, evals)
