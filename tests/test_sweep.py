"""`raydnas sweep` on a real local Ray: every trial's logs reach the storage, Optuna persists.

Uses the session-wide ``ray_local`` (2 CPUs). Tiny space, 4 channels, 1-2 epochs on digits.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from raydnas.errors import ConfigError
from raydnas.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEP = str(ROOT / "configs" / "quickstart_sweep.yaml")
OPTUNA = str(ROOT / "configs" / "quickstart_optuna.yaml")
FLAT = {"activation", "gradient", "schedule", "regularizer", "seed", "method", "point"}

pytestmark = pytest.mark.slow


def trial_dirs(exp: Path) -> list[Path]:
    return sorted(p for p in exp.iterdir() if p.is_dir() and (p / "params.json").is_file())


def event_reader(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def hparams_keys(trial_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.plugins.hparams import plugin_data_pb2

    (f,) = trial_dir.glob("events.out.tfevents.*")
    acc = pea.EventAccumulator(str(f))
    acc.Reload()
    keys: set[str] = set()
    for content in acc.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            keys |= set(data.session_start_info.hparams)
    return keys


def test_quickstart_sweep_every_trial_logs_reach_storage(ray_local, tmp_path):
    s = run_sweep(SWEEP, storage=str(tmp_path), name="qs", reduce=False, quiet=True)
    exp = tmp_path / "qs"
    assert (s.total, s.done, s.failed, s.unfinished, s.exit_code) == (4, 4, 0, 0, 0)
    dirs = trial_dirs(exp)
    assert len(dirs) == 4
    seen = set()
    for d in dirs:
        params = json.loads((d / "params.json").read_text())
        assert FLAT <= set(params) and params["point"] is None
        seen.add((params["method"], params["seed"]))
        final = json.loads((d / "final.json").read_text())
        assert final["complete"] and final["seed"] == params["seed"]
        # Tune is reported the metrics it reads (its per-trial state stays small); the
        # search's own metrics.jsonl, which reduce reads, holds the whole record
        tune_last = json.loads((d / "result.json").read_text().splitlines()[-1])
        own_last = json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])
        assert {"discrete_val_acc", "genotype", "epoch_seconds"} <= set(tune_last)
        assert "lr" not in tune_last and "alpha_steps_epoch" not in tune_last
        assert {"lr", "alpha_steps_epoch"} <= set(own_last)
        assert final["method"]["activation"] == params["activation"]
        # the trial's own TensorBoard logs (written in its working dir) were synced as artifacts
        acc = event_reader(d / "tb")
        tags = acc.Tags()
        assert [e.step for e in acc.Scalars("search/val_acc")] == [1, 2]
        assert {"alpha/normal", "alpha/reduce"} <= set(tags["images"])
        img = acc.Images("alpha/normal")[-1]
        assert img.width > 0 and img.encoded_image_string[:4] == b"\x89PNG"
        # Tune's own event file sits beside it; its hparams hold the method axes and seed
        assert hparams_keys(d) >= {"activation", "gradient", "schedule", "regularizer", "method",
                                   "seed"}
    assert seen == {(m, k) for k in (0, 1) for m in ("softmax/first_order/every/none",
                                                      "softmax/first_order/interval/none")}
    assert s.search_seconds > 0 and s.wall_seconds > 0
    from raydnas.results.load import load_experiment

    assert all("lr" in t.last for t in load_experiment(exp).trials)


def test_optuna_sweep_persists_one_study_per_method_told_the_mean_over_seeds(ray_local, tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    s = run_sweep(OPTUNA, storage=str(tmp_path), name="opt", reduce=True, quiet=True,
                  overrides=["epochs=1", "optuna.n_trials=2", "sweep.grid.regularizer=[prox]"])
    assert (s.total, s.done, s.failed) == (4, 4, 0)
    # the sweep ended with the reduce report, one group per Optuna point
    report = Path(s.report)
    assert report == tmp_path / "opt" / "report" / "report.md" and report.is_file()
    assert "point 0" in report.read_text() and "point 1" in report.read_text()
    journal = tmp_path / "opt" / "optuna.journal"
    assert s.optuna_storage == str(journal) and journal.is_file()
    storage = JournalStorage(JournalFileBackend(str(journal)))
    names = [x.study_name for x in optuna.get_all_study_summaries(storage)]
    assert names == ["opt/softmax/first_order/every/prox"]
    study = optuna.load_study(study_name=names[0], storage=storage)
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    # each point ran on both seeds with its suggested value; the study holds the seed mean
    by_point: dict[int, list] = {}
    for d in trial_dirs(tmp_path / "opt"):
        params = json.loads((d / "params.json").read_text())
        final = json.loads((d / "final.json").read_text())
        cfg = yaml.safe_load((d / "config.yaml").read_text())  # what the trial really ran
        cfg_a_lr = cfg["optim"]["a_lr"]
        assert cfg_a_lr == params["optim.a_lr"]
        assert cfg["regularizer"] == {"name": "prox", "rho": params["regularizer.rho"]}
        by_point.setdefault(params["point"], []).append(
            (params["seed"], cfg_a_lr, final["metrics"]["discrete_val_acc"]))
    assert sorted(by_point) == [t.number for t in trials]
    for t in trials:
        runs = by_point[t.number]
        assert sorted(r[0] for r in runs) == [0, 1]
        assert all(r[1] == t.params["optim.a_lr"] for r in runs)
        assert t.value == pytest.approx(statistics.fmean(r[2] for r in runs), abs=1e-12)
    assert s.optuna_best["softmax/first_order/every/prox"]["value"] == max(t.value for t in trials)
    assert len({t.params["optim.a_lr"] for t in trials}) == 2
    assert all(set(t.params) == {"optim.a_lr", "regularizer.rho"} for t in trials)


def test_resource_request_larger_than_any_node_fails_before_trials(ray_local, tmp_path):
    with pytest.raises(ConfigError) as e:
        run_sweep(SWEEP, storage=str(tmp_path), name="big", reduce=False, quiet=True,
                  overrides=["sweep.resources.cpu=3"])
    assert e.value.key == "sweep.resources"
    assert not (tmp_path / "big").exists()


def test_diverging_trial_is_recorded_failed_with_its_reason_others_finish(ray_local, tmp_path):
    s = run_sweep(SWEEP, storage=str(tmp_path), name="nan", reduce=False, quiet=True,
                  overrides=["epochs=1", "sweep.seeds=1", "sweep.max_failures=1",
                             "sweep.methods=[{name: diverges, set: {optim.w_lr: 1.0e+30, "
                             "optim.w_momentum: 0.0}}]"])
    assert (s.total, s.done, s.failed, s.exit_code) == (2, 1, 1, 1)
    (why, n), = s.reasons.items()
    assert n == 1 and "NonFiniteLoss" in why and "non-finite training loss" in why
    bad = [d for d in trial_dirs(tmp_path / "nan") if d.name.startswith("diverges")]
    assert len(bad) == 1 and (bad[0] / "error.txt").is_file()
    assert "NonFiniteLoss" in json.loads((bad[0] / "failure.json").read_text())["error"]


def test_sweep_console_shows_raydnas_guidance_only(tmp_path):
    """A sweep on its own local Ray: the progress table without Tune's staging "Result logdir"
    and without Ray's token-auth notice; the results path is raydnas's own."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "raydnas", "sweep", SWEEP, "--storage",
                        str(tmp_path), "--name", "c", "--set", "epochs=1", "--no-reduce",
                        "--num-cpus", "2"], capture_output=True, text=True, timeout=300,
                       env=dict(__import__("os").environ, PYTHONPATH=str(ROOT)))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "Trial status" in out or "== Status ==" in out  # the table is there
    assert "Result logdir" not in out and "Token authentication is enabled" not in out
    assert "Tuner.restore" not in out and f"results:     {tmp_path / 'c'}" in out


def test_tensorboard_hparams_hold_every_optuna_key(ray_local, tmp_path):
    """TensorBoard's HPARAMS tab takes its columns from one arbitrary trial: every trial must
    carry every Optuna key (NaN where it does not apply to the trial's method)."""
    run_sweep(OPTUNA, storage=str(tmp_path), name="hp", reduce=False, quiet=True,
              overrides=["epochs=1", "optuna.n_trials=1", "sweep.seeds=1"])
    dirs = trial_dirs(tmp_path / "hp")
    methods = {json.loads((d / "params.json").read_text())["regularizer"] for d in dirs}
    assert methods == {"none", "prox"}
    for d in dirs:
        assert hparams_keys(d) >= {"regularizer.rho", "optim.a_lr", "method", "seed"}, d.name
