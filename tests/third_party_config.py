# A third-party model and adapter loaded through custom_imports (used by tests/test_zoo_diffusers.py).
# Show its LR grid:  python tools/show_lr.py tests/third_party_config.py
custom_imports = dict(imports=["tests.third_party_adapter"], allow_failed_imports=False)
model = dict(type="third_party_toy", dim=8, depth=3)
adapter = "auto"
strategy = dict(
    type="component_depth", component_lr=dict(self_attn=4e-4, ffn=2e-4), default_lr=1e-4, min_depth_factor=0.5
)
schedule = dict(type="constant")
train = dict(max_steps=10)
