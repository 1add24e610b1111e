"""The searcher of a suite (``sweep.benchmarks``): one :class:`StudySearcher` per benchmark,
taking turns, behind one Ray Tune searcher.

Every trial config gets its benchmark's name under ``benchmark``; the trainable looks its
benchmark's study up by it (``Study.sub``). Each benchmark keeps its own queue, evaluation
stage, random and reference cells and race, so a race decides within its benchmark. Turns go
round the benchmarks, so the first seeds of every benchmark run before any benchmark's later
ones and an interrupted suite has covered all of them.
"""

from __future__ import annotations

import copy
from typing import Any

from ray.tune.search import Searcher

from .persist import PickledState
from .searcher import StudySearcher
from .study import Study


class SuiteSearcher(PickledState, Searcher):
    """Hands out the trials of every benchmark's :class:`StudySearcher`, round robin."""

    def __init__(self, study: Study) -> None:
        super().__init__(metric=study.metric, mode=study.mode)
        self.study = study
        self._subs = {name: StudySearcher(sub) for name, sub in study.benchmarks.items()}
        self._names = list(self._subs)
        self._rr = 0
        self._where: dict[str, str] = {}  # running trial id -> benchmark

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict | str | None:
        finished = 0
        for i in range(len(self._names)):
            name = self._names[(self._rr + i) % len(self._names)]
            got = self._subs[name].suggest(trial_id)
            if got == Searcher.FINISHED:
                finished += 1
            elif got is not None:
                self._rr = (self._rr + i + 1) % len(self._names)
                self._where[trial_id] = name
                return dict(copy.deepcopy(got), benchmark=name)
        return Searcher.FINISHED if finished == len(self._names) else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        name = self._where.pop(trial_id, None)
        if name is not None:
            self._subs[name].on_trial_complete(trial_id, result, error)

    def get_state(self) -> dict[str, Any]:
        return {"subs": {n: s.get_state() for n, s in self._subs.items()}, "rr": self._rr,
                "where": self._where}

    def set_state(self, state: dict[str, Any]) -> None:
        for n, s in state["subs"].items():
            self._subs[n].set_state(s)
        self._rr = state["rr"]
        self._where = state["where"]


def make_searcher(study: Study) -> Searcher:
    """The searcher of a study: one :class:`StudySearcher`, or a suite's."""
    return SuiteSearcher(study) if study.benchmarks else StudySearcher(study)
