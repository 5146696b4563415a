# LoRA fine-tuning of an SDXL U-Net on captioned images (.txt beside each, or metadata.jsonl), rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/sdxl_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/images
# model.pretrained is a local diffusers pipeline folder (pipeline.save_pretrained); the LoRA lands in
# <work_dir>/lora/ for pipeline.load_lora_weights(). Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/sdxl_lora.py --cfg-options model.device=meta model.pretrained=None
_base_ = "./_base_/sdxl.py"
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.00012, "cross_attn": 4e-05, "ffn": 8e-05, "norm": 1e-05},
    depth_strategy="linear",
    min_depth_factor=0.35,
    default_lr=8e-05,
)  # design note 001's SDXL concept-LoRA LRs
