"""Ray Tune's ``Searcher.save``/``restore`` for a searcher whose state is plain data."""

from __future__ import annotations

import pickle
from typing import Any


class PickledState:
    """``save``/``restore`` through the subclass's ``get_state``/``set_state`` (a pickle of
    plain data: Tune keeps it with the experiment's checkpoint)."""

    def get_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))
