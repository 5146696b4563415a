# SDXL LoRA on the U-Net and both CLIP text encoders (kohya's lora_te1_ / lora_te2_ modules; diffusers'
# train_dreambooth_lora_sdxl.py --train_text_encoder), each encoder at its own LR (kohya's text_encoder_lr).
#   python tools/train.py configs/diffusion/sdxl_lora_te.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/images
# The LoRA lands in <work_dir>/lora/ with unet. / text_encoder. / text_encoder_2. tensors for
# StableDiffusionXLPipeline.load_lora_weights(). Show the LR grid (both encoders' rows too) without weights:
#   python tools/show_lr.py configs/diffusion/sdxl_lora_te.py --cfg-options model.device=meta
_base_ = "./_base_/sdxl.py"
# diffusers' defaults (q_proj / k_proj / v_proj / out_proj, the U-Net's rank and alpha, as kohya's one network_dim);
# dict(r=, alpha=, targets=[..., "fc1", "fc2"]) sets them (kohya also wraps CLIPMLP)
policy = dict(text_encoder=True)
task = dict(cache_dir=None)  # the prompt goes through the training encoders every step: no text-embedding cache
# kohya --text_encoder_lr 4e-5 (the U-Net's cross-attention LR here): one entry per encoder
strategy = dict(component_lr={"text_encoder": 4e-05, "text_encoder_2": 4e-05})
