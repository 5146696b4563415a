# An LTX-2 video LoRA (rank 16), every linear layer of the blocks, per-component x depth LR (linear).
# Values from the per-component x depth recipe's example "LTX-2 -- Video LoRA with Stagehand".
# Show its LR grid (full-size model on the meta device, no weights):  python tools/show_lr.py configs/diffusion/ltx2_video_lora.py
# From the example's JSON (model_type 'ltx2'); `strategy` is its per_layer_lr block verbatim; the example's learning_rate (0.0003) is
# not set: with per_layer_lr enabled, component_lr and default_lr give every LR (lr is then an error).
model = dict(type="diffusers", preset="ltx2", device="meta")
adapter = "auto"
# LoRA on the blocks' linear layers (peft target_modules: suffixes, or one full-match regex); the example gives only rank/alpha
policy = dict(
    type="lora_only",
    r=16,
    alpha=16,
    targets=["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"],
)
strategy = dict(
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.0004, "ffn": 0.00025, "norm": 3e-05},
    depth_strategy="linear",
    min_depth_factor=0.2,
    default_lr=0.00025,
)
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)  # the example gives no schedule: a common one
train = dict(max_steps=2000)
