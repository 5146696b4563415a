# Flux.2 [klein] / [dev] (flow matching): the family base. The pipeline, LoRA, data, default LRs (`strategy`), schedule
# and run length of every configs/diffusion/*.py with _base_ = "./_base_/flux2.py"; one with LRs of its own
# sets strategy=dict(_delete_=True, ...).
#   python tools/train.py configs/diffusion/flux2_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
model = dict(type="diffusers", preset="flux2-klein-4b", pretrained=None, dtype="bfloat16")
# what trains (the one switch of every task): LoRA on the family's attention + MLP projections
# (recipes/train/diffusion/families.py); kind='lokr' / 'loha' for LyCORIS, type='full' for every weight
policy = dict(type="lora_only", r=16, alpha=16)
task = dict(
    type="diffusion",
    caption_dropout=0.05,  # empty captions keep classifier-free guidance working ([klein] samples with it)
    cache_dir="work_dirs/cache",  # latents + text embeddings, keyed by file content, model and resolution
    samples=dict(prompts=["a photo of sks dog"], seeds=[0, 1], steps=50, guidance_scale=4.0),
)
data = dict(train=dict(type="captioned_images", resolution=1024, flip_p=0.5))
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.0005, "cross_attn": 0.00015, "ffn": 0.0003, "norm": 5e-05},
    depth_strategy="inverted_u",
    min_depth_factor=0.4,
    peak_position=0.5,
    default_lr=0.0003,
)  # the recipe's Flux.2 [klein] 4B style-LoRA LRs (configs/diffusion/flux2_klein4b_style_lora.py)
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)
train = dict(max_steps=2000, batch_size=1, grad_accum=4, clip_grad=1.0, ckpt_every=250, log_every=10)
