# A Qwen-Image LoRA (rank 16), per-component x depth LR (linear).
# Values from the per-component x depth recipe's example "Qwen -- Image Generation LoRA".
#   python tools/train.py configs/diffusion/qwen_image_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
# Everything but the example's values comes from its family base (configs/diffusion/_base_/qwen_image.py). Show its LR
# grid (full-size model on the meta device, no weights):
#   python tools/show_lr.py configs/diffusion/qwen_image_lora.py --cfg-options model.device=meta
# The example's learning_rate (0.0002) is not set: with per_layer_lr enabled, component_lr and default_lr give every LR.
_base_ = "./_base_/qwen_image.py"
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
            "img_mlp.net.0.proj",
            "img_mlp.net.2",
            "txt_mlp.net.0.proj",
            "txt_mlp.net.2",
        ],
    )  # fmt: skip
)  # the example gives rank/alpha; the targets are the blocks' linear layers
strategy = dict(
    _delete_=True,  # the example's LRs replace the family base's
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.00025, "ffn": 0.00015, "norm": 2e-05},
    depth_strategy="linear",
    min_depth_factor=0.3,
    default_lr=0.00015,
)  # the example's per_layer_lr block verbatim
