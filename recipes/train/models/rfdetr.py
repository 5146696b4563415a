"""RF-DETR model builder (``model=dict(type="rfdetr", size=...)``), never a download.

Written against ``rfdetr`` 1.11 (base install; ``rfdetr.training`` is never imported, it pulls
Lightning).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recipes.options import check_keys
from recipes.train.registry import MODELS

log = logging.getLogger("recipes.detection")

SIZES = {"nano": "RFDETRNano", "small": "RFDETRSmall", "medium": "RFDETRMedium", "large": "RFDETRLarge",
         "base": "RFDETRBase"}  # fmt: skip


def rfdetr_class(size: str) -> type:
    """The ``rfdetr`` wrapper class for a size name (``nano`` .. ``large``, ``base``)."""
    if size not in SIZES:
        raise KeyError(f"model.size: unknown RF-DETR size {size!r}; known: {', '.join(SIZES)}")
    import rfdetr

    return getattr(rfdetr, SIZES[size])


def check_resolution(value: Any, key: str = "model.resolution") -> int:
    """A square input side in pixels: a whole number > 0 (rfdetr's own check is a pydantic error far from the key)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a whole number > 0 (the square input side in pixels), got {value!r}")
    return value


def check_block(model_config: Any, key: str = "model.resolution") -> None:
    """RF-DETR's windowed DINOv2 needs the side to be a multiple of ``patch_size * num_windows`` (rfdetr's ``train()``
    refuses others with the same rule; our collate would pad them silently, so the model saw another size)."""
    block = int(model_config.patch_size) * int(model_config.num_windows)
    if model_config.resolution % block:
        low = max(block, model_config.resolution // block * block)
        raise ValueError(
            f"{key}={model_config.resolution} is not a multiple of patch_size ({model_config.patch_size}) x "
            f"num_windows ({model_config.num_windows}) = {block}; use {low} or {low + block}"
        )


def _trainable_only(path: Path) -> bool:
    """Whether ``path`` is a run's trainable-only checkpoint (memory-mapped: the tensors are not read)."""
    from recipes.train.checkpoint import SAFE_GLOBALS

    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a torch zip file: rfdetr's own loader reports it
        return False
    return isinstance(ckpt, dict) and bool(ckpt.get("frozen_omitted"))


def build_rfdetr_wrapper(
    size: str = "nano",
    num_classes: int = 90,
    pretrained: str | None = None,
    allow_partial_load: bool = False,
    **kwargs: Any,
) -> Any:
    """The ``rfdetr`` wrapper (``.model.model`` is the ``LWDETR``, ``.model_config`` its config), never a download.

    ``pretrained``: a local checkpoint file (the ``rf-detr-<size>.pth`` rfdetr publishes, a
    run's ``best.pt``); its head is re-sized to ``num_classes``. rfdetr loads it with
    ``strict=False``: a checkpoint of another size (Nano's 2 decoder layers into Small's 3) would
    leave tensors at random init with only a log line. That is an error here unless
    ``allow_partial_load=True`` says it is meant.
    """
    cls = rfdetr_class(size)
    if "resolution" in kwargs:
        check_resolution(kwargs["resolution"])
    if pretrained is None:
        log.warning("RF-DETR %s: no model.pretrained given, starting from random weights", size)
        if size == "base":
            kwargs.setdefault("positional_encoding_size", 40)  # 37 would fetch DINOv2 weights from the hub
    else:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"model.pretrained: {str(path)!r} does not exist; give a local checkpoint file "
                f"(e.g. rf-detr-{size}.pth) or None to start from random weights"
            )
        pretrained = str(path.resolve())
        if _trainable_only(path):
            raise ValueError(
                f"model.pretrained: {pretrained!r} holds only the trainable tensors of a LoRA / mostly "
                "frozen run (frozen_omitted, train.save_frozen='auto'), not a whole model; start from the weights "
                "that run started from, or save whole models in that run with train.save_frozen=True"
            )
        log.info("RF-DETR %s: loading pretrained weights from %s", size, pretrained)
    hint = "was it saved from another size? pick the matching model.size"
    partial = _PartialLoadRecords()
    logging.getLogger("rf-detr").addHandler(partial)
    try:
        wrapper = cls(pretrain_weights=pretrained, num_classes=num_classes, **kwargs)
    except (RuntimeError, ValueError) as e:
        if pretrained and ("size mismatch" in str(e) or "incompatible" in str(e)):
            raise ValueError(
                f"model.pretrained: {pretrained!r} does not fit RF-DETR {size!r} ({hint}): {str(e)[:300]}"
            ) from None
        raise
    finally:
        logging.getLogger("rf-detr").removeHandler(partial)
    if partial.messages and not allow_partial_load:
        raise ValueError(
            f"model.pretrained: {pretrained!r} does not fit RF-DETR {size!r} ({hint}, or set "
            f"model.allow_partial_load=True to fine-tune from it on purpose). rfdetr: {partial.messages[0][:400]}"
        )
    check_block(wrapper.model_config)
    return wrapper


class _PartialLoadRecords(logging.Handler):
    """Collects rfdetr's warning that a checkpoint left model tensors at random init (or was not consumed)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "left at random init" in text or "not consumed by model" in text:
            args = record.args if isinstance(record.args, tuple) else ()
            self.messages.append(str(args[1]) if len(args) == 2 else text)  # rfdetr 1.11: (path, what is missing)


@MODELS.register_module("rfdetr")
def build_rfdetr(
    size: str = "nano",
    num_classes: int = 90,
    pretrained: str | None = None,
    encoder_weights: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """RF-DETR's ``LWDETR`` module (``num_classes`` = number of object classes, no background).

    ``encoder_weights``: a transformers ``Dinov2Model`` folder (DINOv2 ViT-S/14) for the encoder only, the rest
    random: the patch kernel is resampled 14 -> 16 px for Nano..Large and the position grid to the size's own
    (``recipes/train/models/pretrained.py``). It cannot be combined with ``pretrained`` (a whole model).
    """
    check_encoder_weights(pretrained, encoder_weights)
    model = build_rfdetr_wrapper(size, num_classes, pretrained, **kwargs).model.model
    load_encoder_weights(model, encoder_weights)
    return model


def check_encoder_weights(pretrained: str | None, encoder_weights: str | None) -> None:
    """``encoder_weights`` (a DINOv2 folder for the encoder) and ``pretrained`` (a whole model) exclude each other."""
    if encoder_weights is not None and pretrained is not None:
        raise ValueError(
            "model: give pretrained (a whole RF-DETR checkpoint) or encoder_weights (a DINOv2 folder for the "
            "encoder), not both: the encoder weights would overwrite the checkpoint's encoder"
        )


def load_encoder_weights(model: nn.Module, encoder_weights: str | None) -> None:
    """Load a transformers DINOv2 folder into the ``LWDETR``'s encoder (strict: names any tensor left random)."""
    if encoder_weights is None:
        return
    from recipes.train.models.pretrained import load_hf_dinov2_into_rfdetr

    log.info("%s", load_hf_dinov2_into_rfdetr(model, encoder_weights))


def check_rfdetr_options(model: dict[str, Any]) -> None:
    """``model.*`` checked before anything is built: this builder's keys, the rest against the size's rfdetr
    ``ModelConfig`` fields (a pydantic class: nothing is built)."""
    import inspect

    own = set(inspect.signature(build_rfdetr).parameters) | set(inspect.signature(build_rfdetr_wrapper).parameters)
    own -= {"kwargs"}
    fields = set(rfdetr_class(model.get("size", "nano"))._model_config_class.model_fields) - {"pretrain_weights"}
    check_keys("model.", model, own | fields)


build_rfdetr.check_options = check_rfdetr_options  # type: ignore[attr-defined]
