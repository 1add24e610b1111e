"""Search spaces: parameter counts against the reference implementations, forward/backward
for every space, genotype round trips, YAML validation errors."""

import textwrap

import pytest
import torch

from raydnas.axes.activation import Softmax
from raydnas.errors import ConfigError
from raydnas.model.genotype import derive, parse_genotype
from raydnas.model.spaces import list_spaces, load_space
from raydnas.model.supernet import Supernet


def _counts(space, **kw):
    m = Supernet(load_space(space), Softmax(), 10, 3, **kw)
    return (sum(p.numel() for p in m.weight_parameters()),
            sum(p.numel() for p in m.arch_parameters()))


def test_darts_parameter_count():
    # quark0/darts Network(C=16, num_classes=10, layers=8): 1,930,618 weights, 2 x 14 x 8 alphas
    w, a = _counts("darts")
    assert abs(w - 1_930_618) / 1_930_618 <= 0.005
    assert a == 224


def test_nb201_parameter_count():
    # AutoDL-Projects TinyNetworkDarts(C=16, N=5): 1,692,826 weights (+-0.5 %), 6 x 5 alphas
    w, a = _counts("nb201")
    assert abs(w - 1_692_826) / 1_692_826 <= 0.005
    assert a == 30


def test_alphas_are_parameters_kept_apart_from_weights():
    m = Supernet(load_space("tiny"), Softmax(), 10, 1)
    arch = {id(p) for p in m.arch_parameters()}
    assert all(isinstance(p, torch.nn.Parameter) for p in m.arch_parameters())
    assert not arch & {id(p) for p in m.weight_parameters()}
    assert {n for n in m.state_dict() if n.startswith("alphas.")} == {"alphas.normal", "alphas.reduce"}
    # the two optimizers of a search touch only their own group
    torch.manual_seed(0)
    torch.nn.functional.cross_entropy(m(torch.randn(2, 1, 8, 8)), torch.tensor([0, 1])).backward()
    alphas = [a.detach().clone() for a in m.arch_parameters()]
    weights = [w.detach().clone() for w in m.weight_parameters()]
    torch.optim.SGD(m.weight_parameters(), lr=0.1).step()
    assert all(torch.equal(a, b) for a, b in zip(alphas, m.arch_parameters()))
    assert any(not torch.equal(w, v) for w, v in zip(weights, m.weight_parameters()))
    weights = [w.detach().clone() for w in m.weight_parameters()]
    torch.optim.Adam(m.arch_parameters(), lr=0.1).step()
    assert all(torch.equal(w, v) for w, v in zip(weights, m.weight_parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(alphas, m.arch_parameters()))


@pytest.mark.parametrize("space", list_spaces())
def test_space_forward_backward_every_parameter_gets_gradient(space):
    torch.manual_seed(0)
    sp = load_space(space)
    m = Supernet(sp, Softmax(), 5, 3, channels=4, cells=3 if sp.macro == "darts" else 1)
    x = torch.randn(4, 3, 8, 8)
    out = m(x)
    assert out.shape == (4, 5)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    for n, p in m.named_parameters():
        assert p.grad is not None, n
        assert torch.count_nonzero(p.grad) > 0, n


@pytest.mark.parametrize("space", list_spaces())
def test_genotype_string_round_trips(space):
    sp = load_space(space)
    g = torch.Generator().manual_seed(1)
    w = {ct: torch.rand(sp.num_edges, len(sp.ops), generator=g) for ct in sp.cell_types}
    geno, masks = derive(w, sp)
    assert parse_genotype(str(geno)) == geno
    if sp.rule == "top_k_edges":  # the DARTS format marks no node boundaries: k pairs per node
        assert parse_genotype(geno.to_darts()).edges() == geno.edges()
    for ct, mask in masks.items():
        if sp.rule == "top_k_edges":
            assert int(mask.sum()) == sp.k * sp.nodes
        else:
            assert int(mask.sum()) == sp.num_edges
        assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_darts_discretization_rule_by_hand():
    sp = load_space("darts")
    w = torch.zeros(14, 8)
    ops = sp.ops
    # node 2 (edges 0, 1): edge 0 is dominated by `none` but its best real op is sep_conv_5x5
    w[0, ops.index("none")] = 0.9
    w[0, ops.index("sep_conv_5x5")] = 0.05
    w[1, ops.index("skip_connect")] = 0.5
    geno, mask = derive({"normal": w, "reduce": w}, sp)
    assert geno.cells["normal"][0] == (("sep_conv_5x5", 0), ("skip_connect", 1))
    assert mask["normal"][0, ops.index("none")] == 0


def test_nb201_string_format():
    sp = load_space("nb201")
    w = torch.zeros(6, 5)
    choice = [3, 3, 4, 1, 3, 1]  # nor_conv_3x3, nor_conv_3x3, avg_pool_3x3, skip, nor_conv_3x3, skip
    for e, k in enumerate(choice):
        w[e, k] = 1
    geno, _ = derive({"normal": w}, sp)
    assert str(geno) == ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
                         "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")


def _write(tmp_path, body):
    p = tmp_path / "space.yaml"
    p.write_text(textwrap.dedent(body))
    return p


@pytest.mark.parametrize("body,key,value", [
    ("ops: [none, sep_conv_9x9]\n", "ops[1]", "sep_conv_9x9"),
    ("ops: [none, skip_connect]\ncell: {inputs: 2, nodes: 0}\n", "cell.nodes", "0"),
    ("ops: [none, skip_connect]\ncell: {inputs: 2, nodes: 2, colour: red}\n", "cell.colour", "red"),
    ("ops: [none, skip_connect]\nmacro: {type: nb201}\n", "cell.inputs", "2"),
    ("ops: [skip_connect]\nshape: round\n", "shape", "round"),
])
def test_space_validation_errors_name_file_key_value(tmp_path, body, key, value):
    p = _write(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        load_space(str(p))
    msg = str(e.value)
    assert str(p) in msg and key in msg and value in msg
    assert "\n" not in msg


def test_genotype_of_a_one_input_space_pastes_into_darts_and_nb201_parsers():
    """The DARTS line of an NB201-style cell is a complete DARTS namedtuple (reduce=[]), the NB201
    string parses with NAS-Bench-201's own API parser, and both come back to the same cell."""
    from collections import namedtuple

    from nas_201_api import NASBench201API

    from raydnas.model.genotype import parse_genotype

    s = "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
    g = parse_genotype(s)
    Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")  # quark0
    d = eval(g.to_darts(), {"Genotype": Genotype, "range": range})
    assert d.reduce == [] and list(d.normal_concat) == [3] and len(d.normal) == 6
    assert NASBench201API.str2lists(g.to_nb201()) == [tuple(n) for n in g.cells["normal"]]
    back = parse_genotype(g.to_darts(), nodes=3)
    assert back.cells == g.cells and back.inputs == 1 and back.to_nb201() == s
