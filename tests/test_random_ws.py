"""Random search with weight sharing (RSPS): the random paths' distribution against an exact
enumeration of the space's cells, only the sampled ops train, α is never stepped, the
selection against a written-out reference, a stopped search resumes exactly, and the
combinations that cannot act are refused in one line."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import FixedVal, batches, tiny_cfg, tiny_state
from scipy import stats

from raydnas.config.experiment import load_config
from raydnas.data.datasets import Batches
from raydnas.errors import ConfigError
from raydnas.model.macro import cell_type
from raydnas.model.spaces import load_space
from raydnas.search.measure import Measurer, bn_indices, copy_model
from raydnas.search.run import run_search, train_step
from raydnas.search.select_random import RandomWS, best_of, candidate_cells

ROOT = Path(__file__).resolve().parents[1]
RSPS = {"activation": "random_path", "schedule": "never"}


def _key(mask: torch.Tensor) -> tuple:
    return tuple(map(tuple, torch.nonzero(mask).tolist()))


def _tiny_support(space) -> set[tuple]:
    """Every cell of a top-k space written out: per node k distinct inputs, an allowed op on
    each, as the (edge, op) pairs of its mask."""
    allowed = [k for k, o in enumerate(space.ops) if o not in space.exclude]
    per_node, e0 = [], 0
    for j in range(space.nodes):
        n_in = space.inputs + j
        choices = []
        for ins in itertools.combinations(range(n_in), min(space.k, n_in)):
            for ops in itertools.product(allowed, repeat=len(ins)):
                choices.append(tuple((e0 + i, k) for i, k in zip(ins, ops)))
        per_node.append(choices)
        e0 += n_in
    return {tuple(sorted(sum(c, ()))) for c in itertools.product(*per_node)}


def test_random_paths_are_uniform_over_the_cells_of_a_top_k_space():
    st = tiny_state(RSPS)
    act, a = st.model.activation, st.model.alphas["normal"]
    support = _tiny_support(st.space)
    assert len(support) == 3 * 3 * 3 * 9  # node 0: both inputs; node 1: 2 of 3; 3 ops each
    g = torch.Generator().manual_seed(0)
    n = 100 * len(support)
    counts: dict[tuple, int] = {}
    for _ in range(n):
        k = _key(act.sample(a, g))
        counts[k] = counts.get(k, 0) + 1
    assert set(counts) == support  # nothing outside the space, every cell reached
    p = stats.chisquare([counts[c] for c in sorted(support)]).pvalue
    assert p > 1e-3, p


def test_random_paths_are_uniform_per_edge_on_an_nb201_space():
    st = tiny_state(RSPS, space="tiny201")
    act, a = st.model.activation, st.model.alphas["normal"]
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([act.sample(a, g) for _ in range(3000)])  # [n, edges, ops]
    assert torch.all(draws.sum(-1) == 1)  # one op on every edge, `none` included
    for e in range(draws.shape[1]):
        p = stats.chisquare(draws[:, e].sum(0).tolist()).pvalue
        assert p > 1e-3, (e, p)
    # edges drawn independently: the joint of edges 0 and 1 against the product
    joint = torch.zeros(5, 5)
    for d in draws:
        joint[d[0].argmax(), d[1].argmax()] += 1
    assert stats.chi2_contingency(joint.numpy()).pvalue > 1e-3


def test_only_the_sampled_ops_run_and_train_and_alpha_never_steps():
    st = tiny_state(RSPS)
    train, val = batches(st)
    st.model.train()
    x, y = train
    torch.nn.functional.cross_entropy(st.model(x), y).backward()
    w = st.model.last_op_weights
    cell = st.model.search_cells()[0]
    ct = cell_type(cell)
    for e, edge in enumerate(cell.edges):
        for k, op in enumerate(edge._ops):
            grads = [p.grad for p in op.parameters()]
            if not grads:
                continue
            ran = bool(w[ct][e, k] != 0)
            assert ran == any(g is not None and g.abs().sum() > 0 for g in grads), (e, k)
    before = {c: a.detach().clone() for c, a in st.model.alphas.items()}
    st.model.zero_grad()
    for _ in range(3):
        train_step(st, train, FixedVal(val))
    assert st.alpha_steps == 0
    assert all(torch.equal(before[c], a) for c, a in st.model.alphas.items())


def test_selection_matches_the_rsps_rule_written_out():
    """The screen on the first batches, the top by it, the best of those on all batches."""
    st = tiny_state(RSPS, select={"name": "random_ws", "samples": 12, "top": 3,
                                  "screen_batches": 2})
    train, val = batches(st)
    for _ in range(3):
        train_step(st, train, FixedVal(val))
    idx = list(range(len(st.dataset.data[1])))
    val_b = Batches(st.dataset, idx[:96], 16, 0, False)
    measurer = Measurer(st.dataset, bn_indices(idx[96:], 64, 0), val_b, 32, st.device, 1, 0)
    loop = SimpleNamespace(measurer=measurer)
    g, masks, extra = RandomWS(st.cfg.select).select(st, loop, {})
    assert extra == {"select_scores": 12 + 3}
    cells = candidate_cells(st.space, list(st.model.alphas), 12, st.cfg.seed)
    assert [str(c[0]) for c in cells] == [str(c[0]) for c in candidate_cells(
        st.space, list(st.model.alphas), 12, st.cfg.seed)]  # reproducible from the seed
    screen = [measurer.measure(copy_model(st.model), m, max_batches=2)[1] for _, m in cells]
    ranked = sorted(range(12), key=lambda i: (-screen[i], i))[:3]
    full = {i: measurer.measure(copy_model(st.model), cells[i][1])[1] for i in ranked}
    want = max(ranked, key=lambda i: (full[i], -i))
    assert str(g) == str(cells[want][0])
    assert all(torch.equal(masks[c], cells[want][1][c]) for c in masks)


def test_best_of_orders_by_score_then_index():
    assert best_of([0.5, 0.9, 0.9, 0.1], 3) == [1, 2, 0]
    assert best_of([0.2], 5) == [0]


@pytest.mark.slow  # two whole searches
def test_random_ws_search_stopped_and_resumed_continues_exactly(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_cfg(RSPS, select={"name": "random_ws", "samples": 6, "top": 2,
                                 "screen_batches": 2})
    full = run_search(cfg, tmp_path / "full", device="cpu", log=lambda s: None)
    part = run_search(cfg, tmp_path / "part", device="cpu", log=lambda s: None,
                      stop_after_epochs=1)
    assert part["epoch"] == 1
    again = run_search(cfg, tmp_path / "part", device="cpu", log=lambda s: None)
    for k in ("train_loss", "val_acc", "discrete_val_acc", "genotype", "alpha_steps"):
        assert again[k] == full[k], k
    final = json.loads((tmp_path / "full" / "final.json").read_text())
    assert full["alpha_steps"] == 0 and full["selected_by"] == "random_ws"
    assert final["complete"]


@pytest.mark.parametrize("over,words", [
    ({"schedule": "every"}, "schedule 'every' would step an α that does nothing"),
    ({"schedule": "never", "regularizer": "prox"}, "regularizer 'prox' has no α to pull on"),
    ({"schedule": "never", "gradient": "unrolled"}, "gradient 'unrolled' has no α"),
])
def test_what_cannot_act_on_random_paths_is_refused_in_one_line(over, words):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs" / "random_ws.yaml", over)
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("key,value,words", [
    ("measure.hessian_every", 1, "uses no α"), ("stop.margin_stall_epochs", 3, "uses no α"),
    ("stop.dead", True, "uses no α"), ("stop.collapsed", 0.5, "uses no α"),
    ("model.edge_norm", True, "uses no α"), ("model.aux_skip_beta", 1.0, "uses no α"),
    ("select.name", "argmax", "random initial value"), ("select.name", "pt", "trains no α")])
def test_what_reads_alpha_is_refused_with_random_paths(key, value, words):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs" / "random_ws.yaml", {key: value})
    assert key in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


def test_select_options_are_checked():
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs" / "random_ws.yaml", {"select.samples": 0})
    assert "select.samples" in str(e.value) and "\n" not in str(e.value)


def test_the_preset_is_rsps():
    cfg = load_config(ROOT / "configs" / "random_ws.yaml")
    assert cfg.method() == {"activation": "random_path", "gradient": "first_order",
                            "schedule": "never", "regularizer": "none"}
    assert cfg.select.name == "random_ws" and load_space(cfg.space).name == "tiny"
