"""``raydnas reduce`` on a real Ray Tune experiment: 2 hyperparameter points x 2 seeds of a
real (tiny) search on the embedded digits data, written by Tune 2.60 to a local storage path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from raydnas.reduce import reduce

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    if started:
        ray.shutdown()


def _trainable(config: dict) -> None:
    """A trial: one run_search with the flat trial config applied as overrides."""
    from ray import tune

    from raydnas.config.experiment import load_config
    from raydnas.search.run import run_search

    over = ["model.channels=4", "epochs=2", "data.batch_size=32", "log.print_every=0",
            "log.histograms=false"]
    over += [f"{k}={v}" for k, v in config.items() if k not in ("method", "point")]
    cfg = load_config(QUICKSTART, over)
    run_search(cfg, os.getcwd(), threads=1, log=lambda s: None,
               report=lambda m, _path: tune.report(dict(m)))


def test_reduce_real_tune_experiment(ray_local, tmp_path):
    import ray.cloudpickle
    from ray import tune

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    param_space = {"activation": "softmax", "gradient": "first_order", "schedule": "every",
                   "regularizer": "none", "method": "softmax/first_order/every/none",
                   # -1.0 is rejected by the config inside the trial: 2 real failed trials
                   "optim.a_lr": tune.grid_search([3e-4, 3e-3, -1.0]),
                   "seed": tune.grid_search([0, 1])}
    tuner = tune.Tuner(
        _trainable, param_space=param_space,
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="study", verbose=0,
                                  sync_config=tune.SyncConfig(sync_artifacts=True)))
    results = tuner.fit()
    assert len(results.errors) == 2
    exp = tmp_path / "study"

    df = reduce(exp)
    assert len(df) == 3 and list(df["n"]) == [2, 2, 0]  # the failed point sorts last
    assert sorted(df["optim.a_lr"][:2]) == [3e-4, 3e-3]
    assert df.attrs["counts"]["complete"] == 4 and df.attrs["counts"]["failed"] == 2
    bad = df.iloc[2]
    assert bad["optim.a_lr"] == -1.0 and bad["n_failed"] == 2
    assert {e["status"] for e in df.attrs["excluded"]} == {"failed"}
    assert all("ConfigError" in e["error"] for e in df.attrs["excluded"])
    for _, r in df.iloc[:2].iterrows():
        assert 0.0 <= r["consensus"] <= 1.0
        assert 1 <= r["distinct_genotypes"] <= 2 and 1 <= r["modal_count"] <= 2
        assert r["distinct_genotypes"] == 1 or r["modal_count"] == 1
        assert r["modal_genotype"].startswith("Genotype(normal=")
        assert r["alpha_steps_mean"] > 0 and r["search_seconds_mean"] > 0
        assert r["discretization_gap_mean"] == pytest.approx(
            r["val_acc_mean"] - r["discrete_val_acc_mean"])
        assert 1 <= r["stabilization_epoch_min"] <= r["stabilization_epoch_max"] <= 2
    out = exp / "report"
    for f in ("report.md", "report.csv", "report.json"):
        assert (out / f).stat().st_size > 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 6  # acc_vs_gap, reliability, and cell + alpha for each finished group
    assert "optim.a_lr=-1" in (out / "report.md").read_text()
    for p in pngs:
        with Image.open(p) as im:
            im.load()
            assert im.size[0] > 300
