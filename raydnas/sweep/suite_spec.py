"""``sweep.benchmarks:``: one study over several benchmarks (a suite), as one Ray Tune experiment.

Each benchmark is the study's base config with its own ``set`` values (a space, a dataset, a
supernet shape, epochs…) and, merged over the study's ``evaluate:`` block, its own evaluation
protocol. Every method × seed runs on every benchmark; each benchmark gets its own random cells,
reference cells, race and truth table; ``raydnas reduce`` then ranks the methods across the
benchmarks (:mod:`raydnas.reduce.suite_reduce`)::

    sweep:
      methods: [...]
      seeds: 2
      benchmarks:
        - {name: tiny}                                   # the base config as it is
        - {name: tiny201, set: {space: tiny201}, evaluate: {protocol: nb201_short}}
        - {name: noskip, set: {space: search_spaces/tiny_noskip.yaml}}
      skip_invalid: false   # true: a method a benchmark rejects is skipped there (and ranked
                            # last there), instead of refusing the study

Every benchmark × method is validated before Ray starts: a pair that cannot run is one
:class:`~raydnas.errors.ConfigError` line naming the benchmark, the method and why.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from ..config.experiment import ExperimentConfig, from_dict
from ..config.overrides import merge
from ..errors import ConfigError
from .methods import NAME_RE

BENCHMARK_KEYS = ("name", "set", "evaluate")
#: sweep keys a benchmark study does not inherit (the suite's own)
SUITE_ONLY = ("benchmarks", "skip_invalid")


def benchmark_configs(cfg: ExperimentConfig, f: str) -> list[tuple[str, ExperimentConfig]]:
    """(name, validated experiment config) of every benchmark of ``cfg``'s ``sweep.benchmarks``:
    the base with the benchmark's ``set`` values, its ``evaluate`` merged over the study's."""
    block = (cfg.sweep or {}).get("benchmarks")
    if not isinstance(block, list) or len(block) < 2:
        raise ConfigError(f, "sweep.benchmarks", block,
                          "a list of at least 2 benchmarks ({name: ..., set: {...}, "
                          "evaluate: {...}}); one benchmark is an ordinary study")
    if cfg.optuna is not None:
        raise ConfigError(f, "optuna", "...", "no optuna: block with sweep.benchmarks (a suite "
                          "compares methods at fixed settings; tune each benchmark as its own "
                          "study)")
    if (cfg.sweep or {}).get("scheduler") is not None:
        raise ConfigError(f, "sweep.scheduler", cfg.sweep["scheduler"],
                          "no trial scheduler with sweep.benchmarks (its rungs would compare "
                          "searches of different benchmarks and epochs)")
    out: list[tuple[str, ExperimentConfig]] = []
    for i, entry in enumerate(block):
        key = f"sweep.benchmarks[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f, key, entry, "a mapping with a name (and set, evaluate)")
        name = entry["name"]
        if not NAME_RE.match(name) or name.startswith("."):
            raise ConfigError(f, f"{key}.name", name,
                              "a name of letters, digits, _ . - (not starting with .)")
        if name in (n for n, _ in out):
            raise ConfigError(f, f"{key}.name", name, "each benchmark name once")
        for k, v in entry.items():
            if k not in BENCHMARK_KEYS:
                raise ConfigError(f, f"{key}.{k}", v,
                                  f"unknown key; allowed: {', '.join(BENCHMARK_KEYS)}")
        sets = entry.get("set") or {}
        if not isinstance(sets, dict) or any(str(k).split(".")[0] in ("sweep", "optuna",
                                                                       "evaluate") for k in sets):
            raise ConfigError(f, f"{key}.set", sets, "a mapping of dotted config keys (not "
                              "sweep/optuna/evaluate: the benchmark's evaluate: is its own key)")
        ev = entry.get("evaluate")
        if ev is not None and (not isinstance(ev, dict) or cfg.evaluate is None):
            raise ConfigError(f, f"{key}.evaluate", ev, "a mapping merged over the study's "
                              "evaluate: block (which must exist)")
        raw = {k: copy.deepcopy(v) for k, v in cfg.raw.items() if k != "sweep"}
        raw["sweep"] = {k: copy.deepcopy(v) for k, v in cfg.sweep.items() if k not in SUITE_ONLY}
        raw = merge(raw, sets, source=f"{f}: {key}.set")
        if ev:
            raw["evaluate"] = {**raw["evaluate"], **copy.deepcopy(ev)}
        try:
            sub = from_dict(raw, f)
        except ConfigError as e:
            raise _in_benchmark(f, key, name, e) from None
        out.append((name, sub))
    return out


def _in_benchmark(f: str, key: str, name: str, e: ConfigError, method: str | None = None
                  ) -> ConfigError:
    what = f"method {method} cannot run on benchmark {name}" if method else \
        f"benchmark {name} is not a valid study"
    return ConfigError(f, key, name, f"{what}: {e.key} = {e.value!r}: {e.allowed}"
                       + ("; or set sweep.skip_invalid: true to skip that pair" if method
                          else ""))


def method_guard(f: str, index: int, name: str, skip: bool,
                 skipped: dict[str, str]) -> Callable[[Any, ConfigError], None]:
    """What parse_study does when a method's config fails on this benchmark: raise one line
    naming benchmark and method, or (``sweep.skip_invalid``) record why and drop the pair."""
    key = f"sweep.benchmarks[{index}]"

    def on_error(method, e: ConfigError) -> None:
        if not skip:
            raise _in_benchmark(f, key, name, e, method.name) from None
        skipped[method.name] = f"{e.key} = {e.value!r}: {e.allowed}"
    return on_error


def parse_suite(study, cfg: ExperimentConfig, sweep: dict, parse: Callable):
    """Fill a suite's study (:class:`~raydnas.sweep.study.Study`) with every benchmark's study,
    each parsed by ``parse`` (``parse_study``) as an ordinary study."""
    f = study.source
    skip = sweep.get("skip_invalid", False)
    if not isinstance(skip, bool):
        raise ConfigError(f, "sweep.skip_invalid", skip, "true or false")
    for i, (bname, sub_cfg) in enumerate(benchmark_configs(cfg, f)):
        skipped: dict[str, str] = {}
        try:
            sub = parse(sub_cfg, storage=study.storage, name=study.name,
                        on_method_error=method_guard(f, i, bname, skip, skipped))
        except ConfigError as e:  # evaluate:, race:, baseline: as this benchmark sees them
            if e.key.startswith("sweep.benchmarks"):
                raise
            raise _in_benchmark(f, f"sweep.benchmarks[{i}]", bname, e) from None
        if not sub.methods:
            raise ConfigError(f, f"sweep.benchmarks[{i}]", bname,
                              "a benchmark at least one method can run on")
        study.benchmarks[bname], study.skipped[bname] = sub, skipped
    first = next(iter(study.benchmarks.values()))
    study.seeds, study.race, study.scheduler = first.seeds, first.race, first.scheduler
    study.evaluate = first.evaluate
    return study
