# LoRA fine-tuning of a Flux.2 transformer ([klein] 4B here; [dev] and [klein] 9B load the same way) on captioned images
# (.txt beside each, or metadata.jsonl), rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/flux2_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/images
# model.pretrained is a local diffusers pipeline folder (Flux2KleinPipeline or Flux2Pipeline, pipeline.save_pretrained);
# the LoRA lands in <work_dir>/lora/ for pipeline.load_lora_weights(). Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/flux2_lora.py --cfg-options model.device=meta model.pretrained=None
_base_ = "./_base_/flux2.py"  # all of it: pipeline, LoRA, data, LRs, schedule and run length
