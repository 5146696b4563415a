# A Flux.2 [klein] 4B style LoRA (rank 16), per-component x depth LR (inverted_u).
# Values from the per-component x depth recipe's example "Flux 2 Klein 4B -- Style LoRA".
#   python tools/train.py configs/diffusion/flux2_klein4b_style_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
# Everything but the example's values comes from its family base (configs/diffusion/_base_/flux2.py). Show its LR grid
# (full-size model on the meta device, no weights):
#   python tools/show_lr.py configs/diffusion/flux2_klein4b_style_lora.py --cfg-options model.device=meta
# The example's learning_rate is not set: with per_layer_lr enabled, component_lr and default_lr give every LR.
_base_ = "./_base_/flux2.py"
policy = dict(
    type="lora_only",
    r=16,
    alpha=16,
    targets=".*\\.(?:attn\\.(?:to_[qkv]|to_out\\.0|add_[qkv]_proj|to_add_out|to_qkv_mlp_proj)|ff(?:_context)?\\.linear_(?:in|out))|single_transformer_blocks\\.\\d+\\.attn\\.to_out",
)  # the example gives rank/alpha
strategy = dict(
    _delete_=True,  # the example's LRs replace the family base's
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.0005, "cross_attn": 0.00015, "ffn": 0.0003, "norm": 5e-05},
    depth_strategy="inverted_u",
    min_depth_factor=0.4,
    peak_position=0.5,
    default_lr=0.0003,
)  # the example's per_layer_lr block verbatim
