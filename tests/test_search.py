"""The standalone search: outputs, TensorBoard read-back, checkpoints, exact resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import read_final, tiny_config, tiny_raw

from raydnas import checkpoint as ckpt
from raydnas.search.run import run_search

METRICS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "discrete_val_acc",
           "discretization_gap", "distance_to_discrete", "alpha_entropy", "genotype",
           "genotype_changed", "arch_params", "param_free_ops", "alpha_steps", "epoch_seconds"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    reports = []
    m = run_search(tiny_config(), out, report=lambda mm, p: reports.append((mm, Path(p))),
                   log=lambda s: None)
    return out, m, reports


def test_outputs_and_metric_names(finished_run):
    out, m, reports = finished_run
    for name in METRICS:
        assert name in m, name
    assert [r[0]["epoch"] for r in reports] == [1, 2]
    assert all(p.is_file() for _, p in reports)
    assert m["discretization_gap"] == pytest.approx(m["val_acc"] - m["discrete_val_acc"])
    # the paper's α lr for 2 tiny epochs leaves α at its init: flagged undecided
    assert m["alpha_margin_mean"] < 0.05 and m["decided"] is False
    assert m["alpha_steps"] == 2 * (len(json.loads((out / "split.json").read_text())["train"]) // 64)
    total = sum(v.numel() for k, v in torch.load(out / "checkpoint.pt", weights_only=True)[
        "state"]["model"].items() if not k.startswith("alphas") and v.is_floating_point()
        and "running" not in k)
    assert 0 < m["arch_params"] < total  # the derived cell keeps a subset of the weights
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    geno = (out / "genotype.txt").read_text()
    assert geno.startswith("Genotype(normal=[(") and "reduce_concat=range(2, 4)" in geno
    final = read_final(out)
    assert final["genotype"]["darts"] == m["genotype"] and final["complete"]
    assert yaml.safe_load((out / "config.yaml").read_text())["space"] == "tiny"


def test_checkpoint_loads_weights_only_and_holds_full_state(finished_run):
    out, m, _ = finished_run
    state = ckpt.load(out / "checkpoint.pt")  # weights_only=True
    s = state["state"]
    assert {"model", "w_optimizer", "a_optimizer", "lr_scheduler", "axes", "counters"} <= set(s)
    assert s["counters"]["epoch"] == 2 and "alphas.normal" in s["model"]
    assert {"torch", "numpy", "python"} <= set(state["rng"])
    assert s["a_optimizer"]["state"]  # Adam moments are saved


def test_tensorboard_read_back_with_tensorboards_reader(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, m, _ = finished_run
    acc = EventAccumulator(str(out / "tb"), size_guidance={"images": 0, "scalars": 0,
                                                          "tensors": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    for name in ("val_acc", "discrete_val_acc", "discretization_gap", "distance_to_discrete",
                 "alpha_entropy", "arch_params", "param_free_ops", "alpha_steps"):
        events = acc.Scalars(f"search/{name}")
        assert [e.step for e in events] == [1, 2]
    assert acc.Scalars("search/val_acc")[-1].value == pytest.approx(m["val_acc"], rel=1e-6)
    assert set(tags["images"]) == {"alpha/normal", "alpha/reduce"}
    img = acc.Images("alpha/normal")[-1]
    assert img.width > 200 and img.height > 100  # a labelled heatmap, not a bare bitmap
    assert any(t.startswith("op_weight/normal/") for t in tags["histograms"])
    text = acc.Tensors("genotype/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert m["genotype"] in text


def test_run_again_continues_instead_of_starting_over(finished_run):
    out, m, _ = finished_run
    logs = []
    m2 = run_search(tiny_config(), out, log=logs.append)
    assert any("already finished" in s for s in logs) and not any("resuming" in s for s in logs)
    assert not any(s.startswith("epoch 1/") for s in logs)
    assert m2 == m


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_damaged_checkpoint_falls_back_to_the_previous_or_explains(tmp_path):
    """A truncated checkpoint.pt: continue from checkpoint.prev.pt (one epoch earlier) and reach
    the same result; with no readable previous one, one line saying what to do."""
    import subprocess
    import sys

    cfg = tiny_config(epochs=3)
    straight = run_search(cfg, tmp_path / "a", log=lambda s: None)
    out = tmp_path / "b"
    run_search(cfg, out, log=lambda s: None, stop_after_epochs=2)
    assert (out / "checkpoint.prev.pt").is_file()
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    logs = []
    m = run_search(cfg, out, log=logs.append)
    assert any("unreadable" in s and "checkpoint.prev.pt" in s for s in logs)
    assert m["epoch"] == 3 and m["genotype"] == straight["genotype"]
    assert m["val_acc"] == straight["val_acc"]
    for f in ("checkpoint.pt", "checkpoint.prev.pt"):
        (out / f).write_bytes(b"not a checkpoint")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_raw(epochs=4)))
    r = subprocess.run([sys.executable, "-m", "raydnas.cli", "search", str(cfg_file), "--out",
                        str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "damaged" in r.stderr and "--fresh" in r.stderr


def test_resume_refuses_a_different_config(finished_run):
    from raydnas.errors import ConfigError

    out, _, _ = finished_run
    with pytest.raises(ConfigError, match="seed"):
        run_search(tiny_config(seed=1), out, log=lambda s: None)


def _launch(cfg_path, out):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "raydnas", "search", str(cfg_path), "--out",
                             str(out), "--threads", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_killed_search_resumes_to_the_same_result(tmp_path):
    raw = tiny_raw(epochs=3)
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    # uninterrupted reference
    ref = _launch(cfg_path, tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stdout.read()
    # interrupted: SIGKILL once epoch 1 is checkpointed, while epoch 2 runs
    out = tmp_path / "killed"
    p = _launch(cfg_path, out)
    deadline = time.time() + 300
    while time.time() < deadline:
        f = out / "metrics.jsonl"
        if f.is_file() and len(f.read_text().splitlines()) >= 1:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_at = len((out / "metrics.jsonl").read_text().splitlines())
    assert killed_at < 3, "the run finished before it could be killed"
    r = _launch(cfg_path, out)
    text = r.communicate(timeout=300)[0]
    assert r.returncode == 0, text
    assert "resuming from" in text and f"after epoch {killed_at}/3" in text
    a, b = read_final(tmp_path / "ref"), read_final(out)
    assert a["genotype"] == b["genotype"]
    for k in METRICS:
        if k != "epoch_seconds":
            assert a["metrics"][k] == b["metrics"][k], k
    sa = ckpt.load(tmp_path / "ref" / "checkpoint.pt")["state"]["model"]
    sb = ckpt.load(out / "checkpoint.pt")["state"]["model"]
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_importing_the_supernet_imports_neither_ray_nor_torchvision():
    code = ("import sys, raydnas, raydnas.model.supernet, raydnas.search.run, raydnas.config.experiment, "
            "raydnas.model.network, raydnas.search.measure, raydnas.evaluation; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'torchvision', 'optuna')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _run_in_terminal(args: list[str]) -> str:
    """Run the CLI with stdout/stderr on a pseudo-terminal (100×24), return what it printed."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "raydnas.cli", *args], stdout=slave,
                         stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    p.wait()
    os.close(master)
    assert p.returncode == 0, out.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_progress_bar_with_eta_on_a_terminal_step_lines_otherwise(tmp_path):
    qs = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
    args = ["search", qs, "--set", "epochs=2", "--out"]
    tty = _run_in_terminal(args + [str(tmp_path / "a")])
    assert "search ETA" in tty and "it/s" in tty  # the bar, with the whole search's ETA
    assert "step 11/22" not in tty  # no step lines under the bar
    piped = subprocess.run([sys.executable, "-m", "raydnas.cli", *args, str(tmp_path / "b"),
                            "--set", "optim.a_lr=3.0e-4"], capture_output=True, text=True)
    assert piped.returncode == 0 and "step 11/22" in piped.stdout
    assert "it/s" not in piped.stdout + piped.stderr  # quiet when not a terminal
    # DARTS's α lr leaves α at its init in 2 epochs: the console says the cell is not a result
    assert "UNDECIDED" in piped.stdout and "(undecided)" in piped.stdout
