# Sana (linear-attention DiT, Gemma-2 encoder, DC-AE): the family base. The pipeline, LoRA, data, default LRs (`strategy`),
# schedule and run length of every configs/diffusion/*.py with _base_ = "./_base_/sana.py"; one with LRs of its own
# sets strategy=dict(_delete_=True, ...).
#   python tools/train.py configs/diffusion/sana_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
model = dict(type="diffusers", preset="sana-1600m", pretrained=None, dtype="bfloat16")
task = dict(
    type="diffusion",
    lora=dict(r=16, alpha=16),  # the family's attention projections + 1x1 MLP convolutions (diffusion/families_more.py)
    caption_dropout=0.05,  # empty captions keep classifier-free guidance working
    cache_dir="work_dirs/cache",  # latents + text embeddings, keyed by file content, model and resolution
    samples=dict(prompts=["a photo of sks dog"], seeds=[0, 1], steps=20, guidance_scale=4.5),  # the pipeline's defaults
)
data = dict(train=dict(type="captioned_images", resolution=1024, flip_p=0.5))
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.0001, "cross_attn": 5e-05, "ffn": 0.0001, "norm": 2e-05},
    depth_strategy="cosine",
    min_depth_factor=0.3,
    default_lr=0.0001,
)  # pixart_lora.py's ratios (the same caption-DiT layout): a starting point chosen here, not measured
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)
train = dict(max_steps=2000, batch_size=1, grad_accum=4, clip_grad=1.0, ckpt_every=250, log_every=10)
