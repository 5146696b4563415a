# A Chroma artistic LoRA (rank 16), per-component x depth LR (cosine).
# Values from the per-component x depth recipe's example "Chroma -- Artistic LoRA".
#   python tools/train.py configs/diffusion/chroma_artistic_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
# Everything but the example's values comes from its family base (configs/diffusion/_base_/chroma.py). Show its LR grid
# (full-size model on the meta device, no weights):
#   python tools/show_lr.py configs/diffusion/chroma_artistic_lora.py --cfg-options model.device=meta
# The example's learning_rate is not set: with per_layer_lr enabled, component_lr and default_lr give every LR.
_base_ = "./_base_/chroma.py"
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
        "ff.net.0.proj",
        "ff.net.2",
        "ff_context.net.0.proj",
        "ff_context.net.2",
        "proj_mlp",
    ],
)  # the example gives rank/alpha
strategy = dict(
    _delete_=True,  # the example's LRs replace the family base's
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.0004, "ffn": 0.0002, "norm": 3e-05},
    depth_strategy="cosine",
    min_depth_factor=0.3,
    default_lr=0.0002,
)  # the example's per_layer_lr block verbatim
