# A HunyuanVideo LoRA (rank 16), per-component x depth LR (linear).
# Values from the per-component x depth recipe's example "HunyuanVideo -- Video LoRA".
#   python tools/train.py configs/diffusion/hunyuan_video_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/videos
# Everything but the example's values comes from its family base (configs/diffusion/_base_/hunyuan_video.py). Show its
# LR grid (full-size model on the meta device, no weights):
#   python tools/show_lr.py configs/diffusion/hunyuan_video_lora.py --cfg-options model.device=meta
# The example's learning_rate (0.0003) is not set: with per_layer_lr enabled, component_lr and default_lr give every LR.
_base_ = "./_base_/hunyuan_video.py"
task = dict(
    lora=dict(
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
            "ff.net.0.proj",
            "ff.net.2",
            "ff_context.net.0.proj",
            "ff_context.net.2",
            "proj_mlp",
        ],
    )  # fmt: skip
)  # the example gives rank/alpha; the targets are the blocks' linear layers
strategy = dict(
    _delete_=True,  # the example's LRs replace the family base's
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.00035, "ffn": 0.0002, "norm": 3e-05},
    depth_strategy="linear",
    min_depth_factor=0.25,
    default_lr=0.0002,
)  # the example's per_layer_lr block verbatim
