"""The evaluation stage of a study: an ``evaluate:`` block queues, for every search trial that
finishes, the training of its found cell from scratch, in the same Ray Tune experiment::

    evaluate:
      protocol: nb201_short     # darts, nb201, darts_short, nb201_short, darts_cpu (default:
                                # the short one of the space's macro; darts_cpu on digits)
      seeds: 1                  # evaluation seeds per found cell (or a list)
      set: {epochs: 12}         # protocol keys and data.KEY overrides
      calibrate: false          # also train the space's reference cells (raydnas.model.cells)
      variants:                 # retraining sensitivity: every cell also trained under each
        - {name: lr_low, set: {lr: 0.01}}         # protocol keys over the protocol's
        - {name: long, set: {epochs: 20}}

With ``sweep.baseline: {random: N}`` the stage also trains N cells drawn uniformly from the
space (``role: random``, ``method: random_cells``), and with ``calibrate: true`` the space's
reference cells (``role: reference``, ``method: reference_cells``), under the same protocol and
evaluation seeds, as trials of the same experiment: the random baseline and the calibration of
the report (raydnas.reduce.baseline).

Evaluation trials are the search trials' config keys (method, seed, point, Optuna values) plus
``kind: evaluate``, ``search_trial_id``, ``eval_seed``, ``protocol`` and the found ``genotype``;
their results (``test_acc``, ...) land in their own trial directories, where ``raydnas reduce``
finds and joins them. Search trials never see them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..config.sections import DataConfig, build_section
from ..data.datasets import IMAGE_SIDE
from ..errors import ConfigError, require_int
from ..evaluation import EvalJob, default_protocol, resolve_protocol
from ..evaluation.jobs import baseline_cells
from ..evaluation.protocol import KEYS as PROTOCOL_KEYS
from ..evaluation.protocol import VARIANT_SEP
from ..evaluation.train import check_cutout
from ..model.cells import reference_cells
from ..model.data_mix import input_dict
from ..model.genotype import parse_genotype
from ..model.spaces import load_space

EVALUATE_KEYS = ("protocol", "seeds", "set", "calibrate", "variants")


@dataclass
class EvalStage:
    """A validated ``evaluate:`` block: protocol, evaluation seeds and data overrides."""
    protocol: Any              # raydnas.evaluation.Protocol
    seeds: list[int]
    data: dict[str, Any] = field(default_factory=dict)  # data.KEY overrides
    raw: dict[str, Any] = field(default_factory=dict)
    calibrate: bool = False
    random: int = 0             # sweep.baseline.random: random cells to evaluate
    #: evaluate.variants: variant name -> its protocol (named ``<protocol>@<variant>``)
    variants: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        return {"protocol": self.protocol.to_dict(), "seeds": self.seeds, "data": self.data,
                "calibrate": self.calibrate, "random": self.random,
                **({"variants": {k: v.to_dict() for k, v in self.variants.items()}}
                   if self.variants else {})}

    def protocol_of(self, config: dict[str, Any]):
        """The protocol an evaluation trial (its config) trains with: its variant's, if any."""
        v = config.get("variant")
        return self.variants[v] if v else self.protocol

    def per_cell(self) -> int:
        """Evaluation trials per cell: each evaluation seed under the protocol and each variant."""
        return len(self.seeds) * (1 + len(self.variants))


def parse_stage(block: Any, cfg, f: str) -> EvalStage | None:
    """Validate ``evaluate:`` against the study's base config (its space and dataset)."""
    if block is None:
        return None
    if not isinstance(block, dict):
        raise ConfigError(f, "evaluate", block, "a mapping (protocol, seeds, set)")
    for k, v in block.items():
        if k not in EVALUATE_KEYS:
            raise ConfigError(f, f"evaluate.{k}", v,
                              f"unknown key; allowed: {', '.join(EVALUATE_KEYS)}")
    space = load_space(cfg.space, where=f)
    over0 = block.get("set") or {}
    dataset = over0.get("data.dataset", cfg.data.dataset) if isinstance(over0, dict) \
        else cfg.data.dataset
    name = block.get("protocol", default_protocol(space.macro, dataset))
    over = block.get("set") or {}
    if not isinstance(over, dict):
        raise ConfigError(f, "evaluate.set", over, "a mapping of protocol keys (epochs: 12) "
                          "and data.KEY entries")
    proto_over = {k: v for k, v in over.items() if not str(k).startswith("data.")}
    data = {str(k).split(".", 1)[1]: v for k, v in over.items() if str(k).startswith("data.")}
    where = f"{f}: evaluate"
    p = resolve_protocol(name, proto_over, where)
    if p.macro != space.macro:
        raise ConfigError(f, "evaluate.protocol", name,
                          f"a protocol for the {space.macro} macro of space {space.name!r} "
                          f"({space.macro}, {space.macro}_short"
                          + (", darts_cpu)" if space.macro == "darts" else ")"))
    side = data.get("image_size") or cfg.data.image_size or IMAGE_SIDE.get(
        data.get("dataset", cfg.data.dataset))
    if side:
        check_cutout(p, side, data.get("dataset", cfg.data.dataset), where)
    seeds = block.get("seeds", 1)
    if isinstance(seeds, list):
        ok = seeds and len(set(seeds)) == len(seeds) and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        seed_list = list(seeds) if ok else None
    else:
        ok = isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1
        seed_list = list(range(seeds)) if ok else None
    if not seed_list:
        raise ConfigError(f, "evaluate.seeds", seeds,
                          "an integer >= 1 or a list of distinct seeds >= 0")
    cal = block.get("calibrate", False)
    if not isinstance(cal, bool):
        raise ConfigError(f, "evaluate.calibrate", cal, "true or false")
    if cal:
        reference_cells(space, where=f, key="evaluate.calibrate")
    variants = _variants(block.get("variants"), name, proto_over, f, where)
    for v in variants.values():
        if side:
            check_cutout(v, side, data.get("dataset", cfg.data.dataset), where)
    return EvalStage(p, seed_list, data, dict(block), calibrate=cal, variants=variants)


