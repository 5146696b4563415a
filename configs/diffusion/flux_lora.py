# LoRA fine-tuning of a Flux.1 [dev] transformer on captioned images (.txt beside each, or metadata.jsonl), rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/flux_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/images
# model.pretrained is a local diffusers pipeline folder (pipeline.save_pretrained); the LoRA lands in
# <work_dir>/lora/ for pipeline.load_lora_weights(). Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/flux_lora.py --cfg-options model.device=meta model.pretrained=None
_base_ = "./_base_/flux.py"
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.0004, "cross_attn": 0.00015, "ffn": 0.00025, "norm": 3e-05},
    depth_strategy="inverted_u",
    min_depth_factor=0.4,
    peak_position=0.5,
    default_lr=0.00025,
)  # the shape of design note 001's Flux examples (its Flux.2 style LoRA, LRs scaled by 0.8)
