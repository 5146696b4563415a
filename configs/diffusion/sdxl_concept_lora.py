# An SDXL U-Net concept LoRA (rank 16), per-component x depth LR (linear).
# Values from the per-component x depth recipe's example "SDXL -- Concept LoRA".
#   python tools/train.py configs/diffusion/sdxl_concept_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
# Everything but the example's values comes from its family base (configs/diffusion/_base_/sdxl.py). Show its LR grid
# (full-size model on the meta device, no weights):
#   python tools/show_lr.py configs/diffusion/sdxl_concept_lora.py --cfg-options model.device=meta
# The example's learning_rate is not set: with per_layer_lr enabled, component_lr and default_lr give every LR.
_base_ = "./_base_/sdxl.py"
policy = dict(
    type="lora_only",
    r=16,
    alpha=16,
    targets=["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"],
)  # the example gives rank/alpha
strategy = dict(
    _delete_=True,  # the example's LRs replace the family base's
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.00012, "cross_attn": 4e-05, "ffn": 8e-05, "norm": 1e-05},
    depth_strategy="linear",
    min_depth_factor=0.35,
    default_lr=8e-05,
)  # the example's per_layer_lr block verbatim
