"""The evaluation stage of a study: an ``evaluate:`` block queues, for every search trial that
finishes, the training of its found cell from scratch, in the same Ray Tune experiment::

    evaluate:
      protocol: nb201_short     # darts, nb201, darts_short, nb201_short, darts_cpu (default:
                                # the short one of the space's macro; darts_cpu on digits)
      seeds: 1                  # evaluation seeds per found cell (or a list)
      set: {epochs: 12}         # protocol keys and data.KEY overrides
      calibrate: false          # also train the space's reference cells (raydnas.model.cells)

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
from ..errors import ConfigError, require_int
from ..evaluation import EvalJob, default_protocol, resolve_protocol
from ..evaluation.jobs import baseline_cells
from ..evaluation.train import IMAGE_SIDE, check_cutout
from ..model.cells import reference_cells
from ..model.genotype import parse_genotype
from ..model.spaces import load_space

EVALUATE_KEYS = ("protocol", "seeds", "set", "calibrate")


@dataclass
class EvalStage:
    """A validated ``evaluate:`` block: protocol, evaluation seeds and data overrides."""
    protocol: Any              # raydnas.evaluation.Protocol
    seeds: list[int]
    data: dict[str, Any] = field(default_factory=dict)  # data.KEY overrides
    raw: dict[str, Any] = field(default_factory=dict)
    calibrate: bool = False
    random: int = 0             # sweep.baseline.random: random cells to evaluate

    def fingerprint(self) -> dict[str, Any]:
        return {"protocol": self.protocol.to_dict(), "seeds": self.seeds, "data": self.data,
                "calibrate": self.calibrate, "random": self.random}


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
    return EvalStage(p, seed_list, data, dict(block), calibrate=cal)


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
    return [dict(extra, kind="evaluate", point=None, eval_seed=s,
                 protocol=stage.protocol.name, **c)
            for c in baseline_cells(space, stage.random, stage.calibrate) for s in stage.seeds]


def eval_configs(stage: EvalStage, search_config: dict[str, Any], search_trial_id: str,
                 result: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluation trials of one finished search trial (none without a genotype)."""
    g = result.get("genotype")
    if not isinstance(g, str) or not g:
        return []
    base = {k: v for k, v in search_config.items()}
    return [dict(base, kind="evaluate", search_trial_id=search_trial_id, eval_seed=s,
                 protocol=stage.protocol.name, genotype=g) for s in stage.seeds]


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
    if role:
        meta.update({k: config[k] for k in ("role", "reference", "reference_what", "cell_dead")
                     if config.get(k) is not None})
    return EvalJob(g, space, data, study.evaluate.protocol, int(config["eval_seed"]), meta)
