"""Retraining sensitivity (``evaluate.variants``): every cell retrained under each variant of
the protocol; the ranking per variant, its agreement, and the groups whose rank depends on it."""

from __future__ import annotations

import copy
import itertools

import pytest
from scipy import stats

from raydnas.config.experiment import from_dict
from raydnas.errors import ConfigError
from raydnas.evaluation.protocol import PROTOCOLS
from raydnas.model.spaces import load_space
from raydnas.reduce.variants import sensitivity
from raydnas.results.load import Trial
from raydnas.sweep.stage import baseline_configs, eval_configs, job_of
from raydnas.sweep.study import parse_study

STUDY = {
    "space": "tiny", "epochs": 1, "seed": 0,
    "data": {"dataset": "digits", "val_fraction": 0.5, "batch_size": 64},
    "model": {"channels": 4}, "log": {"print_every": 0},
    "sweep": {"methods": [{"name": "darts_v1"}, {"name": "drnas", "activation": "dirichlet"}],
              "seeds": 2, "baseline": {"random": 3}},
    "evaluate": {"protocol": "darts_cpu", "seeds": 2, "set": {"epochs": 3},
                 "variants": [{"name": "lr_low", "set": {"lr": 0.005}},
                              {"name": "long", "set": {"epochs": 6, "weight_decay": 0.0}}]},
}


def _study(tmp_path, **ev):
    s = copy.deepcopy(STUDY)
    s["evaluate"].update(ev)
    return parse_study(from_dict(s, "v.yaml"), storage=str(tmp_path), name="v")


def test_each_variant_is_the_protocol_with_its_keys_over_it(tmp_path):
    st = _study(tmp_path)
    base, v = st.evaluate.protocol, st.evaluate.variants
    assert list(v) == ["lr_low", "long"] and base.epochs == 3
    assert v["lr_low"].name == "darts_cpu@lr_low" and v["lr_low"].lr == 0.005 and \
        v["lr_low"].epochs == 3 and v["lr_low"].weight_decay == base.weight_decay
    assert v["long"].epochs == 6 and v["long"].weight_decay == 0.0 and v["long"].lr == base.lr
    assert base.lr == PROTOCOLS["darts_cpu"].lr
    # 4 searches; each cell (4 found + 3 random) x 2 evaluation seeds x 3 protocols
    assert st.total_trials() == 4 + 4 * 6 + 3 * 6
    cfgs = eval_configs(st.evaluate, {"method": "darts_v1", "seed": 0, "point": None}, "t1",
                        {"genotype": "Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1),"
                                     " ('sep_conv_3x3', 0), ('avg_pool_3x3', 2)], normal_concat="
                                     "range(2, 4), reduce=[('sep_conv_3x3', 0), ('skip_connect', "
                                     "1), ('sep_conv_3x3', 0), ('avg_pool_3x3', 2)], "
                                     "reduce_concat=range(2, 4))"})
    assert [(c.get("variant"), c["protocol"], c["eval_seed"]) for c in cfgs] == [
        (None, "darts_cpu", 0), (None, "darts_cpu", 1), ("lr_low", "darts_cpu@lr_low", 0),
        ("lr_low", "darts_cpu@lr_low", 1), ("long", "darts_cpu@long", 0),
        ("long", "darts_cpu@long", 1)]
    # the job an evaluation trial runs trains with its variant's protocol
    assert job_of(cfgs[4], st).protocol == v["long"] and job_of(cfgs[0], st).protocol == base
    randoms = baseline_configs(st.evaluate, load_space("tiny"), {})
    assert len(randoms) == 18 and {c["protocol"] for c in randoms} == {
        "darts_cpu", "darts_cpu@lr_low", "darts_cpu@long"}
    assert job_of(randoms[-1], st).protocol.name == randoms[-1]["protocol"]


@pytest.mark.parametrize("variants,key,allowed", [
    ([], "evaluate.variants", "a non-empty list"),
    ([{"name": "a", "set": {"lr": 0.1}}, {"name": "a", "set": {"lr": 0.2}}],
     "evaluate.variants[1].name", "a distinct name"),
    ([{"name": "a", "set": {"learning_rate": 0.1}}], "evaluate.variants[0].set.learning_rate",
     "a protocol key"),
    ([{"name": "a b", "set": {"lr": 0.1}}], "evaluate.variants[0].name", "letters, digits"),
    ([{"name": "a", "set": {}}], "evaluate.variants[0]", "a mapping {name"),
    ([{"name": "a", "set": {"epochs": 0}}], "epochs", "integer"),
])
def test_bad_variants_are_one_line_before_anything_starts(tmp_path, variants, key, allowed):
    with pytest.raises(ConfigError) as e:
        _study(tmp_path, variants=variants)
    msg = str(e.value)
    assert "\n" not in msg and "v.yaml" in msg and key in msg and allowed in msg, msg


