# A Qwen-Image LoRA (rank 16), per-component x depth LR (linear).
# Values from the per-component x depth recipe's example "Qwen -- Image Generation LoRA".
# Show its LR grid (full-size model on the meta device, no weights):  python tools/show_lr.py configs/diffusion/qwen_image_lora.py
# From the example's JSON (model_type 'qwen'); `strategy` is its per_layer_lr block verbatim; the example's learning_rate (0.0002) is
# not set: with per_layer_lr enabled, component_lr and default_lr give every LR (lr is then an error).
model = dict(type="diffusers", preset="qwen-image", device="meta")
adapter = "auto"
# LoRA on the blocks' linear layers (peft target_modules: suffixes, or one full-match regex); the example gives only rank/alpha
policy = dict(
    type="lora_only",
    r=16,
    alpha=16,
    targets=[
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "add_q_proj",
        "add_k_proj",
        "add_v_proj",
        "to_add_out",
        "img_mlp.net.0.proj",
        "img_mlp.net.2",
        "txt_mlp.net.0.proj",
        "txt_mlp.net.2",
    ],
)
strategy = dict(
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.00025, "ffn": 0.00015, "norm": 2e-05},
    depth_strategy="linear",
    min_depth_factor=0.3,
    default_lr=0.00015,
)
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)  # the example gives no schedule: a common one
train = dict(max_steps=2000)
