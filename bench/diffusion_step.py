"""Step time of tools/train.py's diffusion path against a minimal hand-written loop, same run.

For the tiny SD 1.5 and Flux pipelines (``recipes/train/diffusion/testing.py``, saved and reloaded
with ``from_pretrained``) on scikit-image's sample photos: the engine step (``Trainer._one_step``:
schedule hand-off, the task's VAE + text encoding, objective, LoRA forward/backward, AdamW,
logging) against a loop written the way diffusers' training examples are (same pipeline, same
LoRA model and optimizer groups, same dataset object and batch, uncached). Rounds alternate
engine / hand loop to share the machine's noise; the figure is the ratio of median per-step times.

    python bench/diffusion_step.py [--families sd15 flux] [--steps 10] [--rounds 5] [--resolution 64]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.timing import engine_round, hand_loop_round  # noqa: E402
from recipes.train.config import load_config  # noqa: E402
from recipes.train.diffusion.testing import save_test_pipeline  # noqa: E402
from recipes.train.engine import Trainer  # noqa: E402


def photos(root: Path, copies: int = 8) -> Path:
    import skimage.data
    from PIL import Image

    root.mkdir(parents=True)
    for name, cap in [("chelsea", "a photo of a cat"), ("coffee", "a cup of coffee"),
                      ("astronaut", "an astronaut portrait"), ("rocket", "a rocket on the pad")]:  # fmt: skip
        for k in range(copies):  # epochs long enough that the engine's end-of-epoch diagnostics are rare, as in use
            Image.fromarray(getattr(skimage.data, name)()).save(root / f"{name}_{k}.png")
            (root / f"{name}_{k}.txt").write_text(f"{cap}, view {k}")
    return root


def hand_step_sd(pipe, unet, batch, sched) -> torch.Tensor:
    with torch.no_grad():
        lat = pipe.vae.encode(batch["pixels"]).latent_dist.sample() * pipe.vae.config.scaling_factor
        emb = pipe.encode_prompt(batch["caption"], "cpu", 1, False)[0]
    noise = torch.randn_like(lat)
    t = torch.randint(0, sched.config.num_train_timesteps, (lat.shape[0],))
    pred = unet(sched.add_noise(lat, noise, t), t, encoder_hidden_states=emb).sample
    return F.mse_loss(pred.float(), noise.float())


def hand_step_flux(pipe, tr, batch, sched) -> torch.Tensor:
    from diffusers import FluxPipeline

    with torch.no_grad():
        c = pipe.vae.config
        lat = (pipe.vae.encode(batch["pixels"]).latent_dist.sample() - c.shift_factor) * c.scaling_factor
        emb, pooled, txt_ids = pipe.encode_prompt(batch["caption"], None, device="cpu")
    b, ch, h, w = lat.shape
    noise = torch.randn_like(lat)
    mu = (h // 2) * (w // 2) * (1.15 - 0.5) / (4096 - 256) + 0.5 - 256 * (1.15 - 0.5) / (4096 - 256)
    u = torch.sigmoid(torch.randn(b))
    s = (torch.exp(torch.tensor(mu)) / (torch.exp(torch.tensor(mu)) + (1 / u - 1))).view(-1, 1, 1, 1)
    noisy = FluxPipeline._pack_latents((1 - s) * lat + s * noise, b, ch, h, w)
    ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", lat.dtype)
    pred = tr(hidden_states=noisy, timestep=s.flatten(), guidance=torch.full((b,), 3.5), pooled_projections=pooled,
              encoder_hidden_states=emb, txt_ids=txt_ids, img_ids=ids).sample  # fmt: skip
    target = FluxPipeline._pack_latents(noise - lat, b, ch, h, w)
    return F.mse_loss(pred.float(), target.float())


def hand_round(t: Trainer, steps: int, family: str) -> float:
    from diffusers import DDPMScheduler

    pipe, model, opt = t.task.pipe, t.bare_model(), t.optimizer
    sched = DDPMScheduler.from_config(pipe.scheduler.config) if family == "sd15" else None
    loader = torch.utils.data.DataLoader(t.train_set, batch_size=t.opts["batch_size"], shuffle=True, drop_last=True,
                                         collate_fn=t.task.collate)  # fmt: skip
    it = itertools.chain.from_iterable(loader for _ in itertools.count())
    step = hand_step_sd if family == "sd15" else hand_step_flux
    return hand_loop_round(lambda: step(pipe, model, next(it), sched), opt, steps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", nargs="+", default=["sd15", "flux"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)  # more than the free cores makes torch spin
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="diffusion_bench_"))
    data = photos(tmp / "photos")
    for family in args.families:
        cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "diffusion" / f"{family}_lora.py", [
            f"model.pretrained={save_test_pipeline(family, tmp / family)}", f"data_root={data}", "model.dtype=float32",
            f"data.train.resolution={args.resolution}", "train.batch_size=2", "train.grad_accum=1",
            "train.max_steps=100000", "train.progress=False", "train.tensorboard=False", "train.log_every=0",
            "task.cache_dir=None", "task.caption_dropout=0.0", "task.samples.prompts=[]",
        ])  # fmt: skip
        t = Trainer(cfg, tmp / f"wd_{family}").setup()
        engine_round(t, 2), hand_round(t, 2, family)  # warm-up
        eng, hand = [], []
        for _ in range(args.rounds):
            eng.append(engine_round(t, args.steps))
            hand.append(hand_round(t, args.steps, family))
        e, h = statistics.median(eng), statistics.median(hand)
        print(f"[{family}] engine {e * 1000:.1f} ms/step, hand loop {h * 1000:.1f} ms/step, ratio {e / h:.3f} "
              f"(median of {args.rounds} rounds x {args.steps} steps, batch 2, {args.resolution}px, "
              f"{args.threads} threads)")  # fmt: skip


if __name__ == "__main__":
    main()
