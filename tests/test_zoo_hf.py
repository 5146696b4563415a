"""The generic transformers adapter (``hf``) on 23 real transformers classes, tiny configs on the meta device.

Per class: ``adapter='auto'`` picks ``hf`` (the family adapters keep their classes), every parameter
has a layer id and a component, the depth is the config's, a few names sit where the table says,
and weight decay per parameter equals transformers' own ``Trainer.get_decay_parameter_names``.
"""

from __future__ import annotations

import functools

import pytest
import torch

from recipes.param_groups import build_param_groups, resolve_adapter

T = pytest.importorskip("transformers")

_V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
_TXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=99)
_LM = dict(_TXT, num_key_value_heads=1)
_STAGES = dict(image_size=32, patch_size=4, embed_dim=8, depths=[1, 2], num_heads=[1, 2], window_size=2)
_DEC = dict(
    decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=32
)

# class -> (config class, config kwargs, N blocks, [(name, layer id, component), ...])
CASES = {
    "DeiTForImageClassification": ("DeiTConfig", _V, 2, [
        ("deit.embeddings.cls_token", 0, "embed"), ("deit.layers.0.attention.q_proj.weight", 1, "self_attn"),
        ("deit.layers.1.mlp.fc1.weight", 2, "ffn"), ("classifier.weight", 3, "head")]),
    "BeitForImageClassification": ("BeitConfig", dict(_V, use_relative_position_bias=True, layer_scale_init_value=0.1), 2, [
        ("beit.embeddings.cls_token", 0, "embed"), ("beit.layers.0.lambda_1", 1, "self_attn"),
        ("beit.layers.0.relative_position_bias.relative_position_bias_table", 1, "self_attn"),
        ("beit.layers.1.lambda_2", 2, "ffn"), ("beit.pooler.layernorm.weight", 3, "norm"), ("classifier.bias", 3, "head")]),
    "SwinForImageClassification": ("SwinConfig", _STAGES, 3, [
        ("swin.embeddings.patch_embeddings.projection.weight", 0, "embed"),
        ("swin.encoder.layers.0.blocks.0.attention.q_proj.weight", 1, "self_attn"),
        ("swin.encoder.layers.0.downsample.reduction.weight", 1, "downsample"),
        ("swin.encoder.layers.1.blocks.1.mlp.fc2.weight", 3, "ffn"), ("classifier.weight", 4, "head")]),
    "Swinv2Model": ("Swinv2Config", _STAGES, 3, [
        ("encoder.layers.0.blocks.0.attention.self.logit_scale", 1, "self_attn"),
        ("encoder.layers.1.blocks.0.intermediate.dense.weight", 2, "ffn"), ("layernorm.weight", 4, "norm")]),
    "ConvNextForImageClassification": ("ConvNextConfig", dict(hidden_sizes=[8, 16], depths=[1, 2], num_stages=2), 3, [
        ("convnext.embeddings.patch_embeddings.weight", 0, "embed"),
        ("convnext.encoder.stages.0.layers.0.dwconv.weight", 1, "conv"),
        ("convnext.encoder.stages.1.downsampling_layer.1.weight", 1, "downsample"),
        ("convnext.encoder.stages.1.layers.1.pwconv1.weight", 3, "ffn"), ("classifier.weight", 4, "head")]),
    "ConvNextV2Model": ("ConvNextV2Config", dict(hidden_sizes=[8, 16], depths=[1, 2], num_stages=2), 3, [
        ("encoder.stages.0.layers.0.grn.weight", 1, "ffn"), ("layernorm.weight", 4, "norm")]),
    "CLIPVisionModel": ("CLIPVisionConfig", _V, 2, [
        ("embeddings.class_embedding", 0, "embed"), ("pre_layrnorm.weight", 0, "embed"),
        ("encoder.layers.0.self_attn.k_proj.weight", 1, "self_attn"), ("post_layernorm.bias", 3, "norm")]),
    "CLIPTextModel": ("CLIPTextConfig", _TXT, 2, [
        ("embeddings.token_embedding.weight", 0, "embed"), ("encoder.layers.1.mlp.fc1.weight", 2, "ffn")]),
    "SiglipVisionModel": ("SiglipVisionConfig", _V, 2, [
        ("encoder.layers.0.layer_norm1.weight", 1, "norm"), ("head.probe", 3, "head")]),
    "ViTMAEModel": ("ViTMAEConfig", _V, 2, [("layers.0.attention.q_proj.weight", 1, "self_attn")]),
    "ViTMAEForPreTraining": ("ViTMAEConfig", dict(_V, **_DEC), 3, [
        ("vit.layernorm.weight", 2, "norm"), ("decoder.decoder_embed.weight", 2, "embed"),
        ("decoder.decoder_layers.0.mlp.fc1.weight", 3, "ffn"), ("decoder.decoder_pred.weight", 4, "head")]),
    "VideoMAEForPreTraining": ("VideoMAEConfig", dict(_V, num_frames=4, tubelet_size=2, **_DEC), 3, [
        ("videomae.encoder.layer.0.attention.attention.query.weight", 1, "self_attn"),
        ("videomae.encoder.layer.1.output.dense.weight", 2, "ffn"), ("encoder_to_decoder.weight", 2, "block"),
        ("decoder.head.weight", 4, "head")]),
    "BertModel": ("BertConfig", _TXT, 2, [
        ("embeddings.word_embeddings.weight", 0, "embed"), ("encoder.layer.0.attention.output.dense.weight", 1, "self_attn"),
        ("encoder.layer.0.output.dense.weight", 1, "ffn"), ("encoder.layer.0.output.LayerNorm.weight", 1, "norm"),
        ("pooler.dense.weight", 3, "head")]),
    "BertForSequenceClassification": ("BertConfig", _TXT, 2, [("classifier.weight", 3, "head")]),
    "RobertaModel": ("RobertaConfig", _TXT, 2, [("encoder.layer.1.intermediate.dense.weight", 2, "ffn")]),
    "DistilBertModel": ("DistilBertConfig", dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=99), 2, [
        ("transformer.layer.0.attention.q_lin.weight", 1, "self_attn"), ("transformer.layer.0.ffn.lin1.weight", 1, "ffn")]),
    "LlamaForCausalLM": ("LlamaConfig", _LM, 2, [
        ("model.embed_tokens.weight", 0, "embed"), ("model.layers.0.input_layernorm.weight", 1, "norm"),
        ("model.layers.1.mlp.gate_proj.weight", 2, "ffn"), ("model.norm.weight", 3, "norm"), ("lm_head.weight", 3, "head")]),
    "Qwen2ForCausalLM": ("Qwen2Config", _LM, 2, [("model.layers.0.self_attn.q_proj.bias", 1, "self_attn")]),
    "MistralForCausalLM": ("MistralConfig", _LM, 2, [("model.layers.1.self_attn.o_proj.weight", 2, "self_attn")]),
    "T5EncoderModel": ("T5Config", dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2, vocab_size=99), 2, [
        ("shared.weight", 0, "embed"),
        ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 1, "self_attn"),
        ("encoder.block.1.layer.1.DenseReluDense.wo.weight", 2, "ffn"), ("encoder.final_layer_norm.weight", 3, "norm")]),
    "GPT2LMHeadModel": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=2, vocab_size=99), 2, [
        ("transformer.wpe.weight", 0, "embed"), ("transformer.h.0.ln_1.weight", 1, "norm"),
        ("transformer.h.1.mlp.c_proj.weight", 2, "ffn"), ("transformer.ln_f.weight", 3, "norm")]),
    "ResNetModel": ("ResNetConfig", dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2]), 3, [
        ("embedder.embedder.convolution.weight", 0, "embed"),
        ("encoder.stages.1.layers.0.shortcut.convolution.weight", 2, "downsample"),
        ("encoder.stages.1.layers.1.layer.0.convolution.weight", 3, "conv")]),
    "Wav2Vec2Model": ("Wav2Vec2Config", dict(_TXT, conv_dim=(8, 8), conv_kernel=(3, 3), conv_stride=(2, 2),
                                              num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2), 2, [
        ("feature_extractor.conv_layers.0.conv.weight", 0, "embed"),
        ("encoder.layers.0.feed_forward.intermediate_dense.weight", 1, "ffn")]),
}  # fmt: skip


