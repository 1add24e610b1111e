"""The sweep driver is SIGKILLed halfway; the same command continues without redoing finished work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from drivers import kill_driver_when

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


# long enough that the second wave of trials is still running when the driver is killed
EPOCHS = 5

def _complete(d: Path) -> bool:
    try:
        return json.loads((d / "final.json").read_text())["complete"]
    except (OSError, ValueError, KeyError):
        return False


def test_sigkill_driver_then_rerun_continues_without_redoing_trials(tmp_path):
    """With an ASHA scheduler: its state resumes with the experiment, and a trial it stopped
    stays stopped (recorded with reason ``scheduler``), neither rerun nor counted complete."""
    exp = tmp_path / "qs"
    cmd = [sys.executable, "-m", "raydnas", "sweep", str(ROOT / "configs" / "quickstart_sweep.yaml"),
           "--storage", str(tmp_path), "--name", "qs", "--set", f"epochs={EPOCHS}", "--no-reduce",
           "--set", "sweep.scheduler={name: asha, grace_epochs: 1, reduction_factor: 2}",
           "--num-cpus", "2", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def one_finished() -> bool:
        dirs = [d for d in exp.glob("*_seed*") if d.is_dir()] if exp.is_dir() else []
        return any(_complete(d) for d in dirs)

    # settle: let Tune record the finished trial in its experiment snapshot
    kill_driver_when(cmd, tmp_path / "first.log", one_finished, env=env, settle=3)
    done_before: dict[Path, tuple[int, bytes]] = {}
    for d in exp.glob("*_seed*"):
        if _complete(d):
            done_before[d] = ((d / "final.json").stat().st_mtime_ns, (d / "metrics.jsonl").read_bytes())
    assert 1 <= len(done_before) < 4, "kill should land halfway"

    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    dirs = sorted(d for d in exp.glob("*_seed*") if d.is_dir())
    keys = [(json.loads((d / "params.json").read_text())["method"],
             json.loads((d / "params.json").read_text())["seed"]) for d in dirs]
    assert len(dirs) == 4 and len(set(keys)) == 4  # no trial was started twice
    from raydnas.results.load import load_experiment

    status = {t.path.name: (t.status, t.stopped_reason) for t in load_experiment(exp).trials}
    for d in dirs:
        epochs = [json.loads(ln)["epoch"] for ln in (d / "metrics.jsonl").read_text().splitlines()]
        assert epochs == list(range(1, len(epochs) + 1))
        if len(epochs) == EPOCHS:
            assert _complete(d) and status[d.name] == ("complete", None)
        else:  # ASHA stopped it at a rung: it stays stopped, with its reason
            assert not _complete(d) and status[d.name] == ("stopped", "scheduler")
    for d, (mtime, metrics) in done_before.items():  # finished trials were not redone
        assert (d / "final.json").stat().st_mtime_ns == mtime
        assert (d / "metrics.jsonl").read_bytes() == metrics


EVAL = ["--set", "evaluate.set.cutout=0", "--set", "evaluate.set.epochs=4",
        "--set", "evaluate.set.channels=4", "--set", "evaluate.set.cells=3",
        "--set", "sweep.baseline.random=2"]


def test_sweep_with_evaluate_stage_killed_and_resumed(tmp_path):
    """One command runs the searches, their evaluations and the random baseline; killed while
    evaluations run, the same command finishes every one of them without starting any trial
    twice, and the report joins the test accuracies and the random cells."""
    exp = tmp_path / "qse"
    cmd = [sys.executable, "-m", "raydnas", "sweep", str(ROOT / "configs" / "quickstart_sweep.yaml"),
           "--storage", str(tmp_path), "--name", "qse", "--num-cpus", "2", "--quiet", *EVAL]
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def an_evaluation_runs() -> bool:
        evals = list(exp.glob("eval-*")) if exp.is_dir() else []
        return any((d / "metrics.jsonl").is_file() for d in evals)

    kill_driver_when(cmd, tmp_path / "first.log", an_evaluation_runs, env=env, poll=0.3,
                     settle=1)
    evals_before = [d for d in exp.glob("eval-*") if _complete(d)]
    assert len(evals_before) < 6, "kill should land while evaluations run"

    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "evaluations (darts_cpu (4 epochs, SHORT budget)): 6 done, 0 failed" in r.stdout
    searches = [d for d in exp.glob("softmax-*_seed*") if d.is_dir()]
    evals = [d for d in exp.glob("eval-*") if d.is_dir()]
    assert len(searches) == 4 and len(evals) == 6
    keys = {json.loads((d / "params.json").read_text())["search_trial_id"] for d in evals}
    assert len(keys) == 6  # one evaluation per search and random cell, none twice
    assert {k for k in keys if k.startswith("random-")} == {"random-0", "random-1"}
    for d in evals:
        lines = (d / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3, 4] and _complete(d)
        assert 0 <= json.loads(lines[-1])["test_acc"] <= 1
    doc = json.loads((exp / "report" / "report.json").read_text())
    assert doc["truth"]["protocol"] == "darts_cpu" and doc["truth"]["evaluations"] == 4
    assert doc["truth"]["baseline"]["n"] == 2
    assert all(g["n_evaluated"] == 2 and g["random_percentile_mean"] is not None
               for g in doc["groups"])


def _epoch_trainable(config: dict) -> None:
    """Reports a Tune checkpoint per epoch (its epoch inside); crashes once at epoch 2."""
    import tempfile

    from ray import tune

    start, ck = 0, tune.get_checkpoint()
    if ck is not None:
        with ck.as_directory() as d:
            start = json.loads((Path(d) / "state.json").read_text())["epoch"] + 1
    for epoch in range(start, 4):
        crash = Path(config["crash_file"])
        if epoch == 2 and not crash.exists():
            crash.write_text("crashed once")
            raise RuntimeError("crash once at epoch 2")
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report({"epoch": epoch, "resumed_from": start},
                        checkpoint=tune.Checkpoint.from_directory(d))


def test_a_snapshot_naming_a_deleted_checkpoint_resumes_from_the_newest(ray_local, tmp_path):
    """Tune deletes the older checkpoint (num_to_keep=1) as soon as a newer one is reported but
    snapshots the experiment every few seconds; a driver killed in between leaves a snapshot
    that names a deleted checkpoint. Without repair Tune fails the trial on restore; with
    ``repair_lost_checkpoints`` it resumes from the trial's newest checkpoint."""
    import shutil

    import ray.cloudpickle
    from ray import tune

    from raydnas.sweep.keeper import repair_lost_checkpoints

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    run = tune.RunConfig(storage_path=str(tmp_path), name="exp", verbose=0,
                         checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    tune.Tuner(_epoch_trainable, param_space={"crash_file": str(tmp_path / "crashed")},
               run_config=run).fit()  # epochs 0 and 1 reported, then the crash
    (trial,) = [d for d in (tmp_path / "exp").iterdir() if d.is_dir()]
    assert sorted(p.name for p in trial.glob("checkpoint_*")) == ["checkpoint_000001"]
    # the race: a newer checkpoint registered (the snapshot's one deleted), then the kill
    (trial / "checkpoint_000001").rename(trial / "checkpoint_000002")
    for name in ("bare", "repaired"):
        shutil.copytree(tmp_path / "exp", tmp_path / name)

    bare = tune.Tuner.restore(str(tmp_path / "bare"), _epoch_trainable,
                              resume_errored=True).fit()
    assert "does not exist on storage anymore" in str(bare.errors[0])  # what the repair is for

    exp = tmp_path / "repaired"
    said = []
    assert repair_lost_checkpoints(exp, log=said.append) == [trial.name]
    assert len(said) == 1 and said[0].startswith(f"note: {trial.name}:")
    assert repair_lost_checkpoints(exp) == []  # nothing left to repair
    res = tune.Tuner.restore(str(exp), _epoch_trainable, resume_errored=True).fit()
    assert not res.errors
    last = res[0].metrics
    assert last["epoch"] == 3 and last["resumed_from"] == 2  # from epoch 1's checkpoint