def _variants(block: Any, name: str, over: dict[str, Any], f: str, where: str
              ) -> dict[str, Any]:
    """``evaluate.variants``: name -> the protocol with the variant's keys over it."""
    if block is None:
        return {}
    if not isinstance(block, list) or not block:
        raise ConfigError(f, "evaluate.variants", block,
                          "a non-empty list of {name: ..., set: {protocol key: value}}")
    out: dict[str, Any] = {}
    for i, v in enumerate(block):
        key = f"evaluate.variants[{i}]"
        if not isinstance(v, dict) or set(v) != {"name", "set"} or not isinstance(
                v["name"], str) or not isinstance(v["set"], dict) or not v["set"]:
            raise ConfigError(f, key, v, "a mapping {name: ..., set: {protocol key: value}}")
        vn = v["name"]
        if not vn.replace("_", "").replace("-", "").isalnum() or vn in out:
            raise ConfigError(f, f"{key}.name", vn,
                              "a distinct name of letters, digits, _ and -")
        for k in v["set"]:
            if k not in PROTOCOL_KEYS:
                raise ConfigError(f, f"{key}.set.{k}", v["set"][k],
                                  f"a protocol key: {', '.join(PROTOCOL_KEYS)}")
        p = resolve_protocol(name, {**over, **v["set"]}, f"{where}.variants[{i}]")
        out[vn] = dataclasses.replace(p, name=f"{p.name}{VARIANT_SEP}{vn}")
    return out


def parse_baseline(block: Any, stage: EvalStage | None, f: str) -> int:
    """``sweep.baseline: {random: N}``: the number of random cells (0 without the block)."""
    if block is None:
        return 0
    if not isinstance(block, dict) or set(block) != {"random"}:
        raise ConfigError(f, "sweep.baseline", block, "a mapping {random: N}")
    n = require_int(f, "sweep.baseline.random", block["random"], 1,
                    "an integer >= 1 (random cells)")
    if stage is None:
        raise ConfigError(f, "sweep.baseline", block,
                          "an evaluate: block too: the random cells are trained with its "
                          "protocol, like the found cells")
    return n


def baseline_configs(stage: EvalStage, space, extra: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluation trials of the random and reference cells (``extra``: keys every trial
    config has, e.g. the Optuna keys as None)."""
    return [dict(extra, kind="evaluate", point=None, eval_seed=s, protocol=p.name,
                 **({"variant": v} if v else {}), **c)
            for c in baseline_cells(space, stage.random, stage.calibrate)
            for v, p in _protocols(stage) for s in stage.seeds]


def _protocols(stage: EvalStage) -> list[tuple[str | None, Any]]:
    """(variant or None, protocol): the protocol first, then each variant."""
    return [(None, stage.protocol)] + list(stage.variants.items())


def eval_configs(stage: EvalStage, search_config: dict[str, Any], search_trial_id: str,
                 result: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluation trials of one finished search trial (none without a genotype)."""
    g = result.get("genotype")
    if not isinstance(g, str) or not g:
        return []
    base = {k: v for k, v in search_config.items()}
    if isinstance(result.get("data_choice"), str):  # the data axis: retrained on that input
        base["data_choice"] = result["data_choice"]
    return [dict(base, kind="evaluate", search_trial_id=search_trial_id, eval_seed=s,
                 protocol=p.name, genotype=g, **({"variant": v} if v else {}))
            for v, p in _protocols(stage) for s in stage.seeds]


def job_of(config: dict[str, Any], study) -> Any:
    """The :class:`~raydnas.evaluation.EvalJob` of an evaluation trial's config."""
    role = config.get("role")
    if role:  # a random or reference cell: the study's base data and space
        cfg = study.base_config()
    else:
        method = next(m for m in study.methods if m.name == config["method"])
        params = {k: config[k] for k in method.params if config.get(k) is not None}
        cfg = study.trial_config(method, config["seed"], params)
    space = load_space(cfg.space)
    g = parse_genotype(config["genotype"], nodes=space.nodes)
    data = cfg.data
    if study.evaluate.data:
        data = build_section(DataConfig, {**dataclasses.asdict(data), **study.evaluate.data},
                              "data", study.source)
    meta = {"search_trial_id": config["search_trial_id"], "method": config["method"],
            "search_seed": config["seed"], "point": config.get("point")}
    if config.get("data_choice") and cfg.data_search is not None:
        chosen = [c for c in cfg.data_search.configs if c.name == config["data_choice"]]
        if not chosen:
            raise ConfigError(study.source, "data_choice", config["data_choice"],
                              "a configuration of the method's data_search: "
                              + ", ".join(c.name for c in cfg.data_search.configs))
        meta["data_input"] = input_dict(dataclasses.asdict(chosen[0]), study.source)
    if role:
        meta.update({k: config[k] for k in ("role", "reference", "reference_what", "cell_dead")
                     if config.get(k) is not None})
    return EvalJob(g, space, data, study.evaluate.protocol_of(config), int(config["eval_seed"]),
                   meta)