@functools.cache
def tiny(cls: str) -> torch.nn.Module:
    config, kwargs = CASES[cls][0], CASES[cls][1]
    with torch.device("meta"):
        return getattr(T, cls)(getattr(T, config)(**kwargs))


def _per_param(groups) -> dict[str, tuple[float, float]]:
    return {n: (g["lr_scale"], g["weight_decay"]) for g in groups for n in g["param_names"]}


@pytest.mark.parametrize("cls", sorted(CASES))
def test_hf_adapter_places_every_parameter(cls):
    model = tiny(cls)
    adapter = resolve_adapter(model)
    assert adapter.name == "hf"
    mmap = adapter.describe(model)
    assert mmap.unmatched == [] and len(mmap.params) == sum(1 for _ in model.parameters())
    assert mmap.num_layers == CASES[cls][2]
    for name, layer_id, component in CASES[cls][3]:
        info = mmap.params[name]
        assert (info.layer_id, info.component) == (layer_id, component), name


@pytest.mark.parametrize("cls", sorted(CASES))
def test_hf_weight_decay_equals_trainer(cls):
    model = tiny(cls)
    # Trainer.get_decay_parameter_names reads only its argument (transformers 5.24), so no Trainer is built
    decay = set(T.Trainer.get_decay_parameter_names(None, model))
    groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5, weight_decay=0.1))
    got = {n: wd > 0 for n, (_, wd) in _per_param(groups).items()}
    assert got == {n: n in decay for n, p in model.named_parameters() if p.requires_grad}


