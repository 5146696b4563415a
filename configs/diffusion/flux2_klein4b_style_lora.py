# A Flux.2 [klein] 4B style LoRA (rank 16), per-component x depth LR (inverted_u).
# Values from the per-component x depth recipe's example "Flux 2 Klein 4B -- Style LoRA".
# Show its LR grid (full-size model on the meta device, no weights):  python tools/show_lr.py configs/diffusion/flux2_klein4b_style_lora.py
# From the example's JSON (model_type 'flux_2_klein_4b'); `strategy` is its per_layer_lr block verbatim; the example's learning_rate (0.0004) is
# not set: with per_layer_lr enabled, component_lr and default_lr give every LR (lr is then an error).
model = dict(type="diffusers", preset="flux2-klein-4b", device="meta")
adapter = "auto"
# LoRA on the blocks' linear layers (peft target_modules: suffixes, or one full-match regex); the example gives only rank/alpha
policy = dict(
    type="lora_only",
    r=16,
    alpha=16,
    targets=r".*\.(?:attn\.(?:to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out|to_qkv_mlp_proj)|ff(?:_context)?\.linear_(?:in|out))|single_transformer_blocks\.\d+\.attn\.to_out",
)
strategy = dict(
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.0005, "cross_attn": 0.00015, "ffn": 0.0003, "norm": 5e-05},
    depth_strategy="inverted_u",
    min_depth_factor=0.4,
    peak_position=0.5,
    default_lr=0.0003,
)
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)  # the example gives no schedule: a common one
train = dict(max_steps=2000)
