# LoRA fine-tuning of an SD3 / SD3.5 MMDiT on captioned images (.txt beside each, or metadata.jsonl), rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/sd3_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/images
# model.pretrained is a local diffusers pipeline folder (pipeline.save_pretrained); the LoRA lands in
# <work_dir>/lora/ for pipeline.load_lora_weights(). Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/sd3_lora.py --cfg-options model.device=meta model.pretrained=None
_base_ = "./_base_/sd3.py"
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.00025, "ffn": 0.00015, "norm": 3e-05},
    depth_strategy="cosine",
    min_depth_factor=0.3,
    default_lr=0.00015,
)  # design note 001's SD 3.5 style-LoRA LRs
