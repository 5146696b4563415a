# LoRA fine-tuning of a Chroma transformer (Flux.1 layout, one T5 encoder) on captioned images (.txt beside each, or
# metadata.jsonl), rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/chroma_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/images
# model.pretrained is a local diffusers pipeline folder (ChromaPipeline, pipeline.save_pretrained); the LoRA lands in
# <work_dir>/lora/ for pipeline.load_lora_weights(). Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/chroma_lora.py --cfg-options model.device=meta model.pretrained=None
_base_ = "./_base_/chroma.py"
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.0004, "ffn": 0.0002, "norm": 3e-05},
    depth_strategy="cosine",
    min_depth_factor=0.3,
    default_lr=0.0002,
)  # design note 001's Chroma artistic-LoRA LRs (configs/diffusion/chroma_artistic_lora.py)
