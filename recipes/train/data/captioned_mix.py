"""Several captioned folders in one run, each with its own share of every epoch; regularisation images.

    data = dict(train=dict(type="captioned_mix", weights=[3, 1], datasets=[
        dict(root="/data/me", trigger_word="ohwx", repeats=2, resolution=512),
        dict(root="/data/style", type="captioned_images", resolution=768, buckets=True),
    ]))

Each part is a ``captioned_images`` (default) or ``captioned_videos`` dataset with all of its own options
(root, captions, repeats, trigger words, resolution, buckets, val_split ...); a part without ``root`` takes
``data_root``. An epoch holds as many samples as the parts together (their ``repeats`` counted), shared out by
``weights`` (default: the parts' sizes, a plain concatenation): part ``j`` fills ``round(N * w_j / sum w)`` of
them (largest remainders), split over its sizes in proportion, so the batches per epoch are the same every
epoch. Which of its samples fill them is drawn from ``(seed, epoch, part, size)``: a part with more places
than samples repeats some, one with fewer sees another subset each epoch; a resumed run draws the same.
(kohya's dataset subsets with ``num_repeats``, SimpleTuner's multi-databackend ``probability``, ai-toolkit's
list of datasets.)

Regularisation (prior-preservation) images, DreamBooth style: a part with ``prior_loss_weight`` is a class
folder; its samples' loss is multiplied by that weight in training (kohya ``reg_data_dir`` +
``prior_loss_weight``: a per-sample loss weight; diffusers' ``train_dreambooth.py --with_prior_preservation``
adds ``prior_loss_weight`` x the class images' loss to the instance loss). ``class_prompt`` (diffusers' name)
gives every class image one prompt, else the folder's captions are read. With ``weights=[1, 1]`` half of each
epoch is class images, as kohya's matching of reg images to training images.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from recipes.train.registry import DATASETS

MIX_ONLY = ("prior_loss_weight", "class_prompt")  # part keys the mix reads; the folder datasets never see them


def _shares(total: int, weights: list[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders, ties to the earlier): sums to ``total``."""
    exact = [total * w / sum(weights) for w in weights]
    out = [math.floor(x) for x in exact]
    for j in sorted(range(len(weights)), key=lambda j: (out[j] - exact[j], j))[: total - sum(out)]:
        out[j] += 1
    return out


