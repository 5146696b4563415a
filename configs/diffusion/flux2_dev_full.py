# A full fine-tune of the Flux.2 [dev] transformer (no LoRA), per-component x depth LR (cosine).
# Values from the per-component x depth recipe's example "Flux 2 Dev -- Full Finetune".
# Show its LR grid (full-size model on the meta device, no weights):  python tools/show_lr.py configs/diffusion/flux2_dev_full.py
# From the example's JSON (model_type 'flux_2_dev'); `strategy` is its per_layer_lr block verbatim; the example's learning_rate (1e-05) is
# not set: with per_layer_lr enabled, component_lr and default_lr give every LR (lr is then an error).
model = dict(type="diffusers", preset="flux2-dev", device="meta")
adapter = "auto"
strategy = dict(
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 1.5e-05, "cross_attn": 5e-06, "ffn": 1e-05, "norm": 2e-06},
    depth_strategy="cosine",
    min_depth_factor=0.2,
    default_lr=1e-05,
)
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)  # the example gives no schedule: a common one
train = dict(max_steps=2000)
