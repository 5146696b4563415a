# LoRA fine-tuning of a PixArt-Sigma transformer on captioned images (.txt beside each, or metadata.jsonl), rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/pixart_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/images
# model.pretrained is a local diffusers pipeline folder (pipeline.save_pretrained). diffusers has no LoRA loader for
# PixArt: the LoRA lands in <work_dir>/lora/ as a peft adapter (adapter_config.json + adapter_model.safetensors);
# load it with peft.inject_adapter_in_model(LoraConfig.from_pretrained(dir), pipe.transformer) and
# set_peft_model_state_dict. Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/pixart_lora.py --cfg-options model.device=meta model.pretrained=None
_base_ = "./_base_/pixart.py"  # all of it: pipeline, LoRA, data, LRs, schedule and run length
