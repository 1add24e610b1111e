"""Suites (``sweep.benchmarks``): every method × seed on several benchmarks as one Ray Tune
experiment, each benchmark with its own baseline and truth, ranked across them."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from scipy import stats

from raydnas.config.experiment import from_dict, load_config
from raydnas.errors import ConfigError
from raydnas.sweep.study import parse_study

ROOT = Path(__file__).resolve().parents[1]

SUITE = {
    "space": "tiny", "epochs": 1, "seed": 0,
    "data": {"dataset": "digits", "val_fraction": 0.5, "batch_size": 64},
    "model": {"channels": 4}, "log": {"print_every": 0, "histograms": False},
    "sweep": {
        "methods": [{"name": "darts_v1"}, {"name": "drnas", "activation": "dirichlet"},
                    {"name": "random_ws", "activation": "random_path", "schedule": "never",
                     "set": {"select.name": "random_ws", "select.samples": 4,
                             "select.top": 2, "select.screen_batches": 2}}],
        "benchmarks": [
            {"name": "tiny"},
            {"name": "tiny201", "set": {"space": "tiny201"},
             "evaluate": {"protocol": "nb201_short",
                          "set": {"epochs": 1, "channels": 4, "cells": 1}}}],
        "seeds": 2, "resources": {"cpu": 1}, "baseline": {"random": 2}},
    "evaluate": {"protocol": "darts_cpu", "seeds": 1, "calibrate": False,
                 "set": {"epochs": 1}},
}


def _suite(**sweep) -> dict:
    s = copy.deepcopy(SUITE)
    s["sweep"].update(sweep)
    return s


def test_suite_cpu_config_is_a_valid_suite_of_four_benchmarks():
    st = parse_study(load_config(ROOT / "configs" / "suite_cpu.yaml"), storage="/tmp/x")
    assert list(st.benchmarks) == ["tiny", "tiny_deep", "tiny_noskip", "tiny201"]
    assert len(st.methods) == 7 and "random_ws" in [m.name for m in st.methods]
    for b in st.benchmarks.values():
        assert [m.name for m in b.methods] == [m.name for m in st.methods]
    assert st.benchmarks["tiny201"].evaluate.protocol.name == "nb201_short"
    assert st.benchmarks["tiny_noskip"].evaluate.calibrate is False
    assert st.benchmarks["tiny_deep"].trial_config(st.methods[0], 0).model.cells == 5
    assert st.total_trials() == sum(b.total_trials() for b in st.benchmarks.values())
    assert st.search_trials() == 4 * 7 * 5


def test_suite_gpu_config_is_a_valid_suite(tmp_path):
    """Validated as a user with the datasets under DIR would run it (never run here)."""
    st = parse_study(load_config(ROOT / "configs" / "suite_gpu.yaml", [f"data.root={tmp_path}"]),
                     storage="s3://bucket/sweeps")
    assert len(st.benchmarks) == 5 and len(st.methods) == 7 and st.resources["gpu"] == 1
    assert {b.evaluate.protocol.name for b in st.benchmarks.values()} == {"darts_short",
                                                                          "nb201_short"}
    assert st.benchmarks["nb201_cifar100"].trial_config(st.methods[0], 0).data.dataset == \
        "cifar100"


@pytest.mark.parametrize("edit,key,allowed", [
    (lambda s: s["sweep"]["benchmarks"].pop(), "sweep.benchmarks", "at least 2"),
    (lambda s: s["sweep"]["benchmarks"][1].update(name="tiny"), "sweep.benchmarks[1].name",
     "each benchmark name once"),
    (lambda s: s["sweep"]["benchmarks"][1].update(epochs=3), "sweep.benchmarks[1].epochs",
     "unknown key"),
    (lambda s: s["sweep"]["benchmarks"][1].update(set={"sweep.seeds": 3}),
     "sweep.benchmarks[1].set", "not sweep"),
    (lambda s: s["sweep"]["benchmarks"][1]["set"].update(space="nope"), "sweep.benchmarks[1]",
     "benchmark tiny201 is not a valid study: space"),
    (lambda s: s.update(optuna={"params": {"optim.a_lr": {"log_uniform": [1e-3, 1e-1]}}}),
     "optuna", "no optuna"),
    (lambda s: s["sweep"].update(skip_invalid="yes"), "sweep.skip_invalid", "true or false"),
    (lambda s: s["sweep"].update(scheduler={"name": "asha"}), "sweep.scheduler",
     "no trial scheduler"),
    (lambda s: s["sweep"]["benchmarks"][1].update(name=".."), "sweep.benchmarks[1].name",
     "not starting with ."),
    # the benchmark's own evaluate: is checked as that benchmark sees it, and named
    (lambda s: s["sweep"]["benchmarks"][1].pop("evaluate"), "sweep.benchmarks[1]",
     "benchmark tiny201 is not a valid study: evaluate.protocol"),
    (lambda s: (s["sweep"].pop("benchmarks"), s["sweep"].update(skip_invalid=True)),
     "sweep.skip_invalid", "only with sweep.benchmarks"),
    # a method the benchmark rejects (PC-DARTS K=4 needs channels divisible by 4): named
    (lambda s: (s["sweep"]["methods"].append(
        {"name": "pc", "set": {"model.partial_channels": 4, "measure.tune_epochs": 0}}),
        s["sweep"]["benchmarks"][1]["set"].update({"model.channels": 6})),
     "sweep.benchmarks[1]", "method pc cannot run on benchmark tiny201"),
])
def test_bad_suites_are_one_line_before_anything_starts(tmp_path, edit, key, allowed):
    s = _suite()
    s["model"]["channels"] = 8
    edit(s)
    before = set(tmp_path.iterdir())
    with pytest.raises(ConfigError) as e:
        parse_study(from_dict(s, "suite.yaml"), storage=str(tmp_path / "out"), name="x")
    msg = str(e.value)
    assert "\n" not in msg and "suite.yaml" in msg and key in msg and allowed in msg, msg
    assert set(tmp_path.iterdir()) == before


def test_skip_invalid_drops_only_the_rejected_pair_and_says_why(tmp_path):
    s = _suite(skip_invalid=True)
    s["model"]["channels"] = 8
    s["sweep"]["methods"].append({"name": "pc", "set": {"model.partial_channels": 4, "measure.tune_epochs": 0}})
    s["sweep"]["benchmarks"][1]["set"]["model.channels"] = 6
    st = parse_study(from_dict(s, "suite.yaml"), storage=str(tmp_path), name="x")
    assert [m.name for m in st.benchmarks["tiny"].methods][-1] == "pc"
    assert "pc" not in [m.name for m in st.benchmarks["tiny201"].methods]
    assert list(st.skipped["tiny201"]) == ["pc"] and "partial_channels" in \
        st.skipped["tiny201"]["pc"] and st.skipped["tiny"] == {}


def test_the_suite_searcher_takes_turns_and_hands_out_every_trial_once(tmp_path):
    from ray.tune.search import Searcher

    from raydnas.sweep.suite_searcher import SuiteSearcher

    st = parse_study(from_dict(_suite(), "suite.yaml"), storage=str(tmp_path), name="x")
    srch = SuiteSearcher(st)
    got, i = [], 0
    while True:
        c = srch.suggest(f"t{i}")
        if c == Searcher.FINISHED or c is None:
            break
        got.append((f"t{i}", c))
        i += 1
    # the random cells of both benchmarks first, taking turns, then the searches
    assert [c["benchmark"] for _, c in got[:4]] == ["tiny", "tiny201", "tiny", "tiny201"]
    searches = [(c["benchmark"], c["method"], c["seed"]) for _, c in got
                if c.get("kind") != "evaluate"]
    assert sorted(searches) == sorted((b, m, s) for b in ("tiny", "tiny201")
                                      for m in ("darts_v1", "drnas", "random_ws")
                                      for s in (0, 1))
    assert sum(c.get("role") == "random" for _, c in got) == 4
    # a finished search queues its evaluation in its own benchmark, with its protocol
    tid, cfg = next((t, c) for t, c in got if c["benchmark"] == "tiny201"
                    and c.get("kind") != "evaluate")
    srch.on_trial_complete(tid, {"genotype": "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|"
                                             "none~0|none~1|avg_pool_3x3~2|"})
    ev = srch.suggest("e0")
    assert ev["kind"] == "evaluate" and ev["benchmark"] == "tiny201" and \
        ev["protocol"] == "nb201_short" and ev["search_trial_id"] == tid
    # its state survives a save/restore (what Tune does with the experiment)
    srch.save(str(tmp_path / "s.pkl"))
    again = SuiteSearcher(st)
    again.restore(str(tmp_path / "s.pkl"))
    assert again.get_state() == srch.get_state()


@pytest.mark.slow
def test_a_suite_killed_mid_run_resumes_and_ranks_its_benchmarks(tmp_path):
    """Through the real Tune path: SIGKILL the driver once the second benchmark's searches
    began, rerun; every (benchmark, method, seed) is searched and evaluated once, each
    benchmark has its own random cells and report, and the ranking across them is the one the
    benchmarks' own tables give."""
    from drivers import kill_driver_when

    from raydnas.reduce.ranking import kendall, ranks

    p = tmp_path / "suite.yaml"
    p.write_text(yaml.safe_dump(SUITE))
    exp = tmp_path / "s"
    cmd = [sys.executable, "-m", "raydnas", "sweep", str(p), "--storage", str(tmp_path),
           "--name", "s", "--num-cpus", "2", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    kill_driver_when(cmd, tmp_path / "first.log",
                     lambda: exp.is_dir() and any(exp.glob("tiny201-*_seed1_*")), env=env,
                     poll=0.2)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    searched, evaluated = [], []
    for d in exp.iterdir():
        if not (d / "params.json").is_file() or not (d / "result.json").is_file():
            continue
        cfg = json.loads((d / "params.json").read_text())
        key = (cfg["benchmark"], cfg["method"], cfg["seed"])
        (evaluated if cfg.get("kind") == "evaluate" else searched).append(
            key + ((cfg.get("role"),) if cfg.get("kind") == "evaluate" else ()))
        assert d.name.startswith(("eval-" + cfg["benchmark"] + "-", cfg["benchmark"] + "-"))
    assert len(searched) == len(set(searched)) == 12
    assert len(evaluated) == len(set(evaluated)) == 12 + 4
    rep = exp / "report"
    md = (rep / "report.md").read_text()
    assert md.splitlines()[4] == "## Ranking across benchmarks" and "Friedman" in md
    assert "## Against random search at equal budget" in md and (rep / "cd.png").is_file()
    assert "Ranking across 2 benchmarks" in r.stdout
    # each benchmark's report, its own truth: ranks recomputed here with scipy
    tables = {b: pd.read_csv(rep / b / "report.csv") for b in ("tiny", "tiny201")}
    doc = json.loads((rep / "report.json").read_text())
    suite = doc["suite"]
    for b, t in tables.items():
        assert t["n_evaluated"].tolist() == [2, 2, 2]
        assert json.loads((rep / b / "report.json").read_text())["truth"]["baseline"]["n"] == 2
        want = stats.rankdata([-v for v in t["test_acc_mean"]])
        assert [suite["ranks"][b][m] for m in t["method"]] == pytest.approx(list(want))
        assert ranks(dict(zip(t["method"], t["test_acc_mean"])), list(t["method"])) == \
            pytest.approx(dict(zip(t["method"], want)))
    r0, r1 = (suite["ranks"][b] for b in ("tiny", "tiny201"))
    ms = sorted(r0)
    tau = stats.kendalltau([r0[m] for m in ms], [r1[m] for m in ms]).statistic
    if not math.isnan(tau):
        assert suite["kendall"]["tiny ~ tiny201"] == pytest.approx(tau)
        assert kendall(r0, r1, ms) == pytest.approx(tau)
    for m in ms:
        assert suite["mean_rank"][m] == pytest.approx((r0[m] + r1[m]) / 2)
    assert {g["benchmark"] for g in doc["groups"]} == {"tiny", "tiny201"}
    # the CLI's report of a suite; the commands that take one benchmark refuse it in one line
    out = subprocess.run([sys.executable, "-m", "raydnas", "reduce", str(exp), "--no-plots"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "[tiny201] darts_v1" in out.stdout and \
        "Ranking across 2 benchmarks" in out.stdout, out.stdout + out.stderr
    (tmp_path / "same").symlink_to(exp)  # a second name for it: rank needs distinct names
    for cmd2 in (["evaluate", str(exp)], ["rank", str(exp), str(tmp_path / "same"), "--out",
                                          str(tmp_path / "rk")]):
        bad = subprocess.run([sys.executable, "-m", "raydnas", *cmd2], env=env,
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and "this is a suite" in bad.stderr, bad.stderr[-2000:]
