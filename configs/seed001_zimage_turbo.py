# Seed 001 example "ZImage -- Turbo LoRA": a Z-Image Turbo LoRA (rank 16), per-component x depth LR (inverted_u).
# Show its LR grid (full-size model on the meta device, no weights):  python tools/show_lr.py configs/seed001_zimage_turbo.py
# From seed 001's JSON (model_type 'zimage'); `recipe` is its per_layer_lr block verbatim, lr = learning_rate.
model = dict(type="diffusers", preset="zimage-turbo", device="meta")
adapter = "auto"
# LoRA on the blocks' linear layers (peft target_modules: suffixes, or one full-match regex); seed 001 gives only rank/alpha
policy = dict(
    type="lora_only", r=16, alpha=16, targets=["to_q", "to_k", "to_v", "to_out.0", "w1", "w2", "w3"]
)
recipe = dict(
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.0004, "ffn": 0.00025, "norm": 3e-05},
    depth_strategy="inverted_u",
    min_depth_factor=0.35,
    peak_position=0.45,
    default_lr=0.00025,
    lr=0.0003,
)
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)  # the seed gives no schedule: a common one
train = dict(max_steps=2000)
