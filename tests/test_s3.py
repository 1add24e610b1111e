"""Sweeps, reduce and evaluate on S3: a real local S3 server (moto's server mode on 127.0.0.1),
a real bucket, and the real commands in subprocesses. pyarrow (and so Ray Tune and raydnas)
finds the server through ``AWS_ENDPOINT_URL``; the drivers and their Ray workers inherit it."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from drivers import kill_driver_when
from test_sweep_resume import EVAL

from raydnas.sweep.runner import STUDY_FILE

pytestmark = pytest.mark.slow
boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "raydnas-test"
STORAGE = f"s3://{BUCKET}/sweeps"
SEARCHES = {("softmax/first_order/every/none", 0), ("softmax/first_order/every/none", 1),
            ("softmax/first_order/interval/none", 0), ("softmax/first_order/interval/none", 1)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free port of 127.0.0.1 with one empty bucket; the AWS variables
    point this process and every subprocess (raydnas drivers, their Ray workers) at it."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    quiet = logging.getLogger("werkzeug")  # one line per request otherwise
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
                mp.delenv(k, raising=False)
            mp.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            client = boto3.client("s3")
            client.create_bucket(Bucket=BUCKET)
            yield client
    finally:
        quiet.setLevel(level)
        server.stop()


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for p in pages for o in p.get("Contents", [])]


def _get(client, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _trial_dirs(client, name: str) -> dict[str, set[str]]:
    """Trial directory -> the names of the files directly in it."""
    out: dict[str, set[str]] = {}
    for k in _keys(client, f"sweeps/{name}/"):
        parts = k.split("/")
        if len(parts) == 4 and parts[3] and parts[2] not in ("report", "evaluation"):
            out.setdefault(parts[2], set()).add(parts[3])
    return out


def _jsonl(data: bytes) -> list[dict]:
    return [json.loads(ln) for ln in data.decode().splitlines() if ln.strip()]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _raydnas(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raydnas", *args], env=_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _sweep_cmd(name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "raydnas", "sweep",
            str(ROOT / "configs" / "quickstart_sweep.yaml"), "--storage", STORAGE,
            "--name", name, "--num-cpus", "2", "--quiet", *extra]


@pytest.fixture(scope="module")
def study(s3, tmp_path_factory):
    """The quickstart study with an evaluation stage and 2 random cells, run once on S3."""
    cwd = tmp_path_factory.mktemp("study")
    r = subprocess.run(_sweep_cmd("qse", *EVAL), env=_env(), cwd=cwd, capture_output=True,
                       text=True, timeout=400)
    return "qse", r, cwd


def test_study_with_evaluation_stage_and_random_baseline_on_s3(s3, study):
    name, r, cwd = study
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "trials: 4 total, 4 done, 0 failed, 0 unfinished" in r.stdout
    assert "evaluations (darts_cpu (4 epochs, SHORT budget)): 6 done, 0 failed" in r.stdout
    assert f"report:      {STORAGE}/{name}/report/report.md" in r.stdout
    assert not any(cwd.iterdir())  # nothing went to a local directory instead

    dirs = _trial_dirs(s3, name)
    searches = {d: f for d, f in dirs.items() if d.startswith("softmax-")}
    evals = {d: f for d, f in dirs.items() if d.startswith("eval-")}
    assert len(searches) == 4 and len(evals) == 6 and set(dirs) == set(searches) | set(evals)
    keys = set()
    for d, files in searches.items():
        assert {"params.json", "result.json", "metrics.jsonl", "final.json", "config.yaml",
                "genotype.txt"} <= files
        params = json.loads(_get(s3, f"sweeps/{name}/{d}/params.json"))
        keys.add((params["method"], params["seed"]))
        final = json.loads(_get(s3, f"sweeps/{name}/{d}/final.json"))
        assert final["complete"] and final["metrics"]["epoch"] == 2
        metrics = _jsonl(_get(s3, f"sweeps/{name}/{d}/metrics.jsonl"))
        assert [m["epoch"] for m in metrics] == [1, 2]
        assert [m["epoch"] for m in _jsonl(_get(s3, f"sweeps/{name}/{d}/result.json"))] == [1, 2]
    assert keys == SEARCHES
    ids = set()
    for d, files in evals.items():
        assert {"params.json", "result.json", "metrics.jsonl", "final.json"} <= files
        ids.add(json.loads(_get(s3, f"sweeps/{name}/{d}/params.json"))["search_trial_id"])
        final = json.loads(_get(s3, f"sweeps/{name}/{d}/final.json"))
        assert final["complete"] and 0 <= final["metrics"]["test_acc"] <= 1
        assert [m["epoch"] for m in _jsonl(_get(s3, f"sweeps/{name}/{d}/metrics.jsonl"))] \
            == [1, 2, 3, 4]
    assert len(ids) == 6 and {i for i in ids if i.startswith("random-")} == {"random-0",
                                                                             "random-1"}
    top = {k.rsplit("/", 1)[1] for k in _keys(s3, f"sweeps/{name}/") if k.count("/") == 2}
    assert any(k.startswith("experiment_state-") for k in top)
    report = {k.rsplit("/", 1)[1] for k in _keys(s3, f"sweeps/{name}/report/")}
    assert {"report.md", "report.csv", "report.json", "acc_vs_gap.png"} <= report
    doc = json.loads(_get(s3, f"sweeps/{name}/report/report.json"))
    assert doc["truth"]["protocol"] == "darts_cpu" and doc["truth"]["evaluations"] == 4
    assert doc["truth"]["baseline"]["n"] == 2
    assert {g["group"] for g in doc["groups"]} == {m for m, _ in SEARCHES}
    assert all(g["n"] == 2 and g["n_evaluated"] == 2 for g in doc["groups"])


EPOCHS = 6  # the second wave of trials is still running at the kill (3 left no margin
# on a loaded box: the last trial had done all 3 epochs by the time the kill landed)


def test_the_study_is_recorded_in_the_bucket_and_another_study_is_refused(s3, study):
    """raydnas_study.json lives beside the experiment on S3 too (reduce reads a race's rules
    there), and the same name started from a different study is refused in one line without
    touching the experiment."""
    name, r, cwd = study
    assert r.returncode == 0
    doc = json.loads(_get(s3, f"sweeps/{name}/{STUDY_FILE}"))
    assert doc["evaluate"]["random"] == 2
    before = sorted(_keys(s3, f"sweeps/{name}/"))
    again = subprocess.run(_sweep_cmd(name, *EVAL, "--set", "sweep.seeds=3"), env=_env(),
                           cwd=cwd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2, again.stdout[-2000:] + again.stderr[-2000:]
    err = [ln for ln in again.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "different study" in err[0] and "seeds" in err[0]
    assert sorted(_keys(s3, f"sweeps/{name}/")) == before


def test_sigkill_driver_then_rerun_continues_on_s3(s3, tmp_path):
    """As tests/test_sweep_resume.py, with the experiment in the bucket: the driver is
    SIGKILLed once a trial has finished and the second wave runs; the same command finishes
    the study without starting a trial twice, every epoch is recorded once (the search's
    metrics and Tune's results), finished trials were not touched, and the epochs a running
    trial had done were not run again but for the one in flight at the kill."""
    name = "kill"
    cmd = _sweep_cmd(name, "--set", f"epochs={EPOCHS}", "--no-reduce")

    def complete(key: str) -> bool:
        try:
            return bool(json.loads(_get(s3, key)).get("complete"))
        except (s3.exceptions.NoSuchKey, ValueError):
            return False

    def second_wave_runs() -> bool:
        # a finished trial, and every trial started with an epoch done: the second wave
        # runs. Tune uploads its experiment snapshot in the background; a trial whose
        # first checkpoint is in no snapshot yet is known to Tune without one and
        # restarts from epoch 1 (nothing raydnas can name to Tune): the settle time
        # gives the second wave's first checkpoints time to reach a snapshot
        started = [d for d, f in _trial_dirs(s3, name).items() if "metrics.jsonl" in f]
        return len(started) == 4 and any(complete(f"sweeps/{name}/{d}/final.json")
                                         for d in started)

    kill_driver_when(cmd, tmp_path / "first.log", second_wave_runs, env=_env(), cwd=tmp_path,
                     settle=3)
    before = {}  # trial dir -> (metrics.jsonl bytes, ETag) in the bucket at the kill
    for d, files in _trial_dirs(s3, name).items():
        if "metrics.jsonl" in files:
            key = f"sweeps/{name}/{d}/metrics.jsonl"
            before[d] = (_get(s3, key), s3.head_object(Bucket=BUCKET, Key=key)["ETag"])
    done_before = {d for d in before if complete(f"sweeps/{name}/{d}/final.json")}
    assert 1 <= len(done_before) < 4, "kill should land halfway"

    r = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    (tmp_path / "second.log").write_text(r.stdout + r.stderr)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"continuing the experiment in {STORAGE}/{name}" in r.stdout
    assert "trials: 4 total, 4 done, 0 failed, 0 unfinished" in r.stdout
    dirs = _trial_dirs(s3, name)
    keys = [(json.loads(_get(s3, f"sweeps/{name}/{d}/params.json"))["method"],
             json.loads(_get(s3, f"sweeps/{name}/{d}/params.json"))["seed"]) for d in dirs]
    assert len(dirs) == 4 and set(keys) == SEARCHES  # no trial was started twice
    for d in dirs:
        metrics = _get(s3, f"sweeps/{name}/{d}/metrics.jsonl")
        own = {m["epoch"]: m["epoch_seconds"] for m in _jsonl(metrics)}
        assert list(own) == list(range(1, EPOCHS + 1)), d
        assert complete(f"sweeps/{name}/{d}/final.json"), d
        if d in before and d not in done_before:
            # the epochs a trial had recorded before the kill stay as they were, except that
            # the epoch in flight (its checkpoint uploaded by the trial before the driver had a
            # snapshot naming it on S3) may run again from the previous one, to the same
            # numbers (a resume is exact)
            old = before[d][0].decode().splitlines(keepends=True)
            assert metrics.decode().startswith("".join(old[:-1])), d
            again = _jsonl(metrics)[len(old) - 1]
            was = json.loads(old[-1])
            timing = ("epoch_seconds", "tune_seconds")
            assert {k: v for k, v in again.items() if k not in timing} \
                == {k: v for k, v in was.items() if k not in timing}, d
            if again != was:  # for the record: which epoch ran again
                with open(tmp_path / "rerun.log", "a") as f:
                    f.write(f"{d}: epoch {was['epoch']}\n")
        # Tune's record: no epoch twice, each as the search kept it (a trial restored from its
        # last checkpoint reports that epoch again, nothing runs: the same row), the last one
        # included. (It can lack an epoch: one whose result no saved snapshot had seen, when
        # the trial resumes from a newer checkpoint than the snapshot names.)
        told = [(m["epoch"], m["epoch_seconds"]) for m in
                _jsonl(_get(s3, f"sweeps/{name}/{d}/result.json"))]
        assert set(told) <= set(own.items()) and told[-1][0] == EPOCHS, (d, told, own)
        assert [e for e, _ in told] == sorted(e for e, _ in told), (d, told)
    for d in done_before:  # finished trials were not touched
        key = f"sweeps/{name}/{d}/metrics.jsonl"
        assert s3.head_object(Bucket=BUCKET, Key=key)["ETag"] == before[d][1]


def test_reduce_reads_the_study_from_s3_and_writes_the_report_there(s3, study, tmp_path):
    name = study[0]
    for k in _keys(s3, f"sweeps/{name}/report/"):  # the sweep's own report: gone
        s3.delete_object(Bucket=BUCKET, Key=k)
    r = _raydnas("reduce", f"{STORAGE}/{name}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"report: {STORAGE}/{name}/report/report.md" in r.stdout
    assert "2 groups; trials 4 complete" in r.stdout
    assert not any(tmp_path.iterdir())  # written to the bucket, not here
    files = {k.rsplit("/", 1)[1] for k in _keys(s3, f"sweeps/{name}/report/")}
    assert {"report.md", "report.csv", "report.json", "acc_vs_gap.png", "reliability.png",
            "proxy_vs_truth.png", "cell_01.png", "cell_02.png"} <= files
    doc = json.loads(_get(s3, f"sweeps/{name}/report/report.json"))
    assert doc["experiment"] == f"{STORAGE}/{name}"
    assert doc["counts"]["complete"] == 4 and not doc["excluded"]
    groups = {g["group"]: g for g in doc["groups"]}
    assert set(groups) == {m for m, _ in SEARCHES}
    for g in groups.values():
        assert g["n"] == 2 and sorted(g["seeds"]) == [0, 1] and g["n_evaluated"] == 2
        assert 0 <= g["test_acc_mean"] <= 1 and g["random_percentile_mean"] is not None
    assert doc["truth"]["protocol"] == "darts_cpu" and doc["truth"]["evaluations"] == 4
    assert doc["truth"]["baseline"]["n"] == 2
    md = _get(s3, f"sweeps/{name}/report/report.md").decode()
    assert md.splitlines()[0].startswith("# ") and "## Verdict: the truth" in md
    assert all(m in md for m in groups)
    csv = _get(s3, f"sweeps/{name}/report/report.csv").decode().splitlines()
    assert len(csv) == 1 + len(groups)


EVALUATE = ["--protocol", "darts_short", "--set", "cutout=0", "epochs=1", "channels=4",
            "cells=3", "--random", "1", "--num-cpus", "2", "--quiet"]


def test_evaluate_trains_the_cells_of_a_study_on_s3_and_writes_there(s3, study, tmp_path):
    """``raydnas evaluate s3://...``: every found cell and one random cell trained, the results
    in the bucket under ``evaluation/``; the same command again trains nothing; the report
    joins them."""
    name = study[0]
    exp = f"{STORAGE}/{name}"
    ids = set()
    for d in _trial_dirs(s3, name):
        if d.startswith("softmax-"):
            ids.add(_jsonl(_get(s3, f"sweeps/{name}/{d}/result.json"))[-1]["trial_id"])
    assert len(ids) == 4
    r = _raydnas("evaluate", exp, *EVALUATE, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "raydnas evaluate: 5 evaluation(s), protocol darts_short (1 epoch" in r.stdout
    assert f"evaluations written to {exp}/evaluation" in r.stdout
    assert not any(tmp_path.iterdir())
    root = f"sweeps/{name}/evaluation/darts_short"
    etags = {}
    for cell in ids | {"random-0"}:
        key = f"{root}/{cell}_seed0/final.json"
        final = json.loads(_get(s3, key))
        assert final["complete"] and final["search_trial_id"] == cell
        m = final["metrics"]
        assert m["epoch"] == 1 and m["test_n"] > 0 and 0 <= m["test_acc"] <= 1
        assert [x["epoch"] for x in _jsonl(_get(s3, f"{root}/{cell}_seed0/metrics.jsonl"))] \
            == [1]
        etags[key] = s3.head_object(Bucket=BUCKET, Key=key)["ETag"]

    again = _raydnas("evaluate", exp, *EVALUATE, cwd=tmp_path)  # finished: nothing to train
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "evaluation trials:" in r.stdout and "evaluation trials:" not in again.stdout
    assert all(s3.head_object(Bucket=BUCKET, Key=k)["ETag"] == v for k, v in etags.items())

    r = _raydnas("reduce", exp, "--protocol", "darts_short", "--no-plots", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(_get(s3, f"sweeps/{name}/report/report.json"))
    assert doc["truth"]["protocol"] == "darts_short" and doc["truth"]["evaluations"] == 4
    assert doc["truth"]["baseline"]["n"] == 1
    assert sorted(doc["truth"]["protocols"]) == ["darts_cpu", "darts_short"]
    assert all(g["n_evaluated"] == 2 for g in doc["groups"])


LOST_CHECKPOINT = """
import json, sys
import ray, ray.cloudpickle
from ray import tune
import test_sweep_resume
from raydnas.sweep.keeper import repair_lost_checkpoints

ray.cloudpickle.register_pickle_by_value(test_sweep_resume)
trainable = test_sweep_resume._epoch_trainable
storage, crash, step = sys.argv[1:]
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
if step == "fit":
    tune.Tuner(trainable, param_space={"crash_file": crash}, run_config=tune.RunConfig(
        storage_path=storage, name="exp", verbose=0,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1))).fit()
