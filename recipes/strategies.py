"""Parameter-group strategies: how a parameter's layer and component turn into an ``lr_scale``.

A strategy never sees a model, only the adapter's :class:`~recipes.adapter.ParamInfo` for each
parameter and the :class:`~recipes.adapter.ModelMap` of the whole architecture. The engine
(``recipes.param_groups``) handles coverage, weight decay, LoRA+ and merging.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from recipes.adapter import ModelMap, ParamInfo, is_norm_name
from recipes.registry import STRATEGIES

DEPTH_STRATEGIES = ("linear", "cosine", "inverted_u", "flat")
LORAPLUS_MODES = ("lora_b", "peft")


def check_lr(where: str, value: Any) -> float:
    """``value`` as a float, or a ``TypeError`` / ``ValueError`` naming ``where``: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{where}: expected a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{where}: learning rates and weight decays must be >= 0, got {value}")
    return float(value)


def _check_unit(where: str, value: float) -> float:
    value = check_lr(where, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{where} must lie in [0, 1], got {value}")
    return value


class Strategy:
    """Options every strategy shares.

    Args:
        lr: base learning rate; a group's ``lr`` is ``lr * lr_scale``.
        weight_decay: for every parameter not caught by a no-decay rule.
        no_decay: extra regexes (searched in the canonical name) that get no weight decay.
        on_unmatched: ``"error"`` (default) or ``"default"``: a trainable parameter no adapter rule
            classifies then gets ``lr_scale`` 1.0 (``default_lr`` for ``component_depth``), with a warning.
        loraplus_ratio: LoRA+ (Hayou et al. 2024): LoRA B matrices get ``lr x ratio``; composes
            with every other factor.
        loraplus_mode: which tensors LoRA+ speeds up, and whose weight-decay rule then applies.
            ``"lora_b"`` (default): only LoRA B tensors get the ratio; weight decay follows this
            package's rules. ``"peft"``: exactly ``peft.optimizers.create_loraplus_optimizer``:
            LoRA B *and every other 1-D trainable tensor* (biases with ``bias="lora_only"``, DoRA
            magnitudes, norms of ``modules_to_save``) get the ratio; LoRA on embeddings gets
            ``loraplus_lr_embedding``; ``weight_decay`` plays peft's ``loraplus_weight_decay``, given to
            every tensor except the ratio group's biases and ``nn.LayerNorm`` parameters.
        loraplus_lr_embedding: with ``loraplus_mode="peft"``: the LR of LoRA tensors on embedding
            layers (peft's default 1e-6), times the strategy's layer/component factor.
        lr_lora: base LR of LoRA tensors (``lora_A/B``, ...) instead of ``lr``: their scale is
            multiplied by ``lr_lora / base_lr``, so layer decay and LoRA+ still apply on top.
        lr_norm: the same for normalisation weights and biases (component ``norm``, or a 1-D
            tensor of a module named like ``norm*``, ``ln*``, ``bn*``); see :meth:`role_factor`.
        tower_depth: the depth mechanism (``component_depth``, ``layer_decay``) also acts inside each tower
            (a model trained beside this one: a denoiser's text encoders), by the tower's own layer ids. Off: a
            tower sits at layer 0, outside every stack, so its component's LR is the whole tower's.
    """

    tower_depth_applies: bool = False  # a depth mechanism that can act inside towers

    #: True when the strategy needs the model's depth (an adapter that knows its blocks)
    needs_depth: bool = False

    def __init__(
        self,
        lr: float,
        weight_decay: float = 0.0,
        no_decay: Sequence[str] = (),
        on_unmatched: str = "error",
        loraplus_ratio: float | None = None,
        lr_lora: float | None = None,
        lr_norm: float | None = None,
        loraplus_mode: str = "lora_b",
        loraplus_lr_embedding: float | None = None,
        prefix: str | None = None,
        tower_depth: bool = False,
    ) -> None:
        self.lr = check_lr("strategy.lr", lr)
        self.weight_decay = check_lr("strategy.weight_decay", weight_decay)
        if isinstance(no_decay, str):
            raise TypeError("strategy.no_decay: expected a list of regexes, got one string; wrap it in a list")
        self.no_decay = tuple(no_decay)
        for pattern in self.no_decay:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as e:
                raise ValueError(f"strategy.no_decay: {pattern!r} is not a valid regex ({e})") from None
        if on_unmatched not in ("error", "default"):
            raise ValueError(f"strategy.on_unmatched must be 'error' or 'default', got {on_unmatched!r}")
        self.on_unmatched = on_unmatched
        if loraplus_ratio is not None and check_lr("strategy.loraplus_ratio", loraplus_ratio) <= 0:
            raise ValueError("strategy.loraplus_ratio must be > 0 (1.0 turns LoRA+ off)")
        self.loraplus_ratio = loraplus_ratio
        self.lr_lora = None if lr_lora is None else check_lr("strategy.lr_lora", lr_lora)
        self.lr_norm = None if lr_norm is None else check_lr("strategy.lr_norm", lr_norm)
        if loraplus_mode not in LORAPLUS_MODES:
            raise ValueError(f"strategy.loraplus_mode must be one of {LORAPLUS_MODES}, got {loraplus_mode!r}")
        if loraplus_mode == "peft":
            if not loraplus_ratio:
                raise ValueError("strategy.loraplus_mode='peft' needs loraplus_ratio (peft's loraplus_lr_ratio)")
            if self.no_decay:
                raise ValueError(
                    "strategy.no_decay: loraplus_mode='peft' uses peft's weight-decay rule (biases and LayerNorm "
                    "parameters of the LoRA B group), so extra no_decay patterns would be ignored; drop one"
                )
            loraplus_lr_embedding = 1e-6 if loraplus_lr_embedding is None else loraplus_lr_embedding
            self.loraplus_lr_embedding = check_lr("strategy.loraplus_lr_embedding", loraplus_lr_embedding)
        elif loraplus_lr_embedding is not None:
            raise ValueError("strategy.loraplus_lr_embedding is read only with loraplus_mode='peft'")
        else:
            self.loraplus_lr_embedding = None
        self.loraplus_mode = loraplus_mode
        if prefix is not None and (not isinstance(prefix, str) or not prefix.strip(".")):
            raise ValueError(f"strategy.prefix: expected a submodule path such as 'backbone.', got {prefix!r}")
        self.prefix = None if prefix is None else prefix.strip(".") + "."
        if not isinstance(tower_depth, bool):
            raise TypeError(f"strategy.tower_depth: expected True or False, got {tower_depth!r}")
        if tower_depth and not self.tower_depth_applies:
            raise ValueError(f"strategy.tower_depth=True: {type(self).__name__} has no depth mechanism to apply "
                             "inside towers; use component_depth or layer_decay, or drop tower_depth")  # fmt: skip
        self.tower_depth = tower_depth

    def placed(self, info: ParamInfo) -> ParamInfo:
        """What :meth:`lr_scale` sees of a parameter: one of a tower at the main model's layer 0, outside every
        stack (no depth factor), unless ``tower_depth`` keeps it at its depth inside the tower."""
        if info.tower is None or self.tower_depth:
            return info
        return dataclasses.replace(info, layer_id=0, stack=None, stack_index=None, block=None, tower=None)

    def check_towers(self, mmap: ModelMap) -> None:
        """``tower_depth`` on a model without towers would do nothing: an error."""
        if self.tower_depth and not mmap.towers:
            raise ValueError(f"strategy.tower_depth=True: the model ({mmap.adapter!r}) has no tower (a model trained "
                             "beside it, such as policy.text_encoder's encoders); drop tower_depth")  # fmt: skip

    def role_factor(self, name: str, info: ParamInfo | None, lora: str | None, ndim: int) -> float:
        """Multiplier for per-role LRs (``lr_lora`` / ``lr_norm``); 1.0 when neither is set.

        ``name`` is the canonical parameter name, ``lora`` its LoRA role (None for a base tensor).
        """
        if self.lr_lora is None and self.lr_norm is None:
            return 1.0
        if not self.base_lr:
            raise ValueError("strategy: lr_lora / lr_norm need a non-zero base LR to express them as an lr_scale")
        if lora:
            return 1.0 if self.lr_lora is None else self.lr_lora / self.base_lr
        norm = info.norm if info is not None else is_norm_name(name)  # the one rule (recipes.adapter.is_norm)
        if norm and self.lr_norm is not None:
            return self.lr_norm / self.base_lr
        return 1.0

    @property
    def base_lr(self) -> float:
        """The LR of a group whose ``lr_scale`` is 1.0 (what a schedule's ``value`` peaks at)."""
        return self.lr

    def prepare(self, mmap: ModelMap) -> None:
        """Validate options that depend on the model (list lengths, component names)."""

    def lr_scale(self, info: ParamInfo, mmap: ModelMap) -> float:
        raise NotImplementedError

    def default_scale(self) -> float:
        """``lr_scale`` of an unmatched parameter when ``on_unmatched='default'``."""
        return 1.0

    def weight_decay_for(self, info: ParamInfo | None, no_decay: bool) -> float:
        """Weight decay of one parameter; ``no_decay`` is the engine's verdict (1-D, bias, name rules).

        Override only to reproduce another library's rules (the ``rfdetr`` preset decays decoder
        biases and norms, as rfdetr does); ``info`` is None for an unmatched parameter.
        """
        return 0.0 if no_decay else self.weight_decay


def _warn_unused_components(where: str, keys: Mapping[str, Any], mmap: ModelMap) -> None:
    present = {i.component for i in mmap.params.values()}
    unused = sorted(set(keys) - present)
    if unused:
        warnings.warn(
            f"{where}: {unused} match no component of this model (adapter {mmap.adapter!r} has "
            f"{sorted(present)}); those entries have no effect",
            stacklevel=4,
        )


@STRATEGIES.register_module("flat")
class Flat(Strategy):
    """One LR for everything, still with the decay / no-decay split.

    >>> Flat(lr=1e-3, weight_decay=0.05).lr_scale(None, None)
    1.0
    """

    def lr_scale(self, info: ParamInfo, mmap: ModelMap) -> float:
        return 1.0


@STRATEGIES.register_module("layer_decay")
class LayerDecay(Strategy):
    """Exponential layer-wise LR decay (BEiT / MAE / timm): ``decay ** (N + 1 - layer_id)``.

    Args:
        decay: in (0, 1]; layer id N+1 (head) gets 1.0, the stem ``decay ** (N + 1)``.
        scales: explicit scale per layer id 0..N+1 instead of ``decay`` (N + 2 entries).
        min_scale: floor under every layer's scale (timm's ``min_scale``).
        component_scale: multipliers per component, e.g. ``{"decoder": 0.7}``.
        component_lr: absolute LR per component at scale 1, e.g. ``{"encoder": 1.5e-4}``
            (RF-DETR's ``lr_encoder``); layer decay still applies on top.

    >>> s = LayerDecay(lr=1.0, decay=0.5)
    >>> s.layer_scale(0, num_layers=2)
    0.125
    """

    needs_depth = True
    tower_depth_applies = True

    def __init__(
        self,
        lr: float,
        decay: float | None = None,
        scales: Sequence[float] | None = None,
        min_scale: float = 0.0,
        component_scale: Mapping[str, float] | None = None,
        component_lr: Mapping[str, float] | None = None,
        **common: Any,
    ) -> None:
        super().__init__(lr, **common)
        if (decay is None) == (scales is None):
            raise ValueError("layer_decay: give exactly one of `decay` (e.g. 0.75) or `scales` (one per layer id)")
        if decay is not None:
            decay = check_lr("layer_decay.decay", decay)
            if not 0.0 < decay <= 1.0:
                raise ValueError(f"layer_decay.decay must lie in (0, 1], got {decay}; 1.0 turns decay off")
        self.decay = decay
        self.scales = None if scales is None else [check_lr("layer_decay.scales[]", s) for s in scales]
        self.min_scale = _check_unit("layer_decay.min_scale", min_scale)
        self.component_scale = {k: check_lr(f"component_scale[{k!r}]", v) for k, v in (component_scale or {}).items()}
        self.component_lr = {k: check_lr(f"component_lr[{k!r}]", v) for k, v in (component_lr or {}).items()}
        if self.component_lr and self.lr == 0:
            raise ValueError("layer_decay: component_lr needs a non-zero base `lr` to express it as an lr_scale")
        if self.tower_depth and self.scales is not None:
            raise ValueError("layer_decay: `scales` are per layer id of the main model; tower_depth=True decays "
                             "inside each tower by `decay`: give `decay` instead")  # fmt: skip

    def prepare(self, mmap: ModelMap) -> None:
        if self.scales is not None and len(self.scales) != mmap.max_layer_id + 1:
            raise ValueError(
                f"layer_decay.scales has {len(self.scales)} entries but {mmap.adapter!r} has layer ids "
                f"0..{mmap.max_layer_id} ({mmap.max_layer_id + 1} entries: stem, {mmap.max_layer_id - 1} "
                "blocks, head); give one scale per layer id"
            )
        _warn_unused_components("layer_decay.component_scale", self.component_scale, mmap)
        _warn_unused_components("layer_decay.component_lr", self.component_lr, mmap)

    def layer_scale(self, layer_id: int, num_layers: int) -> float:
        if self.scales is not None:
            return self.scales[layer_id]
        return max(self.min_scale, self.decay ** (num_layers + 1 - layer_id))

    def lr_scale(self, info: ParamInfo, mmap: ModelMap) -> float:
        n = mmap.max_layer_id - 1 if info.tower is None else mmap.towers[info.tower]  # a tower: its own depth
        scale = self.layer_scale(info.layer_id, n)
        scale *= self.component_scale.get(info.component, 1.0)
        if info.component in self.component_lr:
            scale *= self.component_lr[info.component] / self.lr
        return scale


def depth_factor(strategy: str, idx: int, n: int, min_factor: float, peak: float = 0.5) -> float:
    """The per-component x depth recipe's depth factor for block ``idx`` of ``n``: 1.0 at the shallowest block.

    ``inverted_u`` (no formula in the recipe) is 1.0 at ``peak * (n - 1)`` and falls quadratically to
    ``min_factor`` at both ends, each side scaled to its own length.

    >>> round(depth_factor("linear", 5, 20, 0.3), 4)
    0.8158
    >>> depth_factor("inverted_u", 0, 21, 0.3), depth_factor("inverted_u", 10, 21, 0.3)
    (0.3, 1.0)
    """
    if strategy == "flat" or n <= 1:
        return 1.0
    x = idx / (n - 1)
    if strategy == "linear":
        return 1.0 - x * (1.0 - min_factor)
    if strategy == "cosine":
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * x))
    if strategy == "inverted_u":
        span = peak if x < peak else 1.0 - peak
        d = 0.0 if span == 0 else (x - peak) / span
        return 1.0 - (1.0 - min_factor) * d * d
    raise ValueError(f"depth_strategy must be one of {DEPTH_STRATEGIES}, got {strategy!r}")


