# A Flux.2 [klein] 9B subject LoRA (rank 32), per-component x depth LR (linear).
# Values from the per-component x depth recipe's example "Flux 2 Klein 9B -- Subject LoRA".
#   python tools/train.py configs/diffusion/flux2_klein9b_subject_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
# Everything but the example's values comes from its family base (configs/diffusion/_base_/flux2.py). Show its LR grid
# (full-size model on the meta device, no weights):
#   python tools/show_lr.py configs/diffusion/flux2_klein9b_subject_lora.py --cfg-options model.device=meta
# The example's learning_rate is not set: with per_layer_lr enabled, component_lr and default_lr give every LR.
_base_ = "./_base_/flux2.py"
model = dict(preset="flux2-klein-9b")
policy = dict(
    type="lora_only",
    r=32,
    alpha=32,
    targets=".*\\.(?:attn\\.(?:to_[qkv]|to_out\\.0|add_[qkv]_proj|to_add_out|to_qkv_mlp_proj)|ff(?:_context)?\\.linear_(?:in|out))|single_transformer_blocks\\.\\d+\\.attn\\.to_out",
)  # the example gives rank/alpha
strategy = dict(
    _delete_=True,  # the example's LRs replace the family base's
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.0004, "cross_attn": 0.0001, "ffn": 0.00025, "norm": 3e-05},
    depth_strategy="linear",
    min_depth_factor=0.3,
    default_lr=0.00025,
)  # the example's per_layer_lr block verbatim
