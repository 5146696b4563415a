# LoRA fine-tuning of an LTX-Video transformer (T5 text encoder, causal video VAE) on captioned videos (.mp4 + .txt),
# rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/ltx_video_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/videos
# model.pretrained is a local diffusers pipeline folder (LTXPipeline, pipeline.save_pretrained); the LoRA lands in
# <work_dir>/lora/ for pipeline.load_lora_weights(). Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/ltx_video_lora.py --cfg-options model.device=meta model.pretrained=None
_base_ = "./_base_/ltx_video.py"  # all of it: pipeline, LoRA, data, LRs, schedule and run length
