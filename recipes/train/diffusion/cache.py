"""On-disk cache of VAE latent distributions and text embeddings (safetensors, one file per entry).

Entries are keyed by content: a latent by (sha256 of the image/video file, target size, crop,
flip, model fingerprint), a text embedding by (caption, model fingerprint). A changed file or
caption therefore gets a new key and is encoded again; another model's or another resolution's
entries are never found. Each file also stores its key's parts as metadata, checked on every read,
so a file that does not belong (copied in by hand, or a fingerprint collision) is an error, not a
silent reuse. The model fingerprint hashes the pipeline class, each encoder's config and the first
and last MiB (plus size) of its weight files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch


def model_fingerprint(pretrained: str | Path, components: list[str]) -> str:
    root, h = Path(pretrained), hashlib.sha256()
    h.update((root / "model_index.json").read_bytes())
    for name in components:
        for f in sorted((root / name).glob("*")):
            if f.suffix == ".json":
                h.update(f.read_bytes())
            elif f.suffix in (".safetensors", ".bin"):
                size = f.stat().st_size
                with open(f, "rb") as fh:
                    h.update(str(size).encode() + fh.read(1 << 20))
                    fh.seek(max(0, size - (1 << 20)))
                    h.update(fh.read(1 << 20))
    return h.hexdigest()[:24]


class EmbeddingCache:
    """``get(kind, parts)`` / ``put(kind, parts, tensors)`` under ``root/<model fingerprint>/<kind>/``."""

    def __init__(self, root: str | Path, fingerprint: str) -> None:
        self.dir = Path(root) / fingerprint
        self.fingerprint = fingerprint
        self.hits = self.misses = 0

    def _path(self, kind: str, parts: dict[str, str]) -> tuple[Path, dict[str, str]]:
        meta = {"model": self.fingerprint, **{k: str(v) for k, v in parts.items()}}
        key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
        return self.dir / kind / f"{key}.safetensors", meta

    def get(self, kind: str, parts: dict[str, Any], rebuild: bool = False) -> dict[str, torch.Tensor] | None:
        """The entry's tensors, None when missing. A damaged file (truncated, not safetensors) is an error naming
        it, or with ``rebuild`` (while the cache fills) a miss, said in a warning, so it is encoded again."""
        from safetensors import safe_open

        path, meta = self._path(kind, parts)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                stored = f.metadata() or {}
                out = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError (or OSError) for a bad file
            why = f"{path} is damaged ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
            if not rebuild:
                raise ValueError(f"cache: {why}; run again: the cache fill at start-up encodes it anew") from None
            logging.getLogger("recipes.train").warning(f"[cache] {why}; encoding it again")
            self.misses += 1
            return None
        if stored != meta:
            diff = sorted(k for k in set(meta) | set(stored) if meta.get(k) != stored.get(k))
            raise ValueError(f"cache: {path} was written for another input ({', '.join(diff)} differ: "
                             f"{ {k: stored.get(k) for k in diff} } vs {({k: meta.get(k) for k in diff})}); "
                             "delete that file or point task.cache_dir at a new folder")  # fmt: skip
        self.hits += 1
        return out

    def put(self, kind: str, parts: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        path, meta = self._path(kind, parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)


class CachedDataset(torch.utils.data.Dataset):
    """A captioned dataset read from the cache: ``latent`` (distribution parameters) and ``cond`` per sample."""

    def __init__(self, base: Any, cache: EmbeddingCache, spec: dict[str, str]) -> None:
        self.base, self.cache, self.spec = base, cache, spec
        self.targets = base.targets
        self.bucket_drop_last = bool(getattr(base, "bucket_drop_last", False))

    def bucket_keys(self) -> list[Any] | None:
        """The base dataset's buckets: the cache keeps the batching of the images it holds."""
        fn = getattr(self.base, "bucket_keys", None)
        return fn() if fn is not None else None

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def latent_parts(self, i: int, flipped: bool) -> dict[str, Any]:
        return {"source": self.base.keys[i], "size": "x".join(map(str, self.base.targets[i])), "flip": int(flipped),
                **self.spec}  # fmt: skip

    def __getitem__(self, i: int) -> dict[str, Any]:
        b = self.base
        placement = b._placement(i, b.sizes[i], b._rng(i))
        latent = self.cache.get("latent", self.latent_parts(i, placement[3]))
        cond = self.cache.get("text", {"caption": b.captions[i]})
        if latent is None or cond is None:
            raise ValueError(f"cache: entry for {b.files[i]} is missing from {self.cache.dir}; it was removed while "
                             "training, restart to re-encode it")  # fmt: skip
        out = {"latent": latent["params"], "cond": cond, "caption": b.captions[i], "key": b.keys[i],
               "original_size": tuple(b.sizes[i]), "crop_top_left": placement[1], "flipped": placement[3],
               "index": i}  # fmt: skip
        if any(m is not None for m in getattr(b, "masks", ())):  # loss masks are read each step, not cached
            out["mask"] = b.mask_of(i, placement)
        return out


def cache_batch(cache_dir: str | None, batch_size: int | None) -> int:
    """``task.cache_batch_size``: images / captions encoded per call while filling the cache (default 8)."""
    if batch_size is not None and (not cache_dir or isinstance(batch_size, bool) or int(batch_size) < 1):
        raise ValueError(f"task.cache_batch_size={batch_size!r} needs task.cache_dir and a whole number >= 1")
    return int(batch_size or 8)


