"""The Ray Tune trial: the unchanged ``raydnas.search.run.run_search`` with ``report`` bound to
Tune.

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
from pathlib import Path
from typing import Any

from ..search.run import NonFiniteLoss, run_search
from .eval_trials import evaluation_trial
from .reported import tune_keys, tune_view
from .stage import job_of
from .study import Study
from .tune_util import device_and_threads, with_tune_checkpoints

FAILURE_MARKER = "failure.json"


def search_trial(config: dict[str, Any], study: Study) -> None:
    """Function trainable: one complete search with one method, seed (and Optuna point); or,
    for ``kind: evaluate`` configs (the study's evaluation stage), one evaluation; in a suite
    the trial's ``benchmark`` picks that benchmark's study."""
    study = study.sub(config.get("benchmark"))
    if config.get("kind") == "evaluate":
        return evaluation_trial(config, job_of(config, study), study.resources)
    method = next(m for m in study.methods if m.name == config["method"])
    params = {k: config[k] for k in method.params if config.get(k) is not None}
    cfg = study.trial_config(method, config["seed"], params)
    out = Path(os.getcwd())
    marker = out / FAILURE_MARKER
    if marker.is_file():
        raise RuntimeError(json.loads(marker.read_text())["error"])
    device, threads = device_and_threads(study.resources)

    def run(report, restore, log):
        try:
            return run_search(cfg, out, report=report, resume=False, restore=restore,
                              device=device, threads=threads, log=log)
        except Exception as e:  # deterministic failures: do not recompute them on retry
            oom = type(e).__name__ == "OutOfMemoryError"
            if isinstance(e, NonFiniteLoss) or oom:
                marker.write_text(json.dumps({"error": f"{type(e).__name__}: {e}"}))
            raise

    keys = tune_keys(study)
    with_tune_checkpoints(run, view=lambda m: tune_view(m, keys))
