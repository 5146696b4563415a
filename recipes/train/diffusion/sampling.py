"""Sample grids at each evaluation: fixed prompts and seeds through the real diffusers pipeline.

The pipeline is the one the task loaded, with the model being trained as its denoiser (LoRA
active), called with precomputed prompt embeddings (so it runs after the text encoders are
dropped by the cache) and one ``torch.Generator`` per seed. Images go to
``<work_dir>/samples/step_XXXXXXX.png`` (rows = prompts, columns = seeds); video as a GIF per prompt.
The same grid (and each prompt's frames) is returned for the run's TensorBoard log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def _grid(images: list[list[np.ndarray]]) -> np.ndarray:
    return np.concatenate([np.concatenate(row, axis=1) for row in images], axis=0)


def sample_call_kwargs(task: Any, prompt: str, device: torch.device) -> dict[str, Any]:
    s, fam = task.samples, task.family
    batch = lambda cond: {k: v.unsqueeze(0) for k, v in cond.items()}  # noqa: E731 - one prompt, batch of one
    kw: dict[str, Any] = fam.sample_kwargs(batch(task.prompt_cond(prompt, device)))
    if fam.takes_negative(
        task.pipe
    ):  # Flux-dev distils guidance into an input; the others use classifier-free guidance
        neg = fam.sample_kwargs(batch(task.empty_cond(device)))
        kw.update({f"negative_{k}": v for k, v in neg.items()})
    size = task.sample_size()
    kw.update(num_inference_steps=int(s.get("steps", 20)), height=size[0], width=size[1], output_type="np")
    kw.update(fam.sample_options)
    if "guidance_scale" in s:
        kw[fam.guidance_argument] = float(s["guidance_scale"])
    if fam.video:
        kw["num_frames"] = int(s.get("num_frames", task.train_frames()))
    return kw


@torch.no_grad()
def write_samples(task: Any, model: Any, device: torch.device) -> tuple[Path, dict[str, np.ndarray]]:
    """Write the grid (and GIFs); return its path and ``{"samples": grid, "samples/p<i>": frames}`` (uint8)."""
    from PIL import Image

    pipe, s = task.pipe, task.samples
    setattr(pipe, task.family.denoiser, model)
    task._encoders_to(device)
    seeds = [int(x) for x in s.get("seeds", [0])]
    out = task.output_dir() / "samples"
    out.mkdir(parents=True, exist_ok=True)
    grid: list[list[np.ndarray]] = []
    media: dict[str, np.ndarray] = {}
    for i, prompt in enumerate(s["prompts"]):
        row = []
        for seed in seeds:
            gen = torch.Generator(device).manual_seed(seed)
            frames = pipe(generator=gen, **sample_call_kwargs(task, prompt, device))[0][0]
            row.append((np.clip(frames, 0, 1) * 255).round().astype(np.uint8))
        if task.family.video:  # frames side by side per seed, one GIF per prompt
            video = np.concatenate(row, axis=2)
            media[f"samples/p{i}"] = video
            imgs = [Image.fromarray(f) for f in video]
            imgs[0].save(
                out / f"step_{task.step + 1:07d}_p{i}.gif", save_all=True, append_images=imgs[1:], duration=125
            )
            row = [r[0] for r in row]
        grid.append(row)
    path = out / f"step_{task.step + 1:07d}.png"
    media["samples"] = _grid(grid)
    Image.fromarray(media["samples"]).save(path)
    return path, media
