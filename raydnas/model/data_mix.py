"""The data axis of a search (data-aware DNAS: Shi, Njor, Martínez-Nuevo, Shepstone, Fafoutis,
IEEE MLSP 2025, arXiv 2507.15545): K input configurations searched jointly with the cell.

Each configuration is a transform of the loaded batch (center ``crop`` to a side, then
``resize`` to a side, bilinear with antialiasing; ``grayscale`` averages the channels with the
ITU-R 601 weights and keeps their number; ``normalize: {mean, std}`` then maps each channel c
to (x_c − mean_c)/std_c, one number for every channel or one per channel, on top of the
dataset's own normalization). The supernet computes all K inputs, aligns them to
one shape and mixes them by the method's own activation of an architecture parameter γ
(``[1, K]``, stepped with α by the method's gradient):

* ``align: conv`` (the paper's better variant): a learned "valid" convolution per input, kernel
  s_k − s_min + 1, maps each input of side s_k to the smallest side s_min;
* ``align: pad``: each input zero-padded (centered) to the largest side.

x = Σ_k w_k · align_k(t_k(x)), w = activation.weights(γ). The freeze rule: once the largest of
a(γ) is at least ``freeze_ratio`` times the second (the paper's 2), γ is never stepped again.
The chosen configuration is argmax a(γ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

DATA_SEARCH_KEYS = ("configs", "align", "freeze_ratio")
CONFIG_KEYS = ("name", "crop", "resize", "grayscale", "normalize")
ALIGNS = ("conv", "pad")
_GRAY = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class InputConfig:
    """One input configuration: a center crop, a resize, grayscale and/or a normalization, in
    that order (``normalize``: ``{"mean": [...], "std": [...]}``)."""
    name: str
    crop: int | None = None
    resize: int | None = None
    grayscale: bool = False
    normalize: dict | None = None

    def side(self, side_in: int) -> int:
        """The side of the transformed image."""
        return self.resize or self.crop or side_in

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The transformed batch ``[N, C, H, W]`` (square images)."""
        if self.crop:
            top = (x.shape[-1] - self.crop) // 2
            x = x[..., top:top + self.crop, top:top + self.crop]
        if self.resize and self.resize != x.shape[-1]:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear",
                              align_corners=False, antialias=True)
        if self.grayscale and x.shape[1] == 3:
            g = sum(w * x[:, i:i + 1] for i, w in enumerate(_GRAY))
            x = g.expand(-1, 3, -1, -1)
        if self.normalize:
            m, sd = (torch.as_tensor(self.normalize[k], dtype=x.dtype, device=x.device)
                     .reshape(1, -1, 1, 1) for k in ("mean", "std"))
            x = (x - m) / sd
        return x


def input_dict(c: dict[str, Any], f: str = "data_search") -> dict[str, Any]:
    """A configuration's entry (``data_search.configs[i]`` or ``final.json``'s
    ``data_config``) as :class:`InputConfig`'s fields: name, crop, resize, grayscale, and
    normalize (checked, as lists) only when set, so a job without it describes itself as
    before it existed (its checkpoints still resume)."""
    out = {k: c.get(k) for k in ("name", "crop", "resize")}
    out["grayscale"] = bool(c.get("grayscale", False))
    if c.get("normalize") is not None:
        out["normalize"] = _check_normalize(c["normalize"], f, f"{c.get('name')}.normalize")
    return out


def _values(v: Any) -> list[float] | None:
    """A number or a non-empty list of finite numbers, as a list; None otherwise."""
    items = v if isinstance(v, list) else [v]
    ok = items and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                       and math.isfinite(x) for x in items)
    return [float(x) for x in items] if ok else None


def _check_normalize(v: Any, f: str, key: str, channels: int | None = None) -> dict:
    """``{mean, std}`` as lists (one number, or one per channel; ``channels``, if known, is the
    images' count), or one ConfigError line."""
    allowed = ("{mean, std}: a finite number or a list per channel each, std > 0, lists of "
               "one length")
    if not isinstance(v, dict) or set(v) != {"mean", "std"}:
        raise ConfigError(f, key, v, allowed)
    mean, std = _values(v["mean"]), _values(v["std"])
    if mean is None or std is None or min(std) <= 0 or (
            len(mean) > 1 and len(std) > 1 and len(mean) != len(std)):
        raise ConfigError(f, key, v, allowed)
    if channels is not None and max(len(mean), len(std)) not in (1, channels):
        raise ConfigError(f, key, v, f"one number or one per channel ({channels})")
    return {"mean": mean, "std": std}


@dataclass
class DataSearch:
    """A validated ``data_search:`` block (``source``: the config file, for errors found when
    the images are seen)."""
    configs: list[InputConfig]
    align: str = "conv"
    freeze_ratio: float = 2.0
    #: the config file it was read from (an attribute, not a field: never written back)
    source = "data_search"


