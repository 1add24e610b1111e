"""``raydnas reduce`` on experiment directories with known genotypes: every reliability number
is computed by hand here and compared with the report."""

from __future__ import annotations

import json
import math
import statistics

import pandas as pd
import pytest
from PIL import Image
from reduce_fixtures import ExperimentWriter, darts, flat

import raydnas
from raydnas.cli.main import main
from raydnas.errors import ConfigError
from raydnas.model.cells import DARTS_V2
from raydnas.reduce import reduce

M = "softmax/first_order/every/none"
G1 = darts([("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
           [("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)])
# G1 with one op changed: normal node 3 takes skip_connect from input 0 instead of sep_conv_3x3
G2 = darts([("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 2)],
           [("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)])
N1 = "|none~0|+|skip_connect~0|none~1|+|nor_conv_3x3~0|skip_connect~1|avg_pool_3x3~2|"
N2 = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
      "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")


def _study(tmp_path):
    w = ExperimentWriter(tmp_path)
    # group A: point 0, three seeds; seeds 0 and 1 end on G1, seed 2 on G2
    w.trial(flat(M, 0, 0, **{"optim.a_lr": 3e-4}), [G2, G1, G1], val_acc=0.80,
            discrete_val_acc=0.78, arch_params=1000)
    w.trial(flat(M, 1, 0, **{"optim.a_lr": 3e-4}), [G1, G1, G1], val_acc=0.70,
            discrete_val_acc=0.60, arch_params=1200)
    w.trial(flat(M, 2, 0, **{"optim.a_lr": 3e-4}), [G1, G1, G2], val_acc=0.60,
            discrete_val_acc=0.30, arch_params=1700)
    # group B: NAS-Bench-201 cells (another method), two seeds with different cells
    B = "gumbel/first_order/every/none"
    w.trial(flat(B, 0), [N1, N1], val_acc=0.5, discrete_val_acc=0.2, nb201=True)
    w.trial(flat(B, 1), [N2, N2], val_acc=0.5, discrete_val_acc=0.45, nb201=True)
    # group C: point 1 of the first method, one seed
    w.trial(flat(M, 0, 1, **{"optim.a_lr": 3e-3}), [G1, G1, G1], val_acc=0.9,
            discrete_val_acc=0.88)
    return w.finish()


def _row(df, method, point=None):
    sel = df[(df["method"] == method)]
    if point is not None:
        sel = sel[sel["point"] == point]
    assert len(sel) == 1
    return sel.iloc[0]


def test_known_genotypes_give_hand_computed_numbers(tmp_path):
    exp = _study(tmp_path)
    df = reduce(exp, write=False)
    assert isinstance(df, pd.DataFrame) and len(df) == 3
    a = _row(df, M, 0)
    # Jaccard of the (cell, node, input, op) sets: G1 vs G1 = 1; G1 vs G2 share 7 of 9
    assert a["consensus"] == pytest.approx((1 + 7 / 9 + 7 / 9) / 3)
    assert a["distinct_genotypes"] == 2
    assert a["modal_count"] == 2 and a["modal_genotype"] == G1
    assert a["modal_seed"] == 0  # the G1 seed with the best discrete_val_acc
    # skip/none share of the normal cell: G1 1/4 (not collapsed), G2 2/4 = threshold 0.5
    assert a["collapse_rate"] == pytest.approx(1 / 3)
    assert a["dead_rate"] == 0 and a["dead_seeds"] == []
    # gaps 0.02, 0.10, 0.30: one below 0.05
    assert a["gap_reliability"] == pytest.approx(1 / 3)
    assert a["n"] == 3 and sorted(a["seeds"]) == [0, 1, 2]
    assert a["discrete_val_acc_mean"] == pytest.approx(statistics.mean([0.78, 0.60, 0.30]))
    assert a["discrete_val_acc_std"] == pytest.approx(statistics.stdev([0.78, 0.60, 0.30]))
    assert a["discretization_gap_max"] == pytest.approx(0.30)
    assert a["arch_params_min"] == 1000 and a["arch_params_max"] == 1700
    # stabilization: [G2,G1,G1] -> 2, [G1,G1,G1] -> 1, [G1,G1,G2] -> 3
    assert a["stabilization_epoch_mean"] == pytest.approx(2.0)
    assert a["stabilization_epoch_std"] == pytest.approx(1.0)
    assert a["search_seconds_mean"] == pytest.approx(4.5)
    assert a["alpha_steps_mean"] == 30

    b = _row(df, "gumbel/first_order/every/none")
    # N1 edges {(2,0,skip),(3,0,conv),(3,1,skip),(3,2,avg)}, N2 six nor_conv_3x3 edges: 1 shared
    assert b["consensus"] == pytest.approx(1 / 9)
    assert b["distinct_genotypes"] == 2 and b["modal_count"] == 1
    assert b["modal_genotype_nb201"] == N2  # tie broken by discrete_val_acc
    # N1: none, skip, none, conv, skip, avg -> 4/6 skip/none (NB201 keeps none); N2: 0/6
    assert b["collapse_rate"] == pytest.approx(0.5)

    c = _row(df, M, 1)
    assert c["n"] == 1
    assert math.isnan(c["val_acc_std"]) and math.isnan(c["discrete_val_acc_std"])
    assert c["val_acc_mean"] == pytest.approx(0.9)
    assert math.isnan(c["consensus"]) and c["distinct_genotypes"] == 1

    # default sort: discrete_val_acc mean, best first
    assert list(df["discrete_val_acc_mean"]) == sorted(df["discrete_val_acc_mean"], reverse=True)
    # collapse threshold is configurable: at 0.25 G1 (1/4) collapses too
    df2 = reduce(exp, collapse_threshold=0.25, write=False)
    assert _row(df2, M, 0)["collapse_rate"] == pytest.approx(1.0)


def test_report_files(tmp_path):
    exp = _study(tmp_path)
    df = reduce(exp, sort="+consensus")
    out = exp / "report"
    assert df.attrs["out_dir"] == str(out)
    cons = [x for x in df["consensus"] if not math.isnan(x)]
    assert cons == sorted(cons)
    md = (out / "report.md").read_text()
    assert md.count("\n| ") == 1 + len(df)  # header + one line per group
    assert G1 in md and N2 in md
    assert "0.880 ± n/a" in md  # the one-seed group: std undefined, not 0
    csv = pd.read_csv(out / "report.csv")
    assert len(csv) == 3 and "consensus" in csv.columns
    doc = json.loads((out / "report.json").read_text())
    assert len(doc["groups"]) == 3
    one = next(g for g in doc["groups"] if g["n"] == 1)
    assert one["val_acc_std"] is None
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"acc_vs_gap.png", "reliability.png"} <= set(pngs)
    assert sum(p.startswith("cell_") for p in pngs) == 3
    assert sum(p.startswith("alpha_") for p in pngs) == 3
    for p in pngs:
        with Image.open(out / p) as im:
            im.verify()
            assert im.size[0] > 300 and im.size[1] > 150


def test_partial_experiment_lists_unfinished_trials(tmp_path):
    w = ExperimentWriter(tmp_path)
    w.trial(flat(M, 0), [G1, G1])
    w.trial(flat(M, 1), [G1, G2])
    # recovered after a crash: error.txt stays, but the search finished
    w.trial(flat(M, 2), [G1, G1], error="RuntimeError: worker died")
    failed = w.trial(flat(M, 3), [G1], epochs_planned=2, status="ERROR",
                     error="NonFiniteLoss: non-finite validation loss at epoch 1")
    killed = w.trial(flat(M, 4), [G2], epochs_planned=2, status="RUNNING", truncated_line=True)
    no_results = w.trial(flat(M, 5), None, status="RUNNING")
    pending = w.trial(flat(M, 6), None, status="PENDING", write_dir=False)
    started = w.trial(flat(M, 7), None, status="PENDING")  # a trial dir, nothing in it yet
    # a method whose only seed failed still gets a row, with n = 0
    other = w.trial(flat("softmax/first_order/every/prox", 0), [G1], epochs_planned=3,
                    status="ERROR", error="ValueError: boom")
    exp = w.finish()
    df = reduce(exp, plots=False)
    a = _row(df, M)
    assert a["n"] == 3 and a["n_trials"] == 8
    assert (a["n_failed"], a["n_running"], a["n_missing"]) == (1, 2, 2)
    assert a["consensus"] == pytest.approx((7 / 9 + 1 + 7 / 9) / 3)
    z = _row(df, "softmax/first_order/every/prox")
    assert z["n"] == 0 and z["n_failed"] == 1 and math.isnan(z["val_acc_mean"])
    status = {e["trial_id"]: e["status"] for e in df.attrs["excluded"]}
    assert status == {failed: "failed", killed: "running", no_results: "running",
                      pending: "missing", started: "missing", other: "failed"}
    assert df.attrs["counts"] == {"complete": 3, "stopped": 0, "failed": 2, "running": 2,
                                  "missing": 2}
    md = (exp / "report" / "report.md").read_text()
    for tid in status:
        assert tid in md
    assert "NonFiniteLoss" in md


def test_trial_stopped_by_tune_is_used_and_counted(tmp_path):
    w = ExperimentWriter(tmp_path)
    w.trial(flat(M, 0), [G1, G1, G2])
    w.trial(flat(M, 1), [G2], epochs_planned=3, status="TERMINATED")  # e.g. ASHA
    df = reduce(w.finish(), write=False)
    assert df.iloc[0]["n"] == 2 and df.iloc[0]["n_stopped"] == 1
    # the stopped seed's genotype "held from epoch 1" only because it stopped: not averaged
    assert df.iloc[0]["stabilization_epoch_mean"] == 3 and df.iloc[0]["stabilization_n"] == 1


def test_not_an_experiment(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    for bad in (tmp_path / "empty", tmp_path / "nope"):
        with pytest.raises(ConfigError, match="EXPERIMENT"):
            reduce(bad)
        assert main(["reduce", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "experiment directory" in err
    exp = _study(tmp_path)
    with pytest.raises(ConfigError, match="--sort"):
        reduce(exp, sort="accuracy_of_doom", write=False)
    assert main(["reduce", str(exp), "--sort", "nope"]) == 2
    assert main(["reduce", str(exp), "--collapse-threshold", "2"]) == 2
    assert not (exp / "report").exists()


def test_cli_uri_and_top_level_api(tmp_path, capsys):
    exp = _study(tmp_path)
    out = tmp_path / "out"
    assert main(["reduce", str(exp), "--out", str(out), "--sort", "collapse_rate",
                 "--gap-threshold", "0.15", "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "3 groups" in text and str(out / "report.md") in text
    doc = json.loads((out / "report.json").read_text())
    rates = [g["collapse_rate"] for g in doc["groups"]]
    assert rates == sorted(rates)
    a = next(g for g in doc["groups"] if g["point"] == 0)
    assert a["gap_reliability"] == pytest.approx(2 / 3)  # 0.02 and 0.10 < 0.15
    # a storage URI goes through pyarrow.fs; the report is uploaded next to the experiment
    df = raydnas.reduce(f"file://{exp}", plots=False)
    assert len(df) == 3 and (exp / "report" / "report.md").is_file()
    assert _row(df, M, 0)["consensus"] == pytest.approx(23 / 27)


# Published cells, quark0/darts cnn/genotypes.py (DARTS_V1, DARTS_V2), and NAS-Bench-201's
# all-skip cell that DARTS finds there (Dong & Yang 2020, Table 5: 54.30 %).
DARTS_V1 = ("Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
            "('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
            "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), "
            "('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], "
            "reduce_concat=[2, 3, 4, 5])")
NB201_SKIP = ("|skip_connect~0|+|skip_connect~0|skip_connect~1|"
              "+|skip_connect~0|skip_connect~1|skip_connect~2|")
DEAD = "|none~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_3x3~2|"


def test_published_cells_collapse_only_where_the_literature_says(tmp_path):
    w = ExperimentWriter(tmp_path)
    w.trial(flat(M, 0), [DARTS_V1])
    w.trial(flat(M, 1), [DARTS_V2])
    B = "softmax/unrolled/every/none"
    w.trial(flat(B, 0), [NB201_SKIP], nb201=True)
    w.trial(flat(B, 1), [NB201_SKIP], nb201=True)
    w.trial(flat(B, 2), [N2], nb201=True)
    df = reduce(w.finish(), write=False)
    assert _row(df, M)["collapse_rate"] == 0.0  # pooling-and-skip reduction cells don't count
    assert _row(df, B)["collapse_rate"] == pytest.approx(2 / 3)


def test_dead_cells_are_flagged_per_seed_and_group(tmp_path):
    from raydnas.model.genotype import parse_genotype

    assert parse_genotype(DEAD).dead_cells() == ["normal"]
    assert parse_genotype(N1).dead_cells() == [] and parse_genotype(N2).dead_cells() == []
    assert parse_genotype("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"
                          ).dead_cells() == ["normal"]
    assert parse_genotype(DARTS_V1).dead_cells() == []
    w = ExperimentWriter(tmp_path)
    B = "softmax/first_order/every/none"
    w.trial(flat(B, 0), [DEAD], nb201=True)
    w.trial(flat(B, 1), [N2], nb201=True)
    w.trial(flat(B, 2), [DEAD], nb201=True)
    df = reduce(w.finish(), plots=False)
    r = _row(df, B)
    assert r["dead_rate"] == pytest.approx(2 / 3) and sorted(r["dead_seeds"]) == [0, 2]
    # DEAD: 4 of 6 none -> collapsed by the old skip/none rule; its live ops are convs, so
    # not by the parameter-free rule; N2 is neither
    assert r["collapse_rate_skip_none"] == pytest.approx(2 / 3)
    assert r["collapse_rate"] == 0.0
    md = (tmp_path / "exp" / "report" / "report.md").read_text()
    assert "| dead |" in md and "0.67 (2/3)" in md


def test_relabelled_intermediate_nodes_are_the_same_cell(tmp_path):
    """Nodes 1 and 2 of an NB201 cell swapped (with the edges renumbered) is the same graph;
    in the DARTS format, nodes 2 and 3 swapped likewise."""
    from raydnas.model.genotype import parse_genotype

    a = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    b = "|skip_connect~0|+|nor_conv_3x3~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    assert parse_genotype(a).canonical() == parse_genotype(b).canonical()
    assert parse_genotype(a).edges() != parse_genotype(b).edges()
    c = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    assert parse_genotype(a).canonical() != parse_genotype(c).canonical()  # a different graph
    d1 = darts([("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 1),
                ("avg_pool_3x3", 0)], [("avg_pool_3x3", 0), ("sep_conv_3x3", 1),
                                       ("sep_conv_3x3", 0), ("skip_connect", 1)])
    d2 = darts([("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("sep_conv_3x3", 0),
                ("skip_connect", 1)], [("avg_pool_3x3", 0), ("sep_conv_3x3", 1),
                                       ("sep_conv_3x3", 0), ("skip_connect", 1)])
    assert parse_genotype(d1).canonical() == parse_genotype(d2).canonical()
    w = ExperimentWriter(tmp_path)
    B = "gumbel/first_order/every/none"
    w.trial(flat(B, 0), [a], nb201=True)
    w.trial(flat(B, 1), [b], nb201=True)
    w.trial(flat(M, 0), [d1])
    w.trial(flat(M, 1), [d2])
    df = reduce(w.finish(), write=False)
    for method in (B, M):
        r = _row(df, method)
        assert r["consensus"] == 1.0 and r["distinct_genotypes"] == 1 and r["modal_count"] == 2


def test_undecided_seeds_are_flagged(tmp_path):
    w = ExperimentWriter(tmp_path)
    w.trial(flat(M, 0), [G1], extra={"alpha_margin_mean": 0.002, "decided": False})
    w.trial(flat(M, 1), [G1], extra={"alpha_margin_mean": 0.30, "decided": True})
    w.trial(flat(M, 2), [G1], extra={"alpha_margin_mean": 0.01, "decided": False})
    df = reduce(w.finish(), plots=False)
    r = _row(df, M)
    assert r["undecided_rate"] == pytest.approx(2 / 3)
    assert r["alpha_margin_mean_mean"] == pytest.approx((0.002 + 0.30 + 0.01) / 3)
    md = (tmp_path / "exp" / "report" / "report.md").read_text()
    assert "| undecided |" in md and "0.67 (2/3)" in md


def test_search_margin_metrics_and_undecided_flag():
    """The margin is chosen-op weight minus runner-up per kept edge; uniform α is undecided."""
    import torch

    from raydnas.search.metrics import alpha_margins

    probs = {"normal": torch.tensor([[0.7, 0.2, 0.1], [0.34, 0.33, 0.33], [0.5, 0.5, 0.0]])}
    masks = {"normal": torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 1.0, 0]])}
    assert alpha_margins(probs, masks) == pytest.approx([0.5, 0.0])
    # DARTS's rule never picks none (op 0): the runner-up is the best op it could have chosen
    masks = {"normal": torch.tensor([[0, 1.0, 0], [0, 0, 0], [0, 1.0, 0]])}
    assert alpha_margins(probs, masks, exclude=(0,)) == pytest.approx([0.1, 0.5])


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_reduce_a_single_search_run(tmp_path):
    """raydnas reduce on one `raydnas search` directory: its numbers, cell drawing and α plot;
    an evaluation of that run joins as its truth."""
    from helpers import tiny_config

    from raydnas.evaluation import plan, run_evaluation
    from raydnas.search.run import run_search

    run = tmp_path / "q"
    run_search(tiny_config(space="tiny201", epochs=1, data={"batch_size": 32},
                           measure={"tune_epochs": 0}), run, log=lambda s: None)
    (job,), _ = plan(str(run), protocol="nb201_short",
                     overrides={"epochs": 1, "channels": 4, "cells": 1})
    run_evaluation(job.job, job.out, device="cpu", log=lambda s: None)
    assert main(["reduce", str(run)]) == 0
    out = run / "report"
    assert (out / "cell_01.png").is_file() and (out / "alpha_01.png").is_file()
    doc = json.loads((out / "report.json").read_text())
    (g,) = doc["groups"]
    assert g["n"] == 1 and g["method"] == "softmax/first_order/every/none"
    assert g["n_evaluated"] == 1 and 0 <= g["test_acc_mean"] <= 1


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_a_study_of_30_groups_shows_the_top_20_and_keeps_every_group_in_the_csv(tmp_path):
    """Readable with many groups (Optuna points): the markdown's tables, genotype sections and
    per-group plots hold the first ``top`` groups and say where the rest are."""
    import csv

    w = ExperimentWriter(tmp_path)
    g = darts([("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
               ("skip_connect", 2)],
              [("sep_conv_3x3", 0), ("avg_pool_3x3", 1), ("sep_conv_3x3", 0),
               ("sep_conv_3x3", 1)])
    for p in range(30):
        for seed in (0, 1):
            w.trial(flat("softmax/first_order/every/prox", seed, point=p, **{"regularizer.rho":
                                                                            0.01 * (p + 1)}),
                    [g, g], discrete_val_acc=0.30 + 0.01 * p)
    exp = w.finish()
    df = reduce(exp)
    assert len(df) == 30
    md = (exp / "report" / "report.md").read_text()
    assert "The first 20 of 30 groups" in md and md.count("\n### ") == 20
    assert md.count("| softmax/first_order/every/prox") == 20  # the table's rows
    with open(exp / "report" / "report.csv") as f:
        assert len(list(csv.DictReader(f))) == 30
    assert len(list((exp / "report").glob("cell_*.png"))) == 20
    assert len(md) < 40_000
    full = reduce(exp, tmp_path / "all", top=0, plots=False)
    assert "The first" not in (tmp_path / "all" / "report.md").read_text() and len(full) == 30
    with pytest.raises(ConfigError, match="--top"):
        reduce(exp, top=-1)
