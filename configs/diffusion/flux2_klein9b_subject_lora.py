# A Flux.2 [klein] 9B subject LoRA (rank 32), per-component x depth LR (linear).
# Values from the per-component x depth recipe's example "Flux 2 Klein 9B -- Subject LoRA".
# Show its LR grid (full-size model on the meta device, no weights):  python tools/show_lr.py configs/diffusion/flux2_klein9b_subject_lora.py
# From the example's JSON (model_type 'flux_2_klein_9b'); `strategy` is its per_layer_lr block verbatim; the example's learning_rate (0.0004) is
# not set: with per_layer_lr enabled, component_lr and default_lr give every LR (lr is then an error).
model = dict(type="diffusers", preset="flux2-klein-9b", device="meta")
adapter = "auto"
# LoRA on the blocks' linear layers (peft target_modules: suffixes, or one full-match regex); the example gives only rank/alpha
policy = dict(
    type="lora_only",
    r=32,
    alpha=32,
    targets=r".*\.(?:attn\.(?:to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out|to_qkv_mlp_proj)|ff(?:_context)?\.linear_(?:in|out))|single_transformer_blocks\.\d+\.attn\.to_out",
)
strategy = dict(
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.0004, "cross_attn": 0.0001, "ffn": 0.00025, "norm": 3e-05},
    depth_strategy="linear",
    min_depth_factor=0.3,
    default_lr=0.00025,
)
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)  # the example gives no schedule: a common one
train = dict(max_steps=2000)
