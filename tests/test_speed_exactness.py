"""Speed never changes results: raydnas's optimized search step against the plain reference.

The reference (``benchmarks/reference.py``) computes every op of every edge, ``none`` included,
as ``w · op(x)`` with stock functional calls, and takes α's gradient from a full backward, as
quark0/darts does. The optimized step (``raydnas.search.run.train_step``) skips zero ops, takes
α-only gradients, shares ReLUs, folds op weights into BatchNorm and accumulates in place. Both run
on identical states (same config and seed) in double precision; after every step α, the
weights and the BatchNorm statistics must agree to float64 round-off.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from reference import plain_forward, reference_step  # noqa: E402
from step import Feeder, build_state, make_config, synthetic_data  # noqa: E402

from raydnas.model.genotype import derive  # noqa: E402
from raydnas.search.run import train_step  # noqa: E402

CASES = {  # space: (channels, cells) small enough for a few seconds on 2 cores
    "darts": (4, 3),
    "nb201": (4, 1),
    "tiny": (4, 3),
}


@pytest.fixture(autouse=True)
def one_thread():
    # Many tiny ops: on a busy shared machine a 2-thread pool waits on descheduled threads.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pair(space: str, method: str = "darts"):
    C, L = CASES[space]
    cfg = make_config(space, method, 4, C, L)
    data = synthetic_data(16, size=8)  # 8x8: float64 convs are slow on CPU
    data.data = (data.data[0].double(), data.data[1])
    states = []
    for _ in range(2):
        st = build_state(cfg, torch.device("cpu"), data)
        st.model.double()
        st.steps_per_epoch = 10
        states.append(st)
    states[1].model.to(memory_format=torch.contiguous_format)  # the reference runs NCHW
    return states, data


def _assert_same(a, b, what: str) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-9, atol=1e-11, msg=f"{what}: {k}")


@pytest.mark.parametrize("space", sorted(CASES))
def test_optimized_step_matches_plain_reference(space: str) -> None:
    (ours, ref), data = _pair(space)
    _assert_same(ours, ref, "initial state")
    f_ours, f_ref = Feeder(data, 4, torch.device("cpu")), Feeder(data, 4, torch.device("cpu"))
    alpha0 = [a.detach().clone() for a in ours.model.arch_parameters()]
    w0 = [p.detach().clone() for p in ours.model.weight_parameters()]
    for step in range(3):
        train_step(ours, f_ours.train_batch(), f_ours)
        reference_step(ref, f_ref.train_batch(), f_ref)
        _assert_same(ours, ref, f"after step {step + 1}")
    # the comparison is not vacuous: both α and the weights moved
    assert any(not torch.equal(a0, a) for a0, a in zip(alpha0, ours.model.arch_parameters()))
    assert any(not torch.equal(p0, p) for p0, p in zip(w0, ours.model.weight_parameters()))


@pytest.mark.parametrize("space", ["darts", "nb201"])
@pytest.mark.parametrize("training", [True, False])
def test_discrete_forward_matches_plain_reference(space: str, training: bool) -> None:
    # A derived (binary) weighting: ours skips every zero-weight op, the reference computes
    # them all and multiplies by 0. Outputs and input gradients must agree.
    (ours, _), data = _pair(space)
    model = ours.model.train(training)
    twin = copy.deepcopy(model)
    _, masks = derive({c: p.detach() for c, p in model.op_probs().items()}, model.space)
    x = data.data[0][:4].clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = model(x, op_weights=masks), plain_forward(twin, x2, masks)
    torch.testing.assert_close(y, y2, rtol=1e-9, atol=1e-11)
    y.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-9, atol=1e-11)


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_benchmark_smoke_prints_one_json_line() -> None:
    import json

    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "step.py"), "--space", "tiny", "--channels",
         "4", "--batch", "4", "--steps", "2", "--warmup", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["ours"]["median_s"] > 0 and rec["method"]["gradient"] == "first_order"
    assert rec["ours"]["peak_rss_gb"] > 0 and rec["device"] == "cpu"


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_implicit_cost_benchmark_smoke_covers_every_K_and_T() -> None:
    import json

    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "implicit_cost.py"), "--space", "tiny",
         "--channels", "4", "--batch", "4", "--reps", "1", "--threads", "1", "--K", "0", "2",
         "--T", "1", "4"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(rec["alpha_step_s"]) == {"first_order", "unrolled", "implicit_K0", "implicit_K2"}
    w = rec["weight_step_s"]
    for name, a in rec["alpha_step_s"].items():
        per = rec["per_weight_step_s"][name]
        assert set(per) == {"T1", "T4"}
        assert per["T1"] == pytest.approx(w + a, abs=2e-4)
        assert per["T4"] == pytest.approx(w + a / 4, abs=2e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_index_free_max_pool_matches_torch_to_second_order(stride: int) -> None:
    # MaxPool3x3 saves no argmax indices (it finds them again in backward): values and
    # gradients must equal F.max_pool2d's exactly, and double backward (iDARTS's Hessian-vector
    # products go through it) must pass gradgradcheck.
    from raydnas.model.ops import MaxPool3x3

    torch.manual_seed(0)
    pool = MaxPool3x3(stride)
    x = torch.randn(2, 3, 7, 7, dtype=torch.double, requires_grad=True)
    y, ref = pool(x), torch.nn.functional.max_pool2d(x, 3, stride, 1)
    assert torch.equal(y, ref)
    g = torch.randn_like(ref)
    assert torch.equal(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    assert torch.autograd.gradgradcheck(pool, (x,))


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_gdas_step_matches_autodl_style_reference(space: str) -> None:
    # GDAS runs one sampled op per edge plus the others' zero weights as scalars; the reference
    # is AutoDL-Projects' forward_gdas written plainly. Same samples, same numbers.
    (ours, ref), data = _pair(space, "gdas")
    f_ours, f_ref = Feeder(data, 4, torch.device("cpu")), Feeder(data, 4, torch.device("cpu"))
    alpha0 = [a.detach().clone() for a in ours.model.arch_parameters()]
    for step in range(3):
        rng = torch.get_rng_state()  # the Gumbel noise comes from the global generator
        train_step(ours, f_ours.train_batch(), f_ours)
        torch.set_rng_state(rng)
        reference_step(ref, f_ref.train_batch(), f_ref, one_op=True)
        _assert_same(ours, ref, f"after step {step + 1}")
    assert any(not torch.equal(a0, a) for a0, a in zip(alpha0, ours.model.arch_parameters()))
