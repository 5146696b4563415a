# LoRA fine-tuning of an LTX-2 transformer's video stream (Gemma-3 text encoder, LTX-2 video VAE) on captioned videos
# (.mp4 + .txt), rank 16, per-component x depth LRs; the audio stream is left as released (docs/diffusion.md).
#   python tools/train.py configs/diffusion/ltx2_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/videos
# model.pretrained is a local diffusers pipeline folder (LTX2Pipeline, pipeline.save_pretrained); the LoRA lands in
# <work_dir>/lora/ for pipeline.load_lora_weights(). Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/ltx2_lora.py --cfg-options model.device=meta
_base_ = "./_base_/ltx2.py"  # all of it: pipeline, LoRA, data, LRs, schedule and run length
