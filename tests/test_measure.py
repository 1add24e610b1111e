"""The measurement protocol (raydnas.search.measure): BatchNorm re-estimation, the stand-alone network
of a genotype, sampled measurement of stochastic activations, the fine-tuned metric."""

import copy

import pytest
import torch
from helpers import _digits, read_final, tiny_config
from torch import nn

from raydnas.axes import ACTIVATIONS
from raydnas.data.datasets import Batches
from raydnas.model.genotype import derive, parse_genotype
from raydnas.model.network import DiscreteNetwork, from_supernet
from raydnas.model.spaces import load_space
from raydnas.model.supernet import Supernet
from raydnas.model.weighting import scaled_bn
from raydnas.search.measure import Measurer, bn_indices, reestimate_bn
from raydnas.search.metrics import derived_params
from raydnas.search.run import run_search

CPU = torch.device("cpu")


@pytest.mark.parametrize("momentum", [None, 0.1, 0.3])
def test_scaled_bn_running_stats_match_batchnorm2d(momentum):
    """scaled_bn (op weight folded into a non-affine BN) keeps the running statistics exactly as
    nn.BatchNorm2d does, including momentum=None's cumulative average."""
    g = torch.Generator().manual_seed(0)
    ours = nn.BatchNorm2d(6, affine=False, momentum=momentum)
    ref = nn.BatchNorm2d(6, affine=False, momentum=momentum)
    w = torch.tensor(0.37)
    for i in range(4):
        x = torch.randn(5, 6, 4, 4, generator=g) * (i + 1) + i
        y = scaled_bn(ours, x, w)
        torch.testing.assert_close(y, w * ref(x))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 4
    if momentum is None:  # the cumulative average of the four batch means
        ours.eval()
        ref.eval()
        x = torch.randn(3, 6, 4, 4, generator=g)
        torch.testing.assert_close(scaled_bn(ours, x, w), w * ref(x))