def _fill(task: Any, ds: Any, cache: EmbeddingCache, spec: dict[str, str], batch_size: int) -> CachedDataset:
    """Encode the missing entries on the training device, ``batch_size`` at a time (latents: per size and flip),
    with a progress bar (``train.progress``) in items per second."""
    cached = CachedDataset(ds, cache, spec)
    device = task.train_device
    flips = (False, True) if ds.flip_p > 0 else (False,)
    missing: dict[tuple[Any, ...], list[tuple[int, bool]]] = {}  # (size, flip) -> samples; a batch stacks
    captions: list[str] = []
    queued: set[str] = set()  # a file listed `repeats` times has one latent per (size, flip): encode it once
    for i in range(len(ds)):
        for flip in flips:
            key = json.dumps(cached.latent_parts(i, flip), sort_keys=True)
            if key not in queued and cache.get("latent", cached.latent_parts(i, flip), rebuild=True) is None:
                missing.setdefault((tuple(ds.targets[i]), flip), []).append((i, flip))
                queued.add(key)
        if ds.captions[i] not in captions and cache.get("text", {"caption": ds.captions[i]}, rebuild=True) is None:
            captions.append(ds.captions[i])
    bar = FillProgress(sum(map(len, missing.values())) + len(captions), getattr(task, "progress", True))
    saved_flip, ds.flip_p = ds.flip_p, 0.0
    try:
        for group in missing.values():
            for start in range(0, len(group), batch_size):
                chunk = group[start : start + batch_size]
                pixels = torch.stack([ds[i]["pixels"].flip(-1) if flip else ds[i]["pixels"] for i, flip in chunk])
                for (i, flip), params in zip(chunk, task.latent_params(pixels.to(device)), strict=True):
                    cache.put("latent", cached.latent_parts(i, flip), {"params": params})
                bar.update(len(chunk))
        for start in range(0, len(captions), batch_size):
            chunk = captions[start : start + batch_size]
            embeds = task.encode_prompts(chunk, device)
            for j, caption in enumerate(chunk):
                cache.put("text", {"caption": caption}, {k: v[j] for k, v in embeds.items()})
            bar.update(len(chunk))
    finally:
        ds.flip_p = saved_flip
        bar.close()
    return cached


class FillProgress:
    """A bar over the entries the cache encodes, its rate in items/s as the training bar shows img/s (decimals
    below 1: ``run_log.per_second``); nothing when ``enabled`` is False, on other ranks, or with nothing to do."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        from recipes.train.distributed import is_main_process

        self.t0, self.done = time.perf_counter(), 0
        self.bar = tqdm(total=total, desc="cache", disable=not (enabled and total and is_main_process()),
                        dynamic_ncols=True, mininterval=1.0,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")  # fmt: skip

    def rate(self) -> float:
        return self.done / max(1e-9, time.perf_counter() - self.t0)

    def update(self, n: int) -> None:
        from recipes.train.run_log import per_second

        self.done += n
        self.bar.set_postfix_str(f"{per_second(self.rate())} items/s", refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _fill_all(task: Any, ds: Any, cache: EmbeddingCache) -> Any:
    """``_fill`` of a captioned folder, or of each part of a ``captioned_mix`` (each with its own crop and frames)."""
    if hasattr(ds, "parts"):
        return ds.with_parts([_fill_all(task, p, cache) for p in ds.parts])
    spec = {"crop": ds.crop, "frames": str(getattr(ds, "num_frames", 1)), "stride": str(getattr(ds, "frame_stride", 1))}
    return _fill(task, ds, cache, spec, task.cache_batch_size)


def cache_datasets(task: Any, train: Any, val: Any) -> tuple[CachedDataset, CachedDataset]:
    """Encode every sample not yet in ``task.cache_dir`` on the training device; afterwards drop the text
    encoders from memory and move the VAE to the CPU."""
    if train.crop == "random":
        raise ValueError("task.cache_dir with data.crop='random': a cached latent fixes the crop; use crop='center' "
                         "or train without the cache")  # fmt: skip
    root, wd = Path(task.cache_dir).resolve(), task.work_dir and Path(task.work_dir).resolve()
    if wd is not None and (root == wd or wd in root.parents):
        raise ValueError(f"task.cache_dir={str(root)!r} is inside the work dir, whose files a new run moves aside; "
                         "put the cache next to it (e.g. work_dirs/cache) so runs share it")  # fmt: skip
    pipe, fam = task.pipe, task.family
    encoders = [n for n, m in pipe.components.items() if isinstance(m, torch.nn.Module) and n != fam.denoiser]
    cache = EmbeddingCache(task.cache_dir, model_fingerprint(task.model_cfg["pretrained"], encoders))
    task._encoders_to(task.train_device)
    out_train = _fill_all(task, train, cache)
    out_val = out_train if val is train else _fill_all(task, val, cache)
    for prompt in ["", *task.samples.get("prompts", [])]:
        task.prompt_cond(prompt, task.train_device)
    for name in encoders:
        if name.startswith("text_encoder"):
            setattr(pipe, name, None)  # sampling runs on the embeddings kept in memory
    task._encoders_to(torch.device("cpu"))  # the VAE leaves the accelerator until a sample grid decodes
    print(f"[cache] {cache.dir}: {cache.hits} reused, {cache.misses} encoded on {task.train_device} in batches of "
          f"{task.cache_batch_size}; text encoders released, VAE on the CPU")  # fmt: skip
    return out_train, out_val
