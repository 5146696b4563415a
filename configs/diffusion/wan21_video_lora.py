# A WAN 2.1 T2V 14B video LoRA (rank 16), per-component x depth LR (cosine).
# Values from the per-component x depth recipe's example "WAN 2.1 -- Video LoRA (Dual-Stage)".
#   python tools/train.py configs/diffusion/wan21_video_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
# Everything but the example's values comes from its family base (configs/diffusion/_base_/wan.py). Show its LR grid
# (full-size model on the meta device, no weights):
#   python tools/show_lr.py configs/diffusion/wan21_video_lora.py --cfg-options model.device=meta
# The example's learning_rate is not set: with per_layer_lr enabled, component_lr and default_lr give every LR.
_base_ = "./_base_/wan.py"
model = dict(preset="wan21-t2v-14b")
policy = dict(
    type="lora_only", r=16, alpha=16, targets=["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
)  # the example gives rank/alpha
strategy = dict(
    _delete_=True,  # the example's LRs replace the family base's
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.0004, "cross_attn": 0.00015, "ffn": 0.00025, "norm": 3e-05},
    depth_strategy="cosine",
    min_depth_factor=0.25,
    default_lr=0.00025,
)  # the example's per_layer_lr block verbatim
