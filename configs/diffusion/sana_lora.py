# LoRA fine-tuning of a Sana transformer (Gemma-2 text encoder, DC-AE latents) on captioned images (.txt beside each, or
# metadata.jsonl), rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/sana_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/images
# model.pretrained is a local diffusers pipeline folder (SanaPipeline, pipeline.save_pretrained); the LoRA lands in
# <work_dir>/lora/ for pipeline.load_lora_weights(). Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/sana_lora.py --cfg-options model.device=meta model.pretrained=None
_base_ = "./_base_/sana.py"  # all of it: pipeline, LoRA, data, LRs, schedule and run length