def test_llama_layer_decay_table():
    """The explicit table: 2 blocks, decay 0.5: embeddings 0.5**3, block i 0.5**(2-i), final norm and head 1."""
    got = _per_param(
        build_param_groups(tiny("LlamaForCausalLM"), dict(type="layer_decay", lr=1.0, decay=0.5, weight_decay=0.1))
    )
    expected = {
        "model.embed_tokens.weight": (0.125, 0.1),
        "model.norm.weight": (1.0, 0.0),
        "lm_head.weight": (1.0, 0.1),
    }
    for i, scale in ((0, 0.25), (1, 0.5)):
        b = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            expected[b + f"self_attn.{proj}.weight"] = (scale, 0.1)
        for proj in ("gate_proj", "up_proj", "down_proj"):
            expected[b + f"mlp.{proj}.weight"] = (scale, 0.1)
        expected[b + "input_layernorm.weight"] = expected[b + "post_attention_layernorm.weight"] = (scale, 0.0)
    assert got == expected


def test_hf_decay_rule_keeps_1d_tensors_and_strategy_patterns_act():
    """CLIP's class_embedding (1-D) decays as in transformers; a strategy's no_decay pattern still applies."""
    model = tiny("CLIPVisionModel")
    base = dict(type="flat", lr=1.0, weight_decay=0.1)
    assert _per_param(build_param_groups(model, base))["embeddings.class_embedding"] == (1.0, 0.1)
    got = _per_param(build_param_groups(model, dict(base, no_decay=[r"class_embedding"])))
    assert got["embeddings.class_embedding"] == (1.0, 0.0)
    assert got["encoder.layers.0.self_attn.k_proj.weight"] == (1.0, 0.1)


def test_component_lrs_on_a_hierarchical_model():
    """component_scale reaches the conv / ffn / downsample parts of HF ConvNeXt."""
    model = tiny("ConvNextForImageClassification")
    strategy = dict(type="layer_decay", lr=1.0, decay=1.0, component_scale={"conv": 0.5, "downsample": 0.25})
    got = _per_param(build_param_groups(model, strategy))
    assert got["convnext.encoder.stages.0.layers.0.dwconv.weight"][0] == 0.5
    assert got["convnext.encoder.stages.1.downsampling_layer.1.weight"][0] == 0.25
    assert got["convnext.encoder.stages.0.layers.0.pwconv1.weight"][0] == 1.0


def test_family_adapters_keep_their_classes():
    def build(cls, config, **kw):
        with torch.device("meta"):
            return getattr(T, cls)(getattr(T, config)(**kw))

    assert resolve_adapter(build("ViTModel", "ViTConfig", **_V)).name == "hf_vit"
    assert resolve_adapter(build("Dinov2Model", "Dinov2Config", **_V)).name == "dinov2_hf"
    video = dict(_V, num_frames=4, tubelet_size=2)
    assert resolve_adapter(build("VideoMAEModel", "VideoMAEConfig", **video)).name == "videomae"
    assert resolve_adapter(build("VideoMAEForPreTraining", "VideoMAEConfig", **video, **_DEC)).name == "hf"


def test_lora_tensors_take_the_wrapped_layer():
    from peft import LoraConfig, inject_adapter_in_model

    with torch.device("meta"):
        model = T.LlamaForCausalLM(T.LlamaConfig(**_LM))
        inject_adapter_in_model(LoraConfig(r=2, target_modules=["q_proj", "down_proj"]), model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    strategy = dict(type="layer_decay", lr=1.0, decay=0.5, loraplus_ratio=4.0)
    got = _per_param(build_param_groups(model, strategy))
    assert len(got) == 8  # 2 blocks x 2 targets x (A, B)
    assert got["model.layers.0.self_attn.q_proj.lora_A.default.weight"] == (0.25, 0.0)
    assert got["model.layers.1.mlp.down_proj.lora_B.default.weight"] == (2.0, 0.0)


def test_decides_decay_switches_the_engine_rule_off():
    """With decides_decay=False the engine's 1-D rule wins again: class_embedding loses its weight decay."""
    from zoo.hf_generic import HFGeneric

    engine_rule = type("EngineRuleHF", (HFGeneric,), {"decides_decay": False})()
    model, strategy = tiny("CLIPVisionModel"), dict(type="flat", lr=1.0, weight_decay=0.1)
    assert _per_param(build_param_groups(model, strategy, HFGeneric()))["embeddings.class_embedding"][1] == 0.1
    assert _per_param(build_param_groups(model, strategy, engine_rule))["embeddings.class_embedding"][1] == 0.0