def test_reestimate_bn_is_the_cumulative_average_over_the_images():
    """After re-estimation the stem BN's running mean is the mean of the stem conv's outputs
    over all images (equal batches), whatever the statistics were before."""
    x = _digits().data[0][:96]
    m = Supernet(load_space("tiny201"), ACTIVATIONS.create("softmax"), 10, 1, seed=0)
    bn = m.stem[1]
    bn.running_mean.fill_(5.0)
    reestimate_bn(m, [(x[i:i + 32], None) for i in range(0, 96, 32)], CPU)
    with torch.no_grad():
        conv = m.stem[0](x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(bn.running_mean, conv.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not m.training and bn.momentum == 0.1  # left in eval mode, momentum restored


def _random_alphas(m, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in m.alphas.values():
            a.copy_(torch.randn(a.shape, generator=g))


@pytest.mark.parametrize("space,act", [("tiny201", "softmax"), ("tiny", "softmax"),
                                       ("tiny", "crb"), ("tiny201", "gumbel_hard")])
def test_standalone_network_equals_supernet_under_derived_mask(space, act):
    """The stand-alone network of the derived genotype, with the supernet's weights copied, gives
    the same logits as the supernet run with the derived binary op weights, both measured under
    the same BN protocol (re-estimated on the same real images)."""
    m = Supernet(load_space(space), ACTIVATIONS.create(act), 10, 1, channels=8, seed=1)
    _random_alphas(m, 3)
    m.train()  # move the BN statistics away from their init, as a search does
    x, _ = _digits().data
    with torch.no_grad():
        for i in range(3):
            m(x[i * 32:(i + 1) * 32])
    genotype, masks = derive(m.op_probs(), m.space)
    net = from_supernet(m, genotype)
    assert sum(p.numel() for p in net.parameters()) == derived_params(m, masks)
    cal = [(x[i:i + 32], None) for i in range(200, 328, 32)]
    sup = copy.deepcopy(m)
    reestimate_bn(sup, cal, CPU, lambda z: sup(z, op_weights=masks))
    reestimate_bn(net, cal, CPU)
    with torch.no_grad():
        a = sup(x[400:464], op_weights=masks)
        b = net(x[400:464])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # and it is a real network: it trains (gradients reach every weight)
    net.train()
    nn.functional.cross_entropy(net(x[:16]), torch.zeros(16, dtype=torch.long)).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_standalone_network_from_published_genotypes():
    """DARTS_V2 (quark0/darts cnn/genotypes.py) in the darts space and an NB201 string in nb201
    build, run, and keep only the chosen ops."""
    v2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
          "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
          "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
          "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
          "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
          "reduce_concat=[2, 3, 4, 5])")
    net = DiscreteNetwork(load_space("darts"), parse_genotype(v2), 10, 3, channels=8, cells=5)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert sum(len(c.ops) for c in net.cells) == 5 * 8
    nb = parse_genotype("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|"
                        "avg_pool_3x3~2|")
    net = DiscreteNetwork(load_space("nb201"), nb, 10, 3, channels=8, cells=1)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert [len(c.ops) for c in net.cells if hasattr(c, "ops")] == [4, 4, 4]
    with pytest.raises(ValueError, match="4 nodes per cell, the space 'tiny' 2"):
        DiscreteNetwork(load_space("tiny"), parse_genotype(v2), 10, 3)
    with pytest.raises(ValueError, match="'sep_conv_3x3' is not an op of space 'nb201'"):
        DiscreteNetwork(load_space("nb201"), parse_genotype(nb.to_nb201().replace(
            "nor_conv_3x3", "sep_conv_3x3")), 10, 3)


def _measurer(n_bn=128, samples=3, seed=0):
    ds = _digits()
    train, val = list(range(0, 600)), list(range(600, 900))
    return Measurer(ds, bn_indices(train, n_bn, seed), Batches(ds, val, 64, 0, False), 32,
                    CPU, samples, seed)


def test_measurement_leaves_the_search_untouched_and_is_repeatable():
    m = Supernet(load_space("tiny201"), ACTIVATIONS.create("gumbel_hard"), 10, 1, seed=0)
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    _, masks = derive(m.op_probs(), m.space)
    meas = _measurer()
    r1 = meas.supernet(m, masks)
    r2 = meas.supernet(m, masks)
    assert r1 == r2  # fixed draws, fixed images: the same numbers
    assert m.training
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert set(r1) == {"val_loss", "val_acc", "discrete_val_loss", "discrete_val_acc"}


def test_stochastic_val_acc_is_the_mean_over_sampled_networks():
    """For gumbel_hard, val_acc is the mean accuracy of the fixed one-hot sampled networks (each
    measured under the protocol), not the softmax(α) mixture."""
    m = Supernet(load_space("tiny201"), ACTIVATIONS.create("gumbel_hard"), 10, 1, seed=0)
    _random_alphas(m, 5)
    _, masks = derive(m.op_probs(), m.space)
    meas = _measurer(samples=3)
    got = meas.supernet(m, masks)
    accs = []
    for s in range(3):
        g = torch.Generator().manual_seed(0 * 7_919 + s)
        draw = {ct: m.activation.sample(a, g) for ct, a in m.alphas.items()}
        assert all(((d.sum(1) == 1) & ((d == 0) | (d == 1)).all(1)).all() for d in draw.values())
        accs.append(meas.measure(copy.deepcopy(m), draw)[1])
    assert got["val_acc"] == pytest.approx(sum(accs) / 3)
    mix = meas.measure(copy.deepcopy(m), {ct: p.detach() for ct, p in m.op_probs().items()})[1]
    assert len(set(accs)) > 1 or accs[0] != mix  # the samples are real networks, not the mixture


def test_bn_indices_fixed_per_seed():
    train = list(range(10, 500))
    assert bn_indices(train, 64, 3) == bn_indices(train, 64, 3)
    assert bn_indices(train, 64, 3) != bn_indices(train, 64, 4)
    assert set(bn_indices(train, 64, 3)) <= set(train)
    with pytest.raises(ValueError):
        bn_indices(train, 491, 0)


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_search_reports_measured_and_tuned_metrics(tmp_path):
    """A real search ends with discrete_val_acc_tuned (fine-tuned derived network) and reports
    the BN-re-estimated accuracies every epoch."""
    cfg = tiny_config(space="tiny201", epochs=2, measure={"tune_epochs": 1, "bn_images": 256},
                      data={"batch_size": 32})
    m = run_search(cfg, tmp_path, log=lambda s: None)
    assert 0.0 <= m["discrete_val_acc"] <= 1.0 and 0.0 <= m["discrete_val_acc_tuned"] <= 1.0
    assert m["discretization_gap"] == pytest.approx(m["val_acc"] - m["discrete_val_acc"])
    fin = read_final(tmp_path)
    assert fin["metrics"]["discrete_val_acc_tuned"] == m["discrete_val_acc_tuned"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert "discrete_val_acc_tuned" not in lines[0]  # the fine-tuning runs at the end only


@pytest.mark.parametrize("key,value,allowed", [
    ("measure.bn_images", 0, "an integer > 0"),
    ("measure.bn_images", 5000, "at most 719"),
    ("measure.samples", 0, "an integer > 0"),
    ("measure.tune_epochs", -1, "an integer >= 0"),
    ("activation.form", "v2", "gdas or v1"),
])
@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_bad_measurement_settings_are_one_line_errors(key, value, allowed, tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "c.yaml"
    cfg.write_text("space: tiny201\nepochs: 1\nactivation: gumbel_hard\n"
                   "data: {dataset: digits, batch_size: 32}\n")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "raydnas.cli", "search", str(cfg), "--out",
                        str(out), "--set", f"{key}={value}"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and key in err and str(value) in err and allowed in err
    assert not out.exists()


def test_evaluation_network_parameter_counts_equal_the_references():
    """DARTS's train.py network (quark0/darts model.NetworkCIFAR: 36 channels, 20 cells, affine
    ops, no BN after pooling) and NAS-Bench-201's TinyNetwork (C 16, N 5) for 10 classes."""
    from test_reduce import DARTS_V1, DARTS_V2

    def count(net, aux=True):
        return sum(p.numel() for n, p in net.named_parameters()
                   if aux or not n.startswith("auxiliary_head"))

    darts = load_space("darts")
    v2 = DiscreteNetwork(darts, parse_genotype(DARTS_V2), 10, 3, channels=36, cells=20,
                         pool_bn=False, auxiliary=True)
    assert count(v2, aux=False) == 3_349_342 and count(v2) == 3_825_768
    v1 = DiscreteNetwork(darts, parse_genotype(DARTS_V1), 10, 3, channels=36, cells=20,
                         pool_bn=False)
    assert count(v1) == 3_169_414
    nb = parse_genotype("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                        "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    assert count(DiscreteNetwork(load_space("nb201"), nb, 10, 3, channels=16, cells=5)) \
        == 1_288_506
    v2.train()
    v2.drop_path_prob = 0.2
    logits, aux = v2(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)
    v2.eval()
    assert v2(torch.randn(2, 3, 32, 32)).shape == (2, 10)
