"""raydnas evaluate: found cells trained from scratch on real digits and measured on the test
split; resume; bad input; the report's truth columns."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from raydnas.data.datasets import DIGITS_TEST_EVERY, load_dataset
from raydnas.evaluation import plan, resolve_protocol, run_evaluation
from raydnas.search.run import run_search

TINY = {"epochs": 2, "channels": 4, "cells": 1, "batch_size": 64}
EVAL_NAMES = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "eval_params",
              "search_trial_id", "method", "search_seed", "protocol", "eval_seed")


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    run_search(tiny_config(space="tiny201", epochs=1, data={"batch_size": 32},
                           measure={"tune_epochs": 0}), out, log=lambda s: None)
    return out


def test_digits_test_split_is_the_held_out_fifth():
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert len(test) == len(range(0, 1797, DIGITS_TEST_EVERY)) == 360
    assert len(train) + len(test) == 1797
    from sklearn.datasets import load_digits

    raw = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16
    keep = torch.arange(1797) % DIGITS_TEST_EVERY != 0
    mean, std = raw[keep].mean(), raw[keep].std()  # training statistics for both splits
    torch.testing.assert_close(test.data[0], (raw[~keep] - mean) / std)


def test_evaluate_a_search_run_and_resume(search_run, tmp_path):
    jobs, skipped = plan(str(search_run), protocol="nb201_short", seeds=[0],
                         overrides=TINY)
    assert not skipped and len(jobs) == 1
    job, out = jobs[0].job, jobs[0].out
    assert out == search_run / "evaluation" / "nb201_short" / "seed0"
    final = json.loads((search_run / "final.json").read_text())
    assert str(job.genotype) == final["genotype"]["nb201"]

    class Stop(Exception):
        pass

    def stop_after_first(m, p):
        if m["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        run_evaluation(job, out, report=stop_after_first, device="cpu", log=lambda s: None)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    resumed = run_evaluation(job, out, device="cpu", log=lambda s: None)
    straight = run_evaluation(job, tmp_path / "straight", device="cpu", log=lambda s: None)
    assert resumed["epoch"] == 2 and resumed["test_acc"] == straight["test_acc"]
    assert resumed["train_loss"] == straight["train_loss"]
    for k in EVAL_NAMES:
        assert k in resumed, k
    assert resumed["protocol"] == "nb201_short" and resumed["protocol_short"] is True
    assert resumed["search_seed"] == 0 and resumed["search_trial_id"] == search_run.name
    assert 0.0 <= resumed["test_acc"] <= 1.0
    fin = json.loads((out / "final.json").read_text())
    assert fin["complete"] and fin["metrics"]["test_acc"] == resumed["test_acc"]
    # the search's own files are untouched
    assert json.loads((search_run / "final.json").read_text()) == final
    # the TensorBoard scalars read back
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("evaluate/test_acc")] == [1, 2]


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_cli_genotype_string(tmp_path):
    out = tmp_path / "g"
    r = subprocess.run([sys.executable, "-m", "raydnas.cli", "evaluate", "--genotype",
                        "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|skip_connect~1|"
                        "avg_pool_3x3~2|", "--protocol", "nb201_short", "--set", "epochs=1",
                        "--set", "channels=4", "--set", "cells=1", "--out", str(out), "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "SHORT budget" in r.stdout and "test_acc" in r.stdout
    m = json.loads((out / "final.json").read_text())["metrics"]
    assert m["epoch"] == 1 and m["protocol"] == "nb201_short"


@pytest.mark.parametrize("args,key,allowed", [
    (["--genotype", "|nor_conv_3x3~0|+|oops"], "--genotype", "a DARTS Genotype"),
    (["--genotype", "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"], "genotype",
     "a cell of space 'nb201'"),
    (["--genotype", "Genotype(normal=[('sep_conv_3x3', 0)"], "--genotype", "a DARTS Genotype"),
    (["--genotype", "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|skip_connect~1|"
      "avg_pool_3x3~2|", "--protocol", "darts_short"], "protocol", "nb201 or nb201_short"),
    (["--genotype", "|sep_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|skip_connect~1|"
      "avg_pool_3x3~2|"], "genotype op", "not an op of space"),
    (["--genotype", "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|skip_connect~1|"
      "avg_pool_3x3~2|", "--set", "epoch=3"], "epoch", "a protocol key"),
    (["--genotype", "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|skip_connect~1|"
      "avg_pool_3x3~2|", "--set", "data.dataset=imagefolder", "--set", "data.root=."],
     "data.test_root", "imagefolder has no test split"),
    (["--genotype", "Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), "
      "('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 0), ('skip_connect', 1), "
      "('sep_conv_3x3', 0), ('skip_connect', 1)], normal_concat=range(2, 6), "
      "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('max_pool_3x3', 1), "
      "('max_pool_3x3', 0), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('max_pool_3x3', 1)], "
      "reduce_concat=range(2, 6))", "--protocol", "darts_short"], "cutout", "--set cutout=0"),
])
@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_bad_input_is_one_line_before_anything_starts(args, key, allowed, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "raydnas.cli", "evaluate", *args, "--out",
                        str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr + r.stdout
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and key in err and allowed in err, err
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_protocol_presets_and_overrides():
    p = resolve_protocol("darts")
    assert (p.channels, p.cells, p.batch_size, p.epochs, p.lr, p.momentum, p.weight_decay,
            p.cutout, p.auxiliary_weight, p.drop_path, p.grad_clip) == \
        (36, 20, 96, 600, 0.025, 0.9, 3e-4, 16, 0.4, 0.2, 5.0)
    q = resolve_protocol("nb201")
    assert (q.channels, q.cells, q.batch_size, q.epochs, q.lr, q.nesterov, q.weight_decay) == \
        (16, 5, 256, 200, 0.1, True, 5e-4)
    assert resolve_protocol("nb201_short").short and not q.short
    # the short protocols hold out a validation part and are made to tell cells apart
    assert (q.val_fraction, q.reduction) == (0.0, "residual")
    assert (resolve_protocol("nb201_short").val_fraction,
            resolve_protocol("nb201_short").reduction) == (0.2, "light")
    c = resolve_protocol("darts_cpu")
    assert (c.channels, c.cells, c.auxiliary_weight, c.val_fraction) == (4, 3, 0.0, 0.2)
    assert resolve_protocol("nb201", {"epochs": 3, "lr": 1}).lr == 1.0
    from raydnas.errors import ConfigError

    for bad in ({"val_fraction": 0.7}, {"reduction": "pool"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            resolve_protocol("nb201_short", bad)
    with pytest.raises(ConfigError, match="reduction"):
        resolve_protocol("darts_cpu", {"reduction": "light"})

    with pytest.raises(ConfigError, match="momentum"):
        resolve_protocol("darts", {"momentum": 1.5})
    with pytest.raises(ConfigError, match="protocol"):
        resolve_protocol("resnet")


def test_report_joins_the_truth(tmp_path):
    """Test accuracies under evaluation/<protocol>/ join their search trials: per-group mean over
    search seeds (eval seeds averaged first), bootstrap ranking, proxy rank correlations."""
    from reduce_fixtures import ExperimentWriter, flat

    from raydnas.reduce import reduce

    g = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|skip_connect~1|none~2|"
    A, B = "softmax/first_order/every/none", "gumbel_hard/first_order/every/none"
    w = ExperimentWriter(tmp_path)
    ids = {}
    for method, seed, disc in [(A, 0, 0.9), (A, 1, 0.8), (A, 2, 0.7), (B, 0, 0.3), (B, 1, 0.2),
                               (B, 2, 0.1)]:
        ids[(method, seed)] = w.trial(flat(method, seed), [g], discrete_val_acc=disc, nb201=True)
    exp = w.finish()
    tests = {(A, 0): [0.95, 0.93], (A, 1): [0.92], (A, 2): [0.90], (B, 0): [0.60],
             (B, 1): [0.50], (B, 2): [0.55]}
    for (method, seed), accs in tests.items():
        for k, acc in enumerate(accs):
            d = exp / "evaluation" / "nb201_short" / f"{ids[(method, seed)]}_seed{k}"
            d.mkdir(parents=True)
            (d / "final.json").write_text(json.dumps({
                "metrics": {"epoch": 12, "test_acc": acc, "eval_params": 1000 + seed},
                "search_trial_id": ids[(method, seed)], "eval_seed": k, "complete": True,
                "protocol": {"name": "nb201_short", "short": True}}))
    d = exp / "evaluation" / "nb201_short" / f"{ids[(B, 2)]}_seed1"  # still running
    d.mkdir()
    (d / "final.json").write_text(json.dumps({
        "metrics": {"epoch": 3, "test_acc": 0.1}, "search_trial_id": ids[(B, 2)], "eval_seed": 1,
        "complete": False, "protocol": {"name": "nb201_short", "short": True}}))
    df = reduce(exp)
    a = df[df["method"] == A].iloc[0]
    b = df[df["method"] == B].iloc[0]
    assert a["test_acc_mean"] == pytest.approx((0.94 + 0.92 + 0.90) / 3)
    assert b["test_acc_mean"] == pytest.approx(0.55) and b["n_eval_partial"] == 1
    assert a["n_evaluated"] == 3 and a["test_rank"] == 1 and b["test_rank"] == 2
    assert a["test_rank_ci_low"] == a["test_rank_ci_high"] == 1  # A beats B in every replicate
    assert 0.90 <= a["test_acc_ci_low"] <= a["test_acc_mean"] <= a["test_acc_ci_high"] <= 0.94
    pv = df.attrs["proxy_validity"]["discrete_val_acc"]
    # ranks of disc: A0 6, A1 5, A2 4, B0 3, B1 2, B2 1; of test: 6, 5, 4, 3, 1, 2
    d2 = 0 + 0 + 0 + 0 + 1 + 1
    assert pv["n"] == 6 and pv["spearman"] == pytest.approx(1 - 6 * d2 / (6 * 35))
    assert pv["kendall"] == pytest.approx((14 - 1) / 15)  # one discordant pair of 15
    assert df.attrs["truth"]["protocol"] == "nb201_short" and df.attrs["truth"]["short"]
    md = (exp / "report" / "report.md").read_text()
    assert "SHORT budget" in md and "Proxy validity" in md
    assert (exp / "report" / "proxy_vs_truth.png").is_file()
    doc = json.loads((exp / "report" / "report.json").read_text())
    assert math.isclose(doc["proxy_validity"]["discrete_val_acc"]["kendall"], 13 / 15)


def _nb201_file(path, archs):
    """A small NAS-Bench-201 file written with the official package's own classes
    (ArchResults / ResultsCount state dicts, the layout NASBench201API reads)."""
    from nas_201_api.api_utils import ArchResults, ResultsCount

    infos = {}
    sets = {"cifar10-valid": ("x-valid", "ori-test"), "cifar10": ("ori-test",),
            "cifar100": ("x-valid", "x-test", "ori-test"),
            "ImageNet16-120": ("x-valid", "x-test", "ori-test")}
    for idx, (arch, base) in enumerate(archs.items()):
        per_hp = {}
        for hp, epochs, shift in (("full", 200, 0.0), ("less", 12, -20.0)):
            ar = ArchResults(idx, arch)
            for d_i, (dataset, names) in enumerate(sets.items()):
                for seed, noise in ((777, -0.5), (888, 0.5)):
                    acc = base + shift - 10 * d_i + noise
                    r = ResultsCount(dataset, None, {e: acc for e in range(epochs)},
                                     {e: 0.1 for e in range(epochs)}, 1.0, 10.0,
                                     {"channel": 16, "num_cells": 5, "arch_str": arch,
                                      "class_num": 10}, seed, epochs, None)
                    r.update_OLD_eval(names[0], {e: acc for e in range(epochs)},
                                      {e: 0.2 for e in range(epochs)})
                    for extra in names[1:]:
                        r.update_OLD_eval(extra, {e: acc for e in range(epochs)},
                                          {e: 0.2 for e in range(epochs)})
                    ar.update(dataset, seed, r)
            per_hp[hp] = ar.state_dict()
        infos[idx] = per_hp
    torch.save({"meta_archs": list(archs), "arch2infos": infos,
                "evaluated_indexes": list(range(len(archs)))}, path)


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_nb201_benchmark_lookup_through_the_official_api(search_run, tmp_path):
    from raydnas.evaluation.benchmark import lookup, open_api

    final = json.loads((search_run / "final.json").read_text())
    found = final["genotype"]["nb201"]
    other = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|" \
            "nor_conv_3x3~2|"
    f = tmp_path / "NAS-Bench-201-mini.pth"
    _nb201_file(f, {other: 93.0, found: 80.0})
    api = open_api(f)
    r = lookup(api, other)
    assert r["index"] == 0
    assert r["test_acc"] == pytest.approx(0.83) and r["cifar10_valid_acc"] == pytest.approx(0.93)
    assert r["cifar100_test_acc"] == pytest.approx(0.73)
    assert r["imagenet16_test_acc"] == pytest.approx(0.63)
    assert r["test_acc_12"] == pytest.approx(0.63)  # NB201's 12-epoch schedule
    assert lookup(api, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|") is None
    p = subprocess.run([sys.executable, "-m", "raydnas.cli", "evaluate", str(search_run),
                        "--benchmark", str(f)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "CIFAR-10 test_acc 0.7000" in p.stdout
    out = search_run / "evaluation" / "nb201_benchmark"
    fin = json.loads((out / "final.json").read_text())
    assert fin["metrics"]["test_acc"] == pytest.approx(0.70) and fin["complete"]
    assert json.loads((out / "cache.json").read_text())["cells"][found]["index"] == 1
    # bad input: a missing file, a file that is not a benchmark, a cell of another space
    for args, allowed in (([str(search_run), "--benchmark", str(tmp_path / "nope.pth")],
                           "an existing NAS-Bench-201 file"),
                          ([str(search_run), "--benchmark", str(search_run / "checkpoint.pt")],
                           "a NAS-Bench-201 benchmark file"),
                          (["--genotype", DARTS_TINY, "--space", "tiny", "--benchmark", str(f)],
                           "cells of a NAS-Bench-201 space")):
        p = subprocess.run([sys.executable, "-m", "raydnas.cli", "evaluate", *args],
                           capture_output=True, text=True, cwd=tmp_path)
        assert p.returncode == 2 and allowed in p.stderr and len(p.stderr.splitlines()) == 1, \
            p.stderr


DARTS_TINY = ("Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 0), "
              "('avg_pool_3x3', 2)], normal_concat=range(2, 4), reduce=[('avg_pool_3x3', 0), "
              "('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], "
              "reduce_concat=range(2, 4))")


@pytest.mark.slow
def test_evaluate_an_experiment_as_ray_tune_trials(ray_local, tmp_path):
    """raydnas evaluate EXPERIMENT: one Tune trial per searched trial and evaluation seed, in
    <experiment>/evaluation/<protocol>/<trial>_seed<k>/; a second call runs nothing again."""
    from raydnas.reduce import reduce
    from raydnas.sweep import run_sweep
    from raydnas.sweep.eval_trials import run_evaluation_trials

    root = Path(__file__).resolve().parents[1]
    run_sweep(str(root / "configs" / "quickstart_sweep.yaml"), storage=str(tmp_path), name="qs",
              reduce=False, quiet=True, overrides=["epochs=1"])
    exp = tmp_path / "qs"
    jobs, skipped = plan(str(exp), protocol="darts_short", seeds=[0],
                         overrides={"cutout": 0, "epochs": 2, "channels": 4, "cells": 3})
    assert len(jobs) == 4 and not skipped
    rows = run_evaluation_trials(jobs, resources={"cpu": 1, "gpu": 0}, quiet=True)
    assert all(m is not None and m["epoch"] == 2 for _, _, m in rows)
    dirs = sorted((exp / "evaluation" / "darts_short").glob("*_seed0"))
    assert len(dirs) == 4 and all((d / "params.json").is_file() for d in dirs)  # Tune trials
    stamps = {d: (d / "final.json").stat().st_mtime_ns for d in dirs}
    again = run_evaluation_trials(jobs, resources={"cpu": 1, "gpu": 0}, quiet=True)
    assert [m for _, _, m in again] == [m for _, _, m in rows]
    assert all((d / "final.json").stat().st_mtime_ns == t for d, t in stamps.items())
    df = reduce(exp, write=False)
    assert df.attrs["truth"]["evaluations"] == 4 and (df["n_evaluated"] == 2).all()


def test_bootstrap_ranks_share_ties():
    from raydnas.reduce.truth import bootstrap

    tied = bootstrap([[0.5, 0.5], [0.5, 0.5], []])
    assert tied[0]["test_rank"] == tied[1]["test_rank"] == 1
    assert tied[1]["test_rank_ci_high"] == 1 and math.isnan(tied[2]["test_rank"])
    close = bootstrap([[0.99, 0.95], [0.95, 0.95]], seed=3)
    assert close[0]["test_rank"] == 1 and close[1]["test_rank"] == 2
    assert (close[1]["test_rank_ci_low"], close[1]["test_rank_ci_high"]) == (1, 2)
    assert close[0]["test_acc_ci_low"] == pytest.approx(0.95)


def test_evaluate_with_random_cells_and_calibration_writes_the_verdict(search_run, tmp_path,
                                                                       capsys):
    from raydnas.cli.main import main

    run = tmp_path / "run"
    import shutil

    shutil.copytree(search_run, run, ignore=shutil.ignore_patterns("evaluation"))
    args = ["evaluate", str(run), "--no-ray", "--quiet", "--random", "2", "--calibrate",
            "--protocol", "nb201_short"] + [f"--set={k}={v}" for k, v in
                                            dict(TINY, epochs=1).items()]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Calibration: the conv cell scores" in out and "random baseline: 2 cells" in out
    root = run / "evaluation" / "nb201_short"
    doc = json.loads((root / "calibration.json").read_text())
    assert set(doc["calibration"]["cells"]) == {"conv", "one_path", "skip_path", "all_pool", "all_skip"}
    assert doc["baseline"]["n"] == 2
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert names == ["random-0_seed0", "random-1_seed0", "reference-all_pool_seed0",
                     "reference-all_skip_seed0", "reference-conv_seed0",
                     "reference-one_path_seed0", "reference-skip_path_seed0", "seed0"]
    final = json.loads((root / "reference-all_pool_seed0" / "final.json").read_text())
    assert final["role"] == "reference" and final["cell_dead"] is False
    assert 0 <= final["metrics"]["eval_val_acc"] <= 1 and final["metrics"]["test_n"] > 0
    # the one search run's report: the truth first, its cell placed among the random cells
    from raydnas.reduce import reduce

    df = reduce(run, plots=False)
    assert df.attrs["truth"]["baseline"]["n"] == 2 and df.attrs["truth"]["calibration"]
    assert 0 <= df.iloc[0]["random_percentile_mean"] <= 100
    assert main(["evaluate", str(run), "--no-ray", "--random", "-1"]) == 2


def _nats_tss(root, archs):
    """A small NATS-Bench topology benchmark in both of its layouts, written with the official
    ``nats_bench`` package's own classes and writer: the single ``.pickle.pbz2`` file and the
    fast-mode directory (``meta.pickle.pbz2`` plus one ``{index:06d}.pickle.pbz2`` per cell)."""
    from nats_bench import ArchResults, ResultsCount, pickle_save

    sets = {"cifar10-valid": ("x-valid", "ori-test"), "cifar10": ("ori-test",),
            "cifar100": ("x-valid", "x-test", "ori-test"),
            "ImageNet16-120": ("x-valid", "x-test", "ori-test")}

    def results(idx, arch, base, epochs):
        ar = ArchResults(idx, arch)
        for d_i, (dataset, names) in enumerate(sets.items()):
            for seed, noise in ((777, -0.5), (888, 0.5)):
                acc = base - 10 * d_i + noise
                per = {e: acc for e in range(epochs)}
                r = ResultsCount(dataset, None, per, {e: 0.1 for e in range(epochs)}, 1.0, 10.0,
                                 {"channel": 16, "num_cells": 5, "arch_str": arch,
                                  "class_num": 10}, seed, epochs, None)
                for name in names:
                    r.update_OLD_eval(name, per, {e: 0.2 for e in range(epochs)})
                ar.update(dataset, seed, r)
        return ar.state_dict()

    per_arch = {i: {"200": results(i, a, v, 200), "12": results(i, a, v - 20, 12)}
                for i, (a, v) in enumerate(archs.items())}
    pickle_save({"meta_archs": list(archs), "evaluated_indexes": set(per_arch),
                 "arch2infos": per_arch}, str(root / "NATS-tss-mini.pickle"))
    d = root / "NATS-tss-mini-simple"
    d.mkdir()
    pickle_save({"meta_archs": list(archs)}, str(d / "meta.pickle"))
    for i, infos in per_arch.items():
        pickle_save(infos, str(d / f"{i:06d}.pickle"))
    return root / "NATS-tss-mini.pickle.pbz2", d


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_nats_bench_tss_lookup_through_the_official_api_in_both_layouts(search_run, tmp_path):
    from raydnas.evaluation.benchmark import lookup, open_api

    final = json.loads((search_run / "final.json").read_text())
    found = final["genotype"]["nb201"]
    other = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|" \
            "nor_conv_3x3~2|"
    f, d = _nats_tss(tmp_path, {other: 93.0, found: 80.0})
    for bench in (f, d):
        api = open_api(bench)
        assert type(api).__name__ == "NATStopology"
        r = lookup(api, other)
        assert r["index"] == 0 and r["test_acc"] == pytest.approx(0.83)
        assert r["cifar10_valid_acc"] == pytest.approx(0.93)
        assert r["cifar100_test_acc"] == pytest.approx(0.73)
        assert r["imagenet16_test_acc"] == pytest.approx(0.63)
        assert r["test_acc_12"] == pytest.approx(0.63)  # the 12-epoch schedule, fast mode too
        assert lookup(api, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|") is None
    p = subprocess.run([sys.executable, "-m", "raydnas.cli", "evaluate", str(search_run),
                        "--benchmark", str(d)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "CIFAR-10 test_acc 0.7000" in p.stdout
    fin = json.loads((search_run / "evaluation" / "nb201_benchmark" / "final.json").read_text())
    assert fin["metrics"]["test_acc"] == pytest.approx(0.70)
    assert fin["protocol"]["benchmark"] == d.name
    bad = tmp_path / "broken.pickle.pbz2"
    bad.write_bytes(b"not bz2")
    p = subprocess.run([sys.executable, "-m", "raydnas.cli", "evaluate", str(search_run),
                        "--benchmark", str(bad)], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2 and "a NATS-Bench topology benchmark" in p.stderr
    assert len(p.stderr.splitlines()) == 1, p.stderr


def test_the_verdicts_come_from_the_library_as_the_cli_prints_them(search_run, tmp_path):
    """The Python API alone (plan, run_evaluation, verdicts) gives the calibration the CLI
    prints: each reference cell's value is the mean over its seeds, and calibration.json is
    what write_verdicts writes."""
    import shutil

    from raydnas.evaluation import plan, run_evaluation
    from raydnas.reduce.baseline import calibration, cell_value, verdicts, write_verdicts

    run = tmp_path / "run"
    shutil.copytree(search_run, run, ignore=shutil.ignore_patterns("evaluation"))
    jobs, _ = plan(str(run), protocol="nb201_short", seeds=[0, 1], calibrate=True,
                   overrides=dict(TINY, epochs=1))
    rows = [(p.job, p.out, run_evaluation(p.job, p.out, log=lambda s: None)) for p in jobs]
    doc = verdicts(rows)
    conv = [m["test_acc"] for j, _, m in rows if j.meta.get("reference") == "conv"]
    assert len(conv) == 2
    want = cell_value(conv, rows[0][2]["test_n"])
    assert doc["calibration"]["cells"]["conv"]["test_acc"] == pytest.approx(want["test_acc"])
    assert doc["calibration"]["cells"]["conv"]["se"] == pytest.approx(want["se"])
    refs = {k: {a: b for a, b in v.items()} for k, v in doc["calibration"]["cells"].items()}
    assert doc["calibration"]["discriminates"] == calibration(refs)["discriminates"]
    assert "baseline" not in doc and doc["lines"] == [doc["calibration"]["sentence"]
                                                      .replace("**", "")]
    path = write_verdicts(doc)
    assert path == run / "evaluation" / "nb201_short" / "calibration.json"
    assert json.loads(path.read_text())["calibration"]["sentence"] == \
        doc["calibration"]["sentence"]
