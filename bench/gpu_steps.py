"""Full-size LoRA steps on one GPU, per ``model.base_precision``, and a ViT-B/16 fine-tune step's MFU.

Flux.1-dev (1024 px: 4096 image + 512 T5 tokens), SDXL (1024 px: 128x128 latents, 77 tokens) and
WAN 2.1 T2V 1.3B (480p, 81 frames: 21x60x104 latents, 512 tokens), each denoiser built from its
released config (``recipes/train/models/diffusers.py`` presets) with random weights (never a download),
batch 1, gradient checkpointing, LoRA r16 on the family's targets, AdamW. The frozen base is
quantized in memory with the same configs the trainer passes to diffusers (``quantization_config``):
torchao's ``quantize_`` for fp8 / int8, bitsandbytes ``Linear4bit`` (nf4) for nf4. Per run: peak
allocated memory (``torch.cuda.max_memory_allocated`` from after the build, so the fp32 build before the cast
is not counted) and the median of ``--steps`` step times after one warm-up step. Each cell runs in its own process
(a CUDA error is sticky: one failing cell must not fail the rest). ``--sdpa-backends`` restricts the attention
kernels as ``train.sdpa_backends`` does (on torch 2.11 + CUDA 13 on an H200, the Flux.1 step's backward failed in
the cuDNN attention kernel that torch picks by default; without it, it ran). ViT-B/16 (timm, 224 px, batch 128, bf16 autocast, AdamW): achieved FLOP/s over the
GPU's dense bf16 peak (H100 / H200 SXM: 989 TFLOP/s).

    python bench/gpu_steps.py --json out.json [--models flux1-dev sdxl wan21-t2v-1.3b] [--steps 3] [--sdpa-backends ...]
    python bench/gpu_steps.py --device meta   # CPU-safe check: every step's shapes on the meta device
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

PRECISIONS = ("bf16", "fp8", "int8", "nf4")
FAMILY_OF = {"flux1-dev": "flux", "sdxl": "sdxl", "wan21-t2v-1.3b": "wan"}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, SXM


def inputs(preset: str, device: torch.device) -> dict:
    """One 1024 px image (Flux.1, SDXL) / one 480p 81-frame clip (WAN) as the denoiser receives it."""
    kw = dict(device=device, dtype=torch.bfloat16)
    t = torch.tensor([500.0], device=device)
    if preset == "flux1-dev":
        return dict(hidden_states=torch.randn(1, 4096, 64, **kw), encoder_hidden_states=torch.randn(1, 512, 4096, **kw),
                    pooled_projections=torch.randn(1, 768, **kw), timestep=t / 1000, guidance=torch.tensor([3.5], device=device),
                    img_ids=torch.zeros(4096, 3, device=device), txt_ids=torch.zeros(512, 3, device=device))  # fmt: skip
    if preset == "sdxl":
        return dict(sample=torch.randn(1, 4, 128, 128, **kw), timestep=t, encoder_hidden_states=torch.randn(1, 77, 2048, **kw),
                    added_cond_kwargs={"text_embeds": torch.randn(1, 1280, **kw), "time_ids": torch.randn(1, 6, **kw)})  # fmt: skip
    return dict(hidden_states=torch.randn(1, 16, 21, 60, 104, **kw), timestep=t,
                encoder_hidden_states=torch.randn(1, 512, 4096, **kw))  # fmt: skip


def quantize(model: nn.Module, precision: str) -> None:
    """The frozen base at ``precision``, in memory, with the configs ``model.base_precision`` uses. As diffusers'
    quantizers do, the class's ``_keep_in_fp32_modules`` stay as they are (WAN reads its time embedder's dtype from
    its first weight: an nf4 one there makes the timestep uint8)."""
    if precision == "bf16":
        return
    from recipes.train.models.diffusers import quantization_config

    keep = set(getattr(model, "_keep_in_fp32_modules", None) or [])

    def quantized(module: nn.Module, name: str) -> bool:
        return isinstance(module, nn.Linear) and not keep & set(name.split("."))

    q = quantization_config(precision, {"denoiser": False}, "bfloat16").quant_mapping["denoiser"]
    if precision != "nf4":
        from torchao.quantization import quantize_

        quantize_(model, q.quant_type, filter_fn=quantized)
        return
    import bitsandbytes as bnb

    for parent_name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear and quantized(child, f"{parent_name}.{child_name}"):
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, child.bias is not None,
                                        compute_dtype=torch.bfloat16, quant_type="nf4", device="meta")  # fmt: skip
                new.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4")
                if child.bias is not None:
                    new.bias = nn.Parameter(child.bias.data, requires_grad=False)
                setattr(module, child_name, new.to(child.weight.device))  # Params4bit quantizes on this move


def build(preset: str, precision: str, device: torch.device) -> tuple[nn.Module, list[nn.Parameter]]:
    from peft import LoraConfig

    from recipes.train.diffusion.families import FAMILIES
    from recipes.train.models.diffusers import build_diffusers_model

    # built on the device itself: every parameter and buffer gets the class's own init (``to_empty`` from meta
    # would leave buffers, index tables among them, as uninitialised memory)
    model = build_diffusers_model(preset, device=str(device), dtype="bfloat16")
    model.requires_grad_(False)
    if device.type != "meta":
        quantize(model, precision)
    model.enable_gradient_checkpointing()
    model.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=FAMILIES[FAMILY_OF[preset]].lora_targets))
    lora = [p for p in model.parameters() if p.requires_grad]
    for p in lora:
        p.data = p.data.float()
    return model.train(), lora


def lora_step(preset: str, precision: str, device: torch.device, steps: int) -> dict:
    model, lora = build(preset, precision, device)
    if device.type == "cuda":  # the peak of training, not of the fp32 build before the cast and quantization
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    opt = torch.optim.AdamW(lora, lr=1e-4)
    times = []
    for _ in range(1 + steps):
        x = inputs(preset, device)
        t0 = time.perf_counter()
        out = model(**x, return_dict=False)[0]
        out.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if device.type == "meta":
            break
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    del model, lora, opt
    return {"model": preset, "base_precision": precision, "peak_gib": peak,
            "step_s": statistics.median(times[1:]) if len(times) > 1 else None}  # fmt: skip


def vit_mfu(device: torch.device, steps: int, batch: int = 128) -> dict:
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = timm.create_model("vit_base_patch16_224", num_classes=1000)
    model = model.to_empty(device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, 3, 224, 224, device=device), torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    flops, times = counter.get_total_flops(), []
    for _ in range(steps if device.type == "cuda" else 0):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "meta"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    step_s = statistics.median(times) if times else None
    mfu = flops / step_s / peak if step_s and peak else None
    return {"model": "vit_base_patch16_224", "batch": batch, "flops_per_step": flops, "step_s": step_s,
            "device": name, "peak_flops": peak, "mfu": mfu}  # fmt: skip


def run_cell(model: str, precision: str, args: argparse.Namespace) -> dict:
    """One cell in a child process: a CUDA error (sticky for the rest of a process) then spoils that cell alone."""
    cmd = [sys.executable, __file__, "--one", model, precision, "--device", args.device, "--steps", str(args.steps)]
    cmd += ["--sdpa-backends", *args.sdpa_backends] if args.sdpa_backends else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    row = next((json.loads(line) for line in reversed(done.stdout.splitlines()) if line.startswith("{")), None)
    if row is None:  # the child died before it could report (a crash, the OOM killer)
        row = {
            "model": model,
            "base_precision": precision,
            "error": f"exit {done.returncode}",
            "stderr": done.stderr[-1500:],
        }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the figures here (must not exist)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "meta"])
    ap.add_argument("--models", nargs="+", default=list(FAMILY_OF), choices=list(FAMILY_OF))
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--sdpa-backends", nargs="+", choices=["flash", "efficient", "cudnn", "math"],
                    help="the attention kernels allowed (train.sdpa_backends); default: torch's choice")  # fmt: skip
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.json and Path(args.json).exists():
        sys.exit(f"error: --json {args.json} exists; the bench never overwrites a file")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device here; run with --device meta for the CPU-safe shape check")
    if args.one:  # one cell, in this process (the parent runs each cell in its own)
        preset, precision = args.one
        from recipes.train.config import sdpa_context

        try:
            with sdpa_context(args.sdpa_backends):
                step = lora_step if preset in FAMILY_OF else lambda _m, _p, d, n: vit_mfu(d, n)
                row = step(preset, precision, device, args.steps)
        except Exception as e:
            row = {"model": preset, "base_precision": precision, "error": f"{type(e).__name__}: {e}"[:300],
                   "traceback": traceback.format_exc()[-1500:]}  # fmt: skip
        row["sdpa_backends"] = args.sdpa_backends
        print(json.dumps(row), flush=True)
        return
    cells = [(m, p) for m in args.models for p in (args.precisions if device.type == "cuda" else ["bf16"])]
    rows = [run_cell(m, p, args) for m, p in cells]
    vit = run_cell("vit_base_patch16_224", "bf16", args)
    if args.json:
        Path(args.json).write_text(json.dumps({"lora_steps": rows, "vit_b16": vit}, indent=1))


if __name__ == "__main__":
    main()
