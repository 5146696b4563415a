# Seed 001 example "Flux 2 Klein 9B -- Subject LoRA": a Flux.2 [klein] 9B subject LoRA (rank 32), per-component x depth LR (linear).
# Show its LR grid (full-size model on the meta device, no weights):  python tools/show_lr.py configs/seed001_flux2_klein9b_subject.py
# From seed 001's JSON (model_type 'flux_2_klein_9b'); `recipe` is its per_layer_lr block verbatim, lr = learning_rate.
model = dict(type="diffusers", preset="flux2-klein-9b", device="meta")
adapter = "auto"
# LoRA on the blocks' linear layers (peft target_modules: suffixes, or one full-match regex); seed 001 gives only rank/alpha
policy = dict(
    type="lora_only",
    r=32,
    alpha=32,
    targets=r".*\.(?:attn\.(?:to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out|to_qkv_mlp_proj)|ff(?:_context)?\.linear_(?:in|out))|single_transformer_blocks\.\d+\.attn\.to_out",
)
recipe = dict(
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.0004, "cross_attn": 0.0001, "ffn": 0.00025, "norm": 3e-05},
    depth_strategy="linear",
    min_depth_factor=0.3,
    default_lr=0.00025,
    lr=0.0004,
)
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)  # the seed gives no schedule: a common one
train = dict(max_steps=2000)
