"""The random-cell baseline, the reference cells, the calibration verdict, percentiles and the
collapse definition (raydnas.model.cells, raydnas.reduce.baseline, raydnas.reduce.stats)."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
from test_reduce import DARTS_V1, DARTS_V2  # the published cells, copied independently

from raydnas.errors import ConfigError
from raydnas.model.cells import NB201_BEST, param_free_cell, random_cell, reference_cells
from raydnas.model.genotype import parse_genotype
from raydnas.model.spaces import load_space
from raydnas.reduce.baseline import calibration, cell_value, percentile, random_summary, told_apart
from raydnas.reduce.stats import collapse_fraction, skip_none_fraction

ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
ALL_POOL = "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|"
SPARSE = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_3x3~2|"


def test_random_darts_cells_keep_two_distinct_inputs_per_node_and_never_none():
    space = load_space("darts")
    seen_pairs, seen_ops = Counter(), Counter()
    for k in range(400):
        g = random_cell(space, k)
        assert set(g.cells) == {"normal", "reduce"}
        for nodes in g.cells.values():
            assert len(nodes) == space.nodes
            for j, node in enumerate(nodes):
                inputs = [i for _, i in node]
                assert len(node) == 2 and len(set(inputs)) == 2
                assert all(0 <= i < space.inputs + j for i in inputs)
                assert all(op in space.ops and op != "none" for op, _ in node)
                if j == 3:
                    seen_pairs[tuple(sorted(inputs))] += 1
                seen_ops.update(op for op, _ in node)
    # node 5 chooses 2 of its 5 inputs uniformly: all 10 pairs, each about 1/10 of 800 cells
    assert set(seen_pairs) == set(itertools.combinations(range(5), 2))
    assert all(40 <= c <= 130 for c in seen_pairs.values()), seen_pairs
    # 7 ops outside none, each about 1/7 of the 6,400 kept edges
    assert len(seen_ops) == 7 and all(abs(c / 6400 - 1 / 7) < 0.025 for c in seen_ops.values())


def test_random_nb201_cells_give_every_edge_an_op_uniform_over_all_ops_none_included():
    space = load_space("tiny201")
    ops = Counter()
    cells = set()
    for k in range(600):
        g = random_cell(space, k)
        assert [len(n) for n in g.cells["normal"]] == [1, 2, 3]
        assert [[i for _, i in n] for n in g.cells["normal"]] == [[0], [0, 1], [0, 1, 2]]
        ops.update(g.ops())
        cells.add(str(g))
    assert set(ops) == set(space.ops)
    assert all(abs(c / 3600 - 0.2) < 0.03 for c in ops.values()), ops
    assert len(cells) > 590  # 5^6 = 15,625 cells: draws rarely repeat
    assert str(random_cell(space, 3)) == str(random_cell(space, 3))
    assert str(random_cell(space, 3)) != str(random_cell(space, 4))


def test_reference_cells_of_the_published_spaces_and_a_space_without_them():
    nb = reference_cells(load_space("nb201"))
    assert list(nb) == ["conv", "one_path", "skip_path", "all_pool", "all_skip"]
    assert nb["conv"] == ("nb201_best", parse_genotype(NB201_BEST))
    assert nb["all_skip"][1].to_nb201() == ALL_SKIP and nb["all_pool"][1].to_nb201() == ALL_POOL
    assert nb["one_path"][1].to_nb201() == "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|"
    identity = nb["skip_path"][1]
    assert identity.to_nb201() == "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    assert param_free_cell(identity) and not identity.dead_cells()
    d = reference_cells(load_space("darts"))
    assert d["conv"][0] == "darts_v2" and d["conv"][1] == parse_genotype(DARTS_V2)
    for name, (_, g) in d.items():  # top-2 per node, like every cell the rule derives
        assert all(len(node) == 2 for nodes in g.cells.values() for node in nodes), name
        assert not g.dead_cells(), name
    assert reference_cells(load_space("tiny"))["conv"][0] == "all_sep_conv_3x3"
    space = load_space("tiny").without_ops(("avg_pool_3x3",))
    with pytest.raises(ConfigError, match="calibrate.*a pooling op"):
        reference_cells(space, where="study.yaml", key="evaluate.calibrate")


def test_collapse_is_the_share_of_live_ops_without_weights_on_the_published_cells():
    for text in (DARTS_V1, DARTS_V2):
        g = parse_genotype(text)
        assert collapse_fraction(g) < 0.5 and not param_free_cell(g)
    for text in (ALL_SKIP, ALL_POOL):
        g = parse_genotype(text)
        assert collapse_fraction(g) == 1.0 and param_free_cell(g)
    sparse = parse_genotype(SPARSE)  # three none edges, convs on its live path
    assert collapse_fraction(sparse) == 0.0 and not param_free_cell(sparse)
    assert skip_none_fraction(sparse) == 0.5  # the old rule called this cell collapsed
    # one conv off the output's paths does not make a pool cell parametric
    side = parse_genotype("|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|avg_pool_3x3~0|none~1|avg_pool_3x3~2|")
    assert param_free_cell(side) and not param_free_cell(parse_genotype(
        "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|skip_connect~1|avg_pool_3x3~2|"))
    dead = parse_genotype("|none~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_3x3~2|")
    assert dead.dead_cells() and not param_free_cell(dead)  # dead is reported apart


def test_percentile_is_the_mid_rank_among_random_cells():
    pool = [0.1, 0.5, 0.5, 0.7]
    assert percentile(0.05, pool) == 0 and percentile(0.9, pool) == 100
    assert percentile(0.5, pool) == pytest.approx(100 * (1 + 1) / 4)
    assert percentile(0.6, pool) == 75
    assert math.isnan(percentile(0.6, []))


def test_calibration_verdict_follows_the_noise_of_the_reference_cells():
    conv = cell_value([0.98, 0.99, 0.985], 360)
    far = {"conv": conv, "all_pool": cell_value([0.65, 0.66, 0.64], 360),
           "all_skip": cell_value([0.80, 0.81, 0.79], 360)}
    v = calibration(far)
    assert v["discriminates"] is True and "discriminates cells" in v["sentence"]
    # the identity cell within noise of the conv cell: the protocol does not discriminate
    ident = dict(far, skip_path=cell_value([0.983, 0.98, 0.986], 360))
    assert calibration(ident)["discriminates"] is False
    assert list(calibration(ident)["cells"]) == ["conv", "skip_path", "all_pool", "all_skip"]
    near = dict(far, all_pool=cell_value([0.975, 0.97, 0.98], 360))
    v = calibration(near)
    assert v["discriminates"] is False and v["comparisons"]["all_pool"]["told_apart"] is False
    assert "does not discriminate" in v["sentence"] and "0.9750" in v["sentence"]
    # the same gap is told apart on a large test set, not on a small one
    a, b = cell_value([0.95], 100_000), cell_value([0.94], 100_000)
    assert told_apart(a, b)[2] and not told_apart(cell_value([0.95], 300),
                                                  cell_value([0.94], 300))[2]
    assert calibration({"conv": conv})["discriminates"] is None


def test_random_baseline_says_when_its_spread_is_within_the_noise():
    spread = {f"random-{k}": {**cell_value([a], 360), "dead": False}
              for k, a in enumerate([0.5, 0.7, 0.9, 0.6, 0.8])}
    assert random_summary(spread)["separates"] is True
    flat = {f"random-{k}": {**cell_value([a], 360), "dead": False}
            for k, a in enumerate([0.96, 0.965, 0.97, 0.962])}
    s = random_summary(flat)
    assert s["separates"] is False and "cannot separate" in s["sentence"]
    dead = dict(flat, d={**cell_value([0.1], 360), "dead": True})
    assert random_summary(dead)["separates"] is False and random_summary(dead)["n_dead"] == 1
