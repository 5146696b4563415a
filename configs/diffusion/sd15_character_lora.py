# An SD 1.5 U-Net character LoRA (rank 8), per-component x depth LR (inverted_u).
# Values from the per-component x depth recipe's example "SD 1.5 -- Character LoRA".
#   python tools/train.py configs/diffusion/sd15_character_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
# Everything but the example's values comes from its family base (configs/diffusion/_base_/sd15.py). Show its LR grid
# (full-size model on the meta device, no weights):
#   python tools/show_lr.py configs/diffusion/sd15_character_lora.py --cfg-options model.device=meta
# The example's learning_rate is not set: with per_layer_lr enabled, component_lr and default_lr give every LR.
_base_ = "./_base_/sd15.py"
policy = dict(
    type="lora_only",
    r=8,
    alpha=8,
    targets=["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"],
)  # the example gives rank/alpha
strategy = dict(
    _delete_=True,  # the example's LRs replace the family base's
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.00015, "cross_attn": 5e-05, "ffn": 0.0001, "norm": 2e-05},
    depth_strategy="inverted_u",
    min_depth_factor=0.3,
    peak_position=0.4,
    default_lr=0.0001,
)  # the example's per_layer_lr block verbatim
