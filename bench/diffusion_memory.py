"""Memory of a diffusion LoRA run, per component and per ``model.base_precision``.

1. Full size, without memory: each component of Flux.1-dev, SDXL and WAN 2.1 T2V 1.3B built on the meta
   device from its released config (denoisers: the presets of ``recipes/train/models/diffusers.py``; text
   encoders and VAEs: ``RELEASED`` below, the values of each folder's ``config.json``), and its weight bytes
   as each precision stores them: ``bf16`` 2 bytes a value; ``int8`` / ``fp8`` (torchao weight-only) the
   ``nn.Linear`` weights at 1 byte plus one scale per output row; ``nf4`` (bitsandbytes) the Linear weights
   at half a byte plus one float32 absmax per 64 values; every other tensor stays bf16. Those rules are
   checked against real quantized tensors in part 2 (the ``rule/real`` column).
2. Measured on the CPU: a mid-size Flux.1 transformer (``MID``: 2 double + 4 single blocks, width 1024)
   saved to disk and loaded through the trainer's own ``quantization_config``; its weight bytes as stored,
   and in a fresh process per precision the peak resident size (sampled every 2 ms, above the size after
   the imports) while loading it, and from then on while training a LoRA r16 (forward, backward, AdamW)
   at 64 image tokens.

    python bench/diffusion_memory.py [--json out.json] [--skip-measure] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

PRECISIONS = ("bf16", "fp8", "int8", "nf4")
_CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")  # fmt: skip
_CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
               max_position_embeddings=77, projection_dim=1280, hidden_act="gelu")  # fmt: skip
_T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
               feed_forward_proj="gated-gelu")  # fmt: skip
_VAE_4 = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4)  # fmt: skip
_TEXT_CONFIGS = {"CLIPTextModel": "CLIPTextConfig", "CLIPTextModelWithProjection": "CLIPTextConfig",
                 "T5EncoderModel": "T5Config", "UMT5EncoderModel": "UMT5Config"}  # fmt: skip
#: model -> component -> (library, class, config values); denoisers: "preset:<name>"
RELEASED = {
    "flux1-dev": {
        "transformer": ("preset", "flux1-dev", {}),
        "text_encoder": ("transformers", "CLIPTextModel", _CLIP_L),
        "text_encoder_2": ("transformers", "T5EncoderModel", _T5_XXL),
        "vae": (
            "diffusers",
            "AutoencoderKL",
            dict(_VAE_4, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False),
        ),
    },  # fmt: skip
    "sdxl": {
        "unet": ("preset", "sdxl", {}),
        "text_encoder": ("transformers", "CLIPTextModel", _CLIP_L),
        "text_encoder_2": ("transformers", "CLIPTextModelWithProjection", _CLIP_G),
        "vae": ("diffusers", "AutoencoderKL", dict(_VAE_4, latent_channels=4)),
    },  # fmt: skip
    "wan21-t2v-1.3b": {
        "transformer": ("preset", "wan21-t2v-1.3b", {}),
        "text_encoder": ("transformers", "UMT5EncoderModel", dict(_T5_XXL, vocab_size=256384)),
        "vae": ("diffusers", "AutoencoderKLWan", {}),
    },  # fmt: skip
}
MID = dict(in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=128, num_attention_heads=8,
           joint_attention_dim=1024, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))  # fmt: skip


def build_meta(lib: str, cls: str, values: dict) -> nn.Module:
    if lib == "preset":
        from recipes.train.models.diffusers import build_diffusers_model

        return build_diffusers_model(cls, device="meta")
    import diffusers
    import transformers

    with torch.device("meta"):
        if lib == "transformers":
            config_cls = getattr(transformers, _TEXT_CONFIGS[cls])
            return getattr(transformers, cls)(config_cls(**values))
        return getattr(diffusers, cls)(**values)


def rule_bytes(model: nn.Module, precision: str) -> int:
    """Weight bytes of ``model`` stored at ``precision`` by the rules in the module docstring."""
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    total, seen = 0, set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if precision == "bf16" or id(p) not in linear:
            total += 2 * p.numel()
        elif precision == "nf4":
            total += p.numel() // 2 + 4 * -(-p.numel() // 64)
        else:
            total += p.numel() + (4 if precision == "fp8" else 2) * p.shape[0]
    return total


def stored_bytes(t: torch.Tensor) -> int:
    """Bytes a (possibly quantized: torchao / bitsandbytes) tensor holds, its inner tensors summed."""
    quant_state = getattr(t, "quant_state", None)
    if quant_state is not None:  # bitsandbytes 4-bit: packed data + absmax
        return t.numel() * t.element_size() + quant_state.absmax.numel() * quant_state.absmax.element_size()
    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, nn.Parameter):
        return sum(stored_bytes(getattr(t, name)) for name in t.__tensor_flatten__()[0])
    return t.numel() * t.element_size()


def full_size_table() -> list[dict]:
    rows = []
    for model, parts in RELEASED.items():
        for name, (lib, cls, values) in parts.items():
            m = build_meta(lib, cls, values)
            params = sum(p.numel() for p in m.parameters())
            rows.append({"model": model, "component": name, "class": type(m).__name__, "params": params,
                         **{p: rule_bytes(m, p) for p in PRECISIONS}})  # fmt: skip
    return rows


def _mid_dir(root: Path) -> Path:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    FluxTransformer2DModel(**MID).to(torch.bfloat16).save_pretrained(str(root / "transformer"))
    return root / "transformer"


class RssPeak:
    """The process's resident size sampled every 2 ms from now on (``/proc/self/statm``); ``stop()`` gives the
    peak above the size at the start, so a transient of the imports before it does not count."""

    def __init__(self) -> None:
        self.page, self.peak, self.running = os.sysconf("SC_PAGE_SIZE"), 0, True
        self.base = self._rss()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _rss(self) -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * self.page

    def _run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def phase(self) -> int:
        """The peak above the start since the last phase (or the start); the next phase starts from now."""
        peak, self.peak = max(self.peak, self._rss()), self._rss()
        return peak - self.base

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.phase()


def measure_one(folder: str, precision: str, steps: int) -> dict:
    """One fresh process: load the mid-size transformer at ``precision``, train a LoRA r16 for ``steps`` steps."""
    from diffusers import FluxTransformer2DModel
    from peft import LoraConfig

    from recipes.train.models.diffusers import quantization_config

    sampler = RssPeak()
    q = quantization_config(precision, {"transformer": False}, "bfloat16")
    kw = {"quantization_config": q.quant_mapping["transformer"]} if q is not None else {}
    model = FluxTransformer2DModel.from_pretrained(folder, torch_dtype=torch.bfloat16, **kw)
    load_peak = sampler.phase()
    weights = sum(stored_bytes(p) for p in model.parameters())
    rule = rule_bytes(FluxTransformer2DModel.from_config(model.config).to("meta"), precision)
    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    lora = [p for p in model.parameters() if p.requires_grad]
    for p in lora:
        p.data = p.data.float()
    opt = torch.optim.AdamW(lora, lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        out = model(hidden_states=torch.randn(1, 64, 64, generator=gen, dtype=torch.bfloat16),
                    encoder_hidden_states=torch.randn(1, 32, 1024, generator=gen, dtype=torch.bfloat16),
                    pooled_projections=torch.randn(1, 768, generator=gen, dtype=torch.bfloat16),
                    timestep=torch.tensor([0.5]), img_ids=torch.zeros(64, 3), txt_ids=torch.zeros(32, 3),
                    guidance=torch.tensor([3.5])).sample  # fmt: skip
        out.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"precision": precision, "weight_bytes": weights, "rule_bytes": rule, "load_peak_rss": load_peak,
            "train_peak_rss": sampler.stop(), "rss_after_imports": sampler.base, "step_s": min(times)}  # fmt: skip


def measure(precisions: list[str], steps: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = _mid_dir(Path(tmp))
        for precision in precisions:
            cmd = [sys.executable, __file__, "--child", str(folder), precision, "--steps", str(steps)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if done.returncode:
                rows.append({"precision": precision, "error": done.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="also write the figures to this file (must not exist)")
    ap.add_argument("--skip-measure", action="store_true", help="only the full-size table (no CPU run)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure_one(args.child[0], args.child[1], args.steps)))
        return
    if args.json and Path(args.json).exists():
        sys.exit(f"error: --json {args.json} exists; the bench never overwrites a file")
    full = full_size_table()
    print("| model | component | class | params (M) | " + " | ".join(f"{p} GB" for p in PRECISIONS) + " |")
    print("|---|---|---|---:|" + "---:|" * len(PRECISIONS))
    for r in full:
        cells = " | ".join(_gb(r[p]) for p in PRECISIONS)
        print(f"| {r['model']} | {r['component']} | {r['class']} | {r['params'] / 1e6:.0f} | {cells} |")
    mid = [] if args.skip_measure else measure(args.precisions, args.steps)
    if mid:
        print("\nmid-size Flux.1 transformer (2 double + 4 single blocks, width 1024), LoRA r16 step on the CPU:")
        print(
            "| base_precision | weights MB (stored) | rule/real | load: peak RSS MB | training: peak RSS MB | step s |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for r in mid:
            if "error" in r:
                print(f"| {r['precision']} | - | - | - | - | {r['error'][:90]} |")
                continue
            print(f"| {r['precision']} | {r['weight_bytes'] / 1e6:.0f} | {r['rule_bytes'] / r['weight_bytes']:.3f} | "
                  f"{r['load_peak_rss'] / 1e6:.0f} | {r['train_peak_rss'] / 1e6:.0f} | {r['step_s']:.2f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"full_size": full, "mid_size_cpu": mid}, indent=1))


if __name__ == "__main__":
    main()
