# Qwen-Image (MMDiT, Qwen2.5-VL encoder, 3D VAE): the family base. The pipeline, LoRA, data, default LRs (`strategy`),
# schedule and run length of every configs/diffusion/*.py with _base_ = "./_base_/qwen_image.py"; one with LRs of its
# own sets strategy=dict(_delete_=True, ...).
#   python tools/train.py configs/diffusion/qwen_image_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
model = dict(type="diffusers", preset="qwen-image", pretrained=None, dtype="bfloat16")
task = dict(
    type="diffusion",
    lora=dict(r=16, alpha=16),  # the family's attention + MLP projections (recipes/train/diffusion/families_more.py)
    caption_dropout=0.05,  # empty captions keep classifier-free guidance working
    cache_dir="work_dirs/cache",  # latents + text embeddings, keyed by file content, model and resolution
    # the pipeline's defaults: 50 steps, true classifier-free guidance 4.0 (its `true_cfg_scale`)
    samples=dict(prompts=["a photo of sks dog"], seeds=[0, 1], steps=50, guidance_scale=4.0),
)
data = dict(train=dict(type="captioned_images", resolution=1024, flip_p=0.5))
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.00025, "ffn": 0.00015, "norm": 2e-05},
    depth_strategy="linear",
    min_depth_factor=0.3,
    default_lr=0.00015,
)  # the recipe's Qwen-Image LoRA LRs (configs/diffusion/qwen_image_lora.py)
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)
train = dict(max_steps=2000, batch_size=1, grad_accum=4, clip_grad=1.0, ckpt_every=250, log_every=10)