@STRATEGIES.register_module("component_depth")
class ComponentDepth(Strategy):
    """The per-component x depth grid: ``lr = component_lr[component] * factor(idx, N)``.

    Accepts the recipe's ``per_layer_lr`` JSON block verbatim as keyword arguments. Parameters whose
    component has no entry in ``component_lr`` get ``default_lr``, which is also the base LR
    (``lr_scale`` 1.0). With ``enabled=False`` every parameter gets the flat ``lr``.

    ``lr`` is read only with ``enabled=False``: with ``enabled=True`` every LR comes from
    ``component_lr`` and ``default_lr``, so giving ``lr`` too is an error (it would be ignored).

    Args:
        depth_scope: ``"per_stack"`` (depth restarts at each block stack, as in the recipe's log) or
            ``"global"`` (one index over all stacks in execution order). With ``tower_depth`` a tower's
            blocks get the factor over the tower's own blocks, whichever the scope.
        log_grad_norms: read by the training engine (per-group gradient norms every step).
    """

    tower_depth_applies = True

    def __init__(
        self,
        lr: float | None = None,
        enabled: bool = True,
        component_lr: Mapping[str, float] | None = None,
        depth_strategy: str = "linear",
        min_depth_factor: float = 0.3,
        peak_position: float = 0.5,
        default_lr: float = 3e-4,
        depth_scope: str = "per_stack",
        log_grad_norms: bool = False,
        **common: Any,
    ) -> None:
        self.enabled = bool(enabled)
        if self.enabled and lr is not None:
            raise ValueError(
                f"component_depth: `lr` ({lr}) is not read with enabled=True: component_lr sets each component's "
                f"LR and default_lr ({default_lr}) every other one; drop `lr`, or set enabled=False for one flat LR"
            )
        self.default_lr = check_lr("component_depth.default_lr", default_lr)
        super().__init__(self.default_lr if lr is None else lr, **common)
        if self.enabled and component_lr is None:
            raise ValueError("component_depth: `component_lr` is required, e.g. {'self_attn': 4e-4, 'ffn': 3e-4}")
        self.component_lr = {k: check_lr(f"component_lr[{k!r}]", v) for k, v in (component_lr or {}).items()}
        if depth_strategy not in DEPTH_STRATEGIES:
            raise ValueError(
                f"component_depth.depth_strategy must be one of {DEPTH_STRATEGIES}, got {depth_strategy!r}"
            )
        self.depth_strategy = depth_strategy
        self.min_depth_factor = _check_unit("component_depth.min_depth_factor", min_depth_factor)
        self.peak_position = _check_unit("component_depth.peak_position", peak_position)
        if depth_scope not in ("per_stack", "global"):
            raise ValueError(f"component_depth.depth_scope must be 'per_stack' or 'global', got {depth_scope!r}")
        self.depth_scope = depth_scope
        self.log_grad_norms = bool(log_grad_norms)
        if self.enabled and self.default_lr == 0:
            raise ValueError("component_depth.default_lr is the base LR (lr_scale 1.0) and must be > 0")
        if self.tower_depth and not self.enabled:
            raise ValueError("component_depth: tower_depth=True with enabled=False (one flat LR): drop one")

    @property
    def base_lr(self) -> float:
        return self.default_lr if self.enabled else self.lr

    @property
    def needs_depth(self) -> bool:  # type: ignore[override]
        return self.enabled  # components and depth both come from an adapter

    def prepare(self, mmap: ModelMap) -> None:
        if self.enabled:
            _warn_unused_components("component_depth.component_lr", self.component_lr, mmap)

    def factor(self, info: ParamInfo, mmap: ModelMap) -> float:
        if info.tower is not None:  # tower_depth: over the tower's own blocks (ids 1..n); its embeddings and head 1.0
            n = mmap.towers[info.tower]
            if not 1 <= info.layer_id <= n:
                return 1.0
            return depth_factor(self.depth_strategy, info.layer_id - 1, n, self.min_depth_factor, self.peak_position)
        if info.block is None:
            return 1.0
        if self.depth_scope == "per_stack":
            idx, n = info.stack_index, mmap.stack_sizes[info.stack]
        else:
            idx, n = info.block, mmap.num_layers
        return depth_factor(self.depth_strategy, idx, n, self.min_depth_factor, self.peak_position)

    def lr_scale(self, info: ParamInfo, mmap: ModelMap) -> float:
        if not self.enabled:
            return 1.0
        if info.component not in self.component_lr:
            return 1.0
        return self.component_lr[info.component] * self.factor(info, mmap) / self.default_lr