def _record(trial_id, protocol, acc, role=None):
    return {"trial_id": trial_id, "protocol": protocol, "test_acc": acc, "complete": True,
            "eval_params": None, "eval_val_acc": None, "role": role, "seconds": 1.0,
            "genotype": None, "dead": False, "what": None, "test_n": 100}


def test_sensitivity_ranks_each_protocol_and_flags_what_moves():
    """Written out: 3 groups x 2 seeds; under the protocol a > b > c, under the variant
    c > b > a (a and c move by 2 places, b stays)."""
    acc = {"darts_cpu": {"a": (0.9, 0.8), "b": (0.7, 0.7), "c": (0.5, 0.6)},
           "darts_cpu@long": {"a": (0.1, 0.2), "b": (0.5, 0.5), "c": (0.8, 0.9)}}
    used, evals = {}, []
    for g in "abc":
        used[g] = [Trial(f"{g}{s}", None, {"method": g, "seed": s}, "complete")
                   for s in range(2)]
    for p, by in acc.items():
        for g, vals in by.items():
            evals += [_record(f"{g}{s}", p, v) for s, v in enumerate(vals)]
        evals += [_record(f"r{i}", p, 0.3 + 0.1 * i, role="random") for i in range(2)]
    s = sensitivity(evals, "darts_cpu", used)
    assert s["variants"] == ["long"]
    assert s["scores"]["darts_cpu"]["a"] == pytest.approx(0.85)
    assert s["ranks"]["darts_cpu"] == {"a": 1, "b": 2, "c": 3}
    assert s["ranks"]["darts_cpu@long"] == {"a": 3, "b": 2, "c": 1}
    assert s["rank_range"] == {"a": 2, "b": 0, "c": 2}
    assert s["sensitive"] == ["a", "c"] and s["leader_changes"]
    assert s["random_mean"]["darts_cpu@long"] == pytest.approx(0.35)
    want = stats.kendalltau([1, 2, 3], [3, 2, 1]).statistic
    assert s["kendall"]["long"] == pytest.approx(want)
    # without variants: nothing to say
    assert sensitivity([e for e in evals if e["protocol"] == "darts_cpu"], "darts_cpu",
                       used) is None


def test_equal_rankings_flag_nothing():
    used = {g: [Trial(g, None, {}, "complete")] for g in "abcd"}
    evals = [_record(g, p, v + d) for (g, v), (p, d) in itertools.product(
        zip("abcd", (0.9, 0.8, 0.7, 0.6)), (("darts_cpu", 0.0), ("darts_cpu@x", -0.1)))]
    s = sensitivity(evals, "darts_cpu", used)
    assert s["sensitive"] == [] and not s["leader_changes"] and s["kendall"]["x"] == 1.0


def test_a_variant_is_compared_on_the_seeds_it_finished_and_never_becomes_the_truth():
    """Mid-run: variant ``half`` finished for a0 and b0 only, variant ``lr`` for none. The
    table compares a0 and b0 under both columns (not a's two seeds against one), leaves ``lr``
    out, and the report's truth stays the protocol."""
    from raydnas.reduce.truth import choose_protocol

    used = {g: [Trial(f"{g}{s}", None, {}, "complete") for s in range(2)] for g in "ab"}
    evals = [_record("a0", "darts_cpu", 0.5), _record("a1", "darts_cpu", 0.9),
             _record("b0", "darts_cpu", 0.6), _record("b1", "darts_cpu", 0.6),
             _record("a0", "darts_cpu@half", 0.4), _record("b0", "darts_cpu@half", 0.3),
             dict(_record("a0", "darts_cpu@lr", None), complete=False)]
    s = sensitivity(evals, "darts_cpu", used)
    assert s["variants"] == ["half"] and s["unfinished"] == ["lr"] and s["compared"] == 2
    assert s["scores"]["darts_cpu"] == {"a": 0.5, "b": 0.6}  # a1 left out: not under half
    assert s["ranks"]["darts_cpu"] == {"a": 2, "b": 1} and s["leader_changes"]
    assert choose_protocol(evals, None) == "darts_cpu"
    only_variant = [e for e in evals if "@" in e["protocol"]]
    assert choose_protocol(only_variant, None) == "darts_cpu"
    assert sensitivity(only_variant, "darts_cpu", used) is None
