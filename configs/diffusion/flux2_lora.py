# LoRA fine-tuning of a Flux.2 transformer ([klein] 4B here; [dev] and [klein] 9B load the same way) on captioned images
# (.txt beside each, or metadata.jsonl), rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/flux2_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/images
# model.pretrained is a local diffusers pipeline folder (Flux2KleinPipeline or Flux2Pipeline, pipeline.save_pretrained);
# the LoRA lands in <work_dir>/lora/ for pipeline.load_lora_weights(). Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/flux2_lora.py --cfg-options model.device=meta model.pretrained=None
_base_ = "./_base_/flux2.py"
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.0005, "cross_attn": 0.00015, "ffn": 0.0003, "norm": 5e-05},
    depth_strategy="inverted_u",
    min_depth_factor=0.4,
    peak_position=0.5,
    default_lr=0.0003,
)  # design note 001's Flux.2 [klein] 4B style-LoRA LRs (configs/diffusion/flux2_klein4b_style_lora.py)