def _number(value: Any, where: str, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= low:
        raise ValueError(f"{where} must be a number > {low:g}, got {value!r}")
    return float(value)


def _has_masks(part: Any) -> bool:
    return any(m is not None for m in getattr(getattr(part, "base", part), "masks", ()))


def _build_part(spec: Any, j: int, root: str | None, seed: int) -> tuple[Any, float | None]:
    """Part ``j``'s dataset and its ``prior_loss_weight`` (None: not regularisation images)."""
    where = f"data.train.datasets[{j}]."
    if not isinstance(spec, dict):
        raise TypeError(f"{where[:-1]} must be a dict (e.g. dict(root=..., resolution=512)), got {spec!r}")
    from recipes.train.config import build_with_keys

    d = {"type": "captioned_images", "seed": seed, **spec}
    if d.get("root") is None:
        if root is None:
            raise KeyError(f"config: `{where}root` is required (set it, or data_root for the parts without one)")
        d["root"] = root
    weight, class_prompt = d.pop("prior_loss_weight", None), d.pop("class_prompt", None)
    if weight is not None:
        weight = _number(weight, f"{where}prior_loss_weight")
    if class_prompt is not None:
        if weight is None:
            raise ValueError(f"{where}class_prompt names the class of regularisation images; set {where}"
                             "prior_loss_weight too, or use instance_prompt for training images")  # fmt: skip
        if d.get("instance_prompt") is not None:
            raise ValueError(f"{where}class_prompt and {where}instance_prompt both give the prompt; keep one")
        d["instance_prompt"] = class_prompt
    kind = d.pop("type")
    if kind not in ("captioned_images", "captioned_videos"):
        raise ValueError(f"{where}type must be 'captioned_images' or 'captioned_videos', got {kind!r}")
    try:
        return build_with_keys(DATASETS.lookup(kind), d, where), weight
    except (ValueError, FileNotFoundError) as e:  # the folder's own errors say `data.`: name the part too
        if where in str(e):
            raise
        raise type(e)(f"{where[:-1]}: {e}") from None


@DATASETS.register_module("captioned_mix")
class CaptionedMix(Dataset):
    """Captioned folders sampled by weight; see the module docstring."""

    def __init__(self, datasets: list[dict[str, Any]], weights: list[float] | None = None, root: str | None = None,
                 seed: int = 0) -> None:  # fmt: skip
        if not isinstance(datasets, (list, tuple)) or not datasets:
            raise ValueError(f"data.train.datasets must be a non-empty list of dataset dicts, got {datasets!r}")
        built = [_build_part(spec, j, root, seed) for j, spec in enumerate(datasets)]
        parts, prior = [p for p, _ in built], [w for _, w in built]
        if weights is not None:
            if not isinstance(weights, (list, tuple)) or len(weights) != len(parts):
                raise ValueError(f"data.train.weights must be a list of {len(parts)} numbers (one per dataset), "
                                 f"got {weights!r}")  # fmt: skip
            weights = [_number(w, f"data.train.weights[{j}]") for j, w in enumerate(weights)]
        if all(w is not None for w in prior):
            raise ValueError("data.train.datasets: every part has prior_loss_weight (regularisation images); "
                             "add the training images as a part without it")  # fmt: skip
        self._init(parts, weights, [1.0 if w is None else w for w in prior], seed)

    def _init(self, parts: list[Any], weights: list[float] | None, loss_weights: list[float], seed: int) -> None:
        kinds = {p.kind for p in parts}
        if len(kinds) > 1:
            raise ValueError(f"data.train.datasets mixes {sorted(kinds)}: a run trains on images or on videos")
        frames = {getattr(p, "num_frames", 1) for p in parts}
        if len(frames) > 1:
            raise ValueError(f"data.train.datasets: the video parts have num_frames {sorted(frames)}; a batch "
                             "stacks one frame count, give every part the same")  # fmt: skip
        self.parts, self.weights, self.loss_weights, self.seed = parts, weights, loss_weights, seed
        self.kind, self.epoch = kinds.pop(), 0
        if frames != {1} or hasattr(parts[0], "num_frames"):
            self.num_frames = frames.pop()
        drops = {bool(getattr(p, "bucket_drop_last", False)) for p in parts}
        if len(drops) > 1:
            raise ValueError("data.train.datasets: bucket_drop_last differs between the parts; set it on all or none")
        self.bucket_drop_last = drops.pop()
        self._layout()

    # --- the epoch's places: fixed counts per (part, size), filled per epoch -----------------------------------
    def _layout(self) -> None:
        sizes = [len(p) for p in self.parts]
        counts = _shares(sum(sizes), self.weights or [float(n) for n in sizes])
        for j, c in enumerate(counts):
            if c == 0:
                why = f"at weight {self.weights[j]:g}; raise its weight" if self.weights else "(no samples left)"
                raise ValueError(f"data.train.weights: datasets[{j}] ({str(self.parts[j].root)!r}) gets 0 of the "
                                 f"{sum(sizes)} samples per epoch {why} or remove it")  # fmt: skip
        self.counts, self._groups, self.targets = counts, [], []
        for j, part in enumerate(self.parts):
            by_size: dict[tuple[int, int], list[int]] = {}
            for i, t in enumerate(part.targets):
                by_size.setdefault(tuple(t), []).append(i)
            for (size, members), n in zip(by_size.items(), _shares(counts[j], [len(m) for m in by_size.values()]),
                                          strict=True):  # fmt: skip
                self._groups.append((j, members, n))
                self.targets += [size] * n
        self.set_epoch(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for p in self.parts:
            p.set_epoch(epoch)
        self._map: list[tuple[int, int]] = []
        for g, (j, members, n) in enumerate(self._groups):
            if n == len(members):  # every sample once: in order (evaluations see the same sample at each index)
                chosen = members
            else:
                rng = np.random.default_rng([self.seed, self.epoch, j, g, 2])
                rounds = -(-n // len(members))
                chosen = [members[i] for _ in range(rounds) for i in rng.permutation(len(members))][:n]
            self._map += [(j, i) for i in chosen]

    def __len__(self) -> int:
        return len(self._map)

    def bucket_keys(self) -> list[tuple[int, int]]:
        return list(self.targets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        j, i = self._map[index]
        part = self.parts[j]
        sample = dict(part[i])
        sample["index"] = index  # the per-sample draws follow the place in the epoch, as in one folder
        if any(_has_masks(p) for p in self.parts) and "mask" not in sample:
            sample["mask"] = torch.ones(1, *part.targets[i])  # a batch stacks masks: the unmasked parts count all
        if any(w != 1.0 for w in self.loss_weights):
            sample["loss_weight"] = self.loss_weights[j]
        return sample

    def part_of(self, index: int) -> int:
        """The part that place ``index`` of this epoch is drawn from."""
        return self._map[index][0]

    # --- what the task, the engine's image check and the cache read -------------------------------------------
    @property
    def root(self) -> Path:
        return self.parts[0].root

    @property
    def crop(self) -> str:
        return "random" if any(p.crop == "random" for p in self.parts) else "center"

    @property
    def caption_options(self) -> Any:
        return next((p.caption_options for p in self.parts if p.caption_options.varies), self.parts[0].caption_options)

    @property
    def unmatched_rows(self) -> int:
        return sum(getattr(p, "unmatched_rows", 0) for p in self.parts)

    def image_files(self) -> list[Path] | None:
        """Every part's files, part after part (the numbering :meth:`drop_samples` takes)."""
        if not all(hasattr(p, "image_files") for p in self.parts):
            return None
        return [f for p in self.parts for f in p.image_files()]

    def drop_samples(self, indices: list[int]) -> None:
        """Leave samples out (``train.bad_images='skip'``), numbered as :meth:`image_files` lists them."""
        start = 0
        for p in self.parts:
            n = len(p)
            p.drop_samples([i - start for i in indices if start <= i < start + n])
            start += n
        self._layout()

    def with_parts(self, parts: list[Any]) -> CaptionedMix:
        """The same mix over other datasets of the same samples (the latent cache's)."""
        out = copy.copy(self)
        out.parts = parts
        out._layout()
        return out

    def split_off_val(self) -> CaptionedMix | None:
        """The parts' ``val_split`` held-out samples, together, each once (None when no part holds any out)."""
        held = [(p.split_off_val(), w) for p, w in zip(self.parts, self.loss_weights, strict=True)]
        held = [(h, w) for h, w in held if h is not None]
        if not held:
            return None
        val = copy.copy(self)
        val._init([h for h, _ in held], None, [w for _, w in held], self.seed)
        return val

    def describe(self) -> str:
        """The setup report's parts: each one's folder, size, share of an epoch and loss weight."""
        total = sum(self.counts)
        rows = []
        for j, (p, n) in enumerate(zip(self.parts, self.counts, strict=True)):
            prior = f", prior_loss_weight {self.loss_weights[j]:g}" if self.loss_weights[j] != 1.0 else ""
            rows.append(f"[{j}] {str(p.root)!r} {len(p)} {self.kind}s -> {n} per epoch ({100 * n / total:.0f}%){prior}")
        return f"mix of {len(self.parts)}: " + "; ".join(rows)


def prior_weights(batch: dict[str, Any], weights: torch.Tensor) -> torch.Tensor:
    """The per-sample loss weights times each sample's ``loss_weight`` (regularisation images), when the batch has
    them (a mix with ``prior_loss_weight``)."""
    if "loss_weight" not in batch:
        return weights
    return weights * torch.tensor(batch["loss_weight"], device=weights.device, dtype=torch.float32)
