# LoRA fine-tuning of one expert of a Wan 2.2 text-to-video pipeline (T2V-A14B: two 14B experts split at
# boundary_ratio 0.875) on captioned videos (.mp4 + .txt), rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/wan22_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/videos
# task.expert names the expert: "transformer" (high noise: timesteps >= 875, layout and motion) or
# "transformer_2" (low noise: detail); each run trains one, on its own timesteps only, as musubi-tuner does.
# The LoRA lands in <work_dir>/lora/: pipeline.load_lora_weights(dir) for "transformer",
# load_lora_weights(dir, load_into_transformer_2=True) for "transformer_2". Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/wan22_lora.py --cfg-options model.device=meta model.pretrained=None
_base_ = "./_base_/wan22.py"  # all of it: pipeline, LoRA, data, LRs, schedule and run length