def parse_data_search(block: Any, f: str, side: int | None,
                      channels: int | None = None) -> DataSearch | None:
    """``data_search:`` → :class:`DataSearch` (``side``, ``channels``: the dataset's image
    side and channels, if known now); one ConfigError line for the first bad key."""
    if block is None:
        return None
    if not isinstance(block, dict):
        raise ConfigError(f, "data_search", block, "a mapping (configs, align, freeze_ratio)")
    for k, v in block.items():
        if k not in DATA_SEARCH_KEYS:
            raise ConfigError(f, f"data_search.{k}", v,
                              f"unknown key; allowed: {', '.join(DATA_SEARCH_KEYS)}")
    items = block.get("configs")
    if not isinstance(items, list) or len(items) < 2:
        raise ConfigError(f, "data_search.configs", items,
                          "a list of at least 2 input configurations ({name, crop, resize, "
                          "grayscale, normalize}): one configuration leaves nothing to search")
    configs: list[InputConfig] = []
    for i, c in enumerate(items):
        key = f"data_search.configs[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
            raise ConfigError(f, key, c, "a mapping with a name (and crop, resize, grayscale, "
                              "normalize)")
        for k, v in c.items():
            if k not in CONFIG_KEYS:
                raise ConfigError(f, f"{key}.{k}", v,
                                  f"unknown key; allowed: {', '.join(CONFIG_KEYS)}")
            if k in ("crop", "resize") and v is not None and (
                    isinstance(v, bool) or not isinstance(v, int) or v < 2):
                raise ConfigError(f, f"{key}.{k}", v, "an integer side >= 2 (pixels)")
            if k == "grayscale" and not isinstance(v, bool):
                raise ConfigError(f, f"{key}.{k}", v, "true or false")
            if k == "normalize" and v is not None:
                _check_normalize(v, f, f"{key}.{k}", channels)
        if c["name"] in (x.name for x in configs):
            raise ConfigError(f, f"{key}.name", c["name"], "each configuration name once")
        if side is not None and c.get("crop") and c["crop"] > side:
            raise ConfigError(f, f"{key}.crop", c["crop"],
                              f"at most the images' side ({side})")
        configs.append(InputConfig(**input_dict(c, f)))
    align = block.get("align", "conv")
    if align not in ALIGNS:
        raise ConfigError(f, "data_search.align", align, " or ".join(ALIGNS))
    ratio = block.get("freeze_ratio", 2.0)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 1:
        raise ConfigError(f, "data_search.freeze_ratio", ratio,
                          "a number > 1 (the largest weight over the second, the paper's 2)")
    spec = DataSearch(configs, align, float(ratio))
    spec.source = f
    return spec


class DataMixer(nn.Module):
    """The K inputs, aligned and mixed by a(γ) (module docstring)."""

    def __init__(self, spec: DataSearch, in_channels: int, side_in: int, activation: Any,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.configs, self.align, self.ratio = spec.configs, spec.align, spec.freeze_ratio
        for c in self.configs:  # again against the images themselves (an image folder's)
            key = f"data_search.configs.{c.name}"
            if c.crop and c.crop > side_in:
                raise ConfigError(spec.source, f"{key}.crop", c.crop,
                                  f"at most the images' side ({side_in})")
            if c.normalize:
                _check_normalize(c.normalize, spec.source, f"{key}.normalize", in_channels)
        sides = [c.side(side_in) for c in self.configs]
        self.side = min(sides) if self.align == "conv" else max(sides)
        self.sides = sides
        self.gamma = nn.Parameter(activation.init_alpha((1, len(self.configs)), generator))
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, in_channels, s - self.side + 1, bias=False)
            for s in sides) if self.align == "conv" else nn.ModuleList()
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))

    def inputs(self, x: torch.Tensor, weights: torch.Tensor | None = None
               ) -> list[torch.Tensor | None]:
        """Each configuration's input, aligned to :attr:`side` (None where ``weights``, if
        given, is exactly 0: not computed)."""
        out: list[torch.Tensor | None] = []
        for k, c in enumerate(self.configs):
            if weights is not None and float(weights[k]) == 0.0:
                out.append(None)
                continue
            t = c.apply(x)
            if self.align == "conv":
                t = self.convs[k](t)
            else:
                p = self.side - t.shape[-1]
                t = F.pad(t, (p // 2, p - p // 2, p // 2, p - p // 2))
            out.append(t)
        return out

    def forward(self, x: torch.Tensor, activation: Any, training: bool,
                data: torch.Tensor | int | None = None) -> torch.Tensor:
        """The mixed input: by a(γ)'s weights of this forward (``data`` None), by the given
        ``[K]`` weights (configurations weighted exactly 0 are not computed), or, ``data`` an
        index k, configuration k's input alone and unaligned: what a network retrained on it
        sees (:func:`with_input`), at its own side."""
        if isinstance(data, int):
            return self.configs[data].apply(x)
        w = activation.weights(self.gamma, training)[0] if data is None else data.to(x)
        parts = [(k, t) for k, t in enumerate(self.inputs(x, None if data is None else w))]
        return sum(w[k] * t for k, t in parts if t is not None)

    def probs(self, activation: Any) -> torch.Tensor:
        """a(γ) over the configurations."""
        return activation.probs(self.gamma)[0]

    def choice_index(self, activation: Any) -> int:
        """The chosen configuration's index: argmax a(γ)."""
        return int(self.probs(activation).argmax())

    def choice(self, activation: Any) -> InputConfig:
        """The chosen configuration: argmax a(γ)."""
        return self.configs[self.choice_index(activation)]

    def one_hot(self, activation: Any) -> torch.Tensor:
        """``[K]`` weights of the chosen configuration alone: the discretized data axis."""
        w = torch.zeros(len(self.configs))
        w[self.choice_index(activation)] = 1.0
        return w

    @torch.no_grad()
    def check_freeze(self, activation: Any) -> bool:
        """Freeze γ once the largest weight is at least ``ratio`` times the second."""
        if not self.frozen:
            top = torch.topk(self.probs(activation), 2).values
            if top[0] >= self.ratio * top[1]:
                self.frozen.fill_(True)
        return bool(self.frozen)


class InputTransform(nn.Module):
    """One configuration's transform as the first layer of a network: a found cell retrained
    on the input its search chose (``raydnas evaluate``)."""

    def __init__(self, config: InputConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.config.apply(x)


def with_input(net: nn.Module, data_input: dict[str, Any] | None) -> nn.Module:
    """``net`` with the chosen configuration's transform before its stem (none: as it is)."""
    if data_input:
        net.stem = nn.Sequential(InputTransform(InputConfig(**data_input)), net.stem)
    return net