else:
    said = []
    repaired = repair_lost_checkpoints(storage + "/exp", log=said.append)
    res = tune.Tuner.restore(storage + "/exp", trainable, resume_errored=True).fit()
    print(json.dumps({"repaired": repaired, "said": said, "last": res[0].metrics,
                      "errors": [str(e) for e in res.errors]}))
"""


def test_a_snapshot_naming_a_deleted_checkpoint_resumes_on_s3(s3, tmp_path):
    """The race of test_sweep_resume.py's test of the same name, on S3, where Tune uploads its
    snapshot in the background (so a kill lands in it more often): the sweep's repair renames
    the trial's newest checkpoint in the bucket and the trial resumes from it."""
    script = tmp_path / "lost.py"
    script.write_text(LOST_CHECKPOINT)
    env = dict(_env(), PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    storage = f"s3://{BUCKET}/lost"
    run = [sys.executable, str(script), storage, str(tmp_path / "crashed")]
    r = subprocess.run(run + ["fit"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]  # epochs 0, 1, then the crash
    old = [k for k in _keys(s3, "lost/exp/") if "/checkpoint_" in k]
    assert old and all("/checkpoint_000001/" in k for k in old)
    for k in old:  # the race: a newer checkpoint registered (the snapshot's one deleted)
        new = k.replace("/checkpoint_000001/", "/checkpoint_000002/")
        s3.copy_object(Bucket=BUCKET, Key=new, CopySource={"Bucket": BUCKET, "Key": k})
        s3.delete_object(Bucket=BUCKET, Key=k)
    trial = old[0].split("/")[2]

    r = subprocess.run(run + ["restore"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["repaired"] == [trial] and out["said"][0].startswith(f"note: {trial}:")
    assert not out["errors"]
    assert out["last"]["epoch"] == 3 and out["last"]["resumed_from"] == 2  # from epoch 1's
