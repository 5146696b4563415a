# A Z-Image Turbo LoRA (rank 16), per-component x depth LR (inverted_u).
# Values from the per-component x depth recipe's example "ZImage -- Turbo LoRA".
#   python tools/train.py configs/diffusion/zimage_turbo_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
# Everything but the example's values comes from its family base (configs/diffusion/_base_/zimage.py). Show its LR grid
# (full-size model on the meta device, no weights):
#   python tools/show_lr.py configs/diffusion/zimage_turbo_lora.py --cfg-options model.device=meta
# The example's learning_rate is not set: with per_layer_lr enabled, component_lr and default_lr give every LR.
_base_ = "./_base_/zimage.py"
policy = dict(
    type="lora_only", r=16, alpha=16, targets=["to_q", "to_k", "to_v", "to_out.0", "w1", "w2", "w3"]
)  # the example gives rank/alpha
strategy = dict(
    _delete_=True,  # the example's LRs replace the family base's
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.0004, "ffn": 0.00025, "norm": 3e-05},
    depth_strategy="inverted_u",
    min_depth_factor=0.35,
    peak_position=0.45,
    default_lr=0.00025,
)  # the example's per_layer_lr block verbatim
