"""Detection: VOC/CSV -> COCO, the COCO dataset's bad-input handling, and RF-DETR steps on the raccoon set.

Models are the real ``rfdetr`` classes with random weights at a small resolution on CPU.
"""

from __future__ import annotations

import json
import logging
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from recipes.train.data.coco_detection import CocoDetection, load_coco
from recipes.train.metrics.coco import coco_map
from recipes.train.registry import TASKS
from tools import voc2coco

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: faster than two on a shared 2-core machine (no oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def raccoon(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The raccoon archive unpacked: images/, annotations/, data/."""
    out = tmp_path_factory.mktemp("raccoon")
    with tarfile.open(shared_data / "raccoon.tar.gz") as tar:
        tar.extractall(out, filter="data")
    return out


@pytest.fixture(scope="module")
def coco_root(raccoon: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A COCO folder from a slice of the raccoon CSVs: 8 train, 4 valid images."""
    root = tmp_path_factory.mktemp("raccoon_coco")
    for csv_name, split, n in (("train_labels.csv", "train", 8), ("test_labels.csv", "valid", 4)):
        records = voc2coco.read_box_csv(raccoon / "data" / csv_name)[:n]
        voc2coco.write_split(voc2coco.to_coco(records), raccoon / "images", root / split)
    return root


def _cfg(root: Path, **task) -> Config:
    base = Config.fromfile(str(ROOT / "configs" / "rfdetr_ft.py"))
    base.merge_from_dict({"data_root": str(root), "model.resolution": 128})
    base.task.update({"multi_scale": False, **task})
    return base


def _task(cfg: Config):
    opts = dict(cfg.task)
    return TASKS.lookup(opts.pop("type"))(cfg, **opts)


# --- converter ------------------------------------------------------------------------------------
def test_voc_xml_and_csv_give_the_same_boxes(raccoon: Path):
    csv_records = voc2coco.read_box_csv(raccoon / "data" / "train_labels.csv")[:5]
    xml_records = [
        voc2coco.read_voc_xml(raccoon / "annotations" / (im["file_name"][:-4] + ".xml")) for im, _ in csv_records
    ]
    a, b = voc2coco.to_coco(csv_records), voc2coco.to_coco(xml_records)
    assert a["categories"] == [{"id": 1, "name": "raccoon", "supercategory": "none"}]
    assert [x["bbox"] for x in a["annotations"]] == [x["bbox"] for x in b["annotations"]]
    assert [x["file_name"] for x in a["images"]] == [x["file_name"] for x in b["images"]]
    # VOC 1-based inclusive -> COCO 0-based: raccoon-17.jpg has xmin=95, xmax=167 in the CSV
    assert a["annotations"][0]["bbox"] == [94.0, 59.0, 73.0, 59.0]


def test_converter_cli_writes_a_split(raccoon: Path, tmp_path: Path, capsys):
    out = tmp_path / "valid"
    voc2coco.main(["xml", str(raccoon / "annotations"), "--images", str(raccoon / "images"), "--out", str(out)])
    coco = load_coco(out / "_annotations.coco.json")
    assert len(coco["images"]) == 200 and len(coco["annotations"]) == 217
    assert (out / coco["images"][0]["file_name"]).is_file()
    assert "200 images, 217 boxes" in capsys.readouterr().out


def test_converter_names_the_file_and_field(tmp_path: Path):
    bad = tmp_path / "a.xml"
    bad.write_text("<annotation><filename>a.jpg</filename><size><width>10</width><height>9</height></size>"
                   "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox></object>"
                   "</annotation>")  # fmt: skip
    with pytest.raises(ValueError, match=r"a\.xml: object 0: missing the <ymax> field"):
        voc2coco.read_voc_xml(bad)
    bad.write_text("<annotation>")
    with pytest.raises(ValueError, match="not a valid xml file"):
        voc2coco.read_voc_xml(bad)
    csv = tmp_path / "b.csv"
    csv.write_text("filename,width,class,xmin,ymin,xmax,ymax\n")
    with pytest.raises(ValueError, match=r"b\.csv: missing columns \['height'\]"):
        voc2coco.read_box_csv(csv)
    with pytest.raises(ValueError, match="class 'dog' is not in --classes"):
        voc2coco.to_coco([({"file_name": "x.jpg", "width": 4, "height": 4}, [("dog", [0, 0, 1, 1])])], ["cat"])


# --- dataset: bad input -----------------------------------------------------------------------------
def _write_coco(folder: Path, annotations: list, images: int = 2, broken: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ims = []
    for k in range(images):
        name = f"im{k}.png"
        if k == broken:
            (folder / name).write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / name)
        ims.append({"id": k + 1, "file_name": name, "width": 60, "height": 40})
    coco = {"images": ims, "annotations": annotations, "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]}
    ann = folder / "_annotations.coco.json"
    ann.write_text(json.dumps(coco))
    return ann


def _ann(i: int, image_id: int, cat: int, bbox: list) -> dict:
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox}


def test_malformed_annotations_name_the_file_and_field(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_coco(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(ValueError, match=r"x\.json: not valid json"):
        load_coco(tmp_path / "x.json")
    ann = _write_coco(tmp_path / "s", [{"id": 1, "image_id": 1, "category_id": 3}])
    with pytest.raises(ValueError, match=r"_annotations\.coco\.json: annotations\[0\]: missing the 'bbox' field"):
        load_coco(ann)
    ann = _write_coco(tmp_path / "s", [_ann(1, 1, 5, [0, 0, 2, 2])])
    with pytest.raises(ValueError, match=r"annotations\[0\]: category_id 5 is not among the categories \[3, 7\]"):
        load_coco(ann)
    ann = _write_coco(tmp_path / "s", [_ann(1, 1, 3, [0, 0, "w", 2])])
    with pytest.raises(ValueError, match=r"field 'bbox' should be 4 finite numbers"):
        load_coco(ann)
    ann = _write_coco(tmp_path / "s", [])
    with pytest.raises(ValueError, match="2 categories .* but num_classes=3"):
        CocoDetection(ann, num_classes=3)


def test_boxes_clipped_dropped_and_counted(tmp_path: Path, caplog):
    anns = [
        _ann(1, 1, 3, [50, 30, 20, 20]),  # spills over the right and bottom edges: clipped
        _ann(2, 1, 7, [10, 10, 0, 5]),  # zero width: dropped
        _ann(3, 2, 7, [70, 5, 5, 5]),  # entirely outside the 60 x 40 image: dropped
        _ann(4, 2, 3, [5, 5, 10, 10]),
    ]
    with caplog.at_level(logging.INFO, logger="recipes.detection"):
        ds = CocoDetection(_write_coco(tmp_path / "s", anns), size=64)
    assert (ds.num_clipped, ds.num_dropped) == (1, 2)
    assert "1 boxes clipped to the image, 2 dropped (zero area)" in caplog.text
    assert ds.class_names == ["a", "b"]  # category ids 3, 7 -> labels 0, 1
    image, target = ds[0]
    assert image.shape == (3, 64, 64)
    assert target["labels"].tolist() == [0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[55 / 60, 35 / 40, 10 / 60, 10 / 40]]))
    assert ds.coco_gt()["annotations"][0]["bbox"] == [50.0, 30.0, 10.0, 10.0]


def test_undecodable_image_is_skipped_with_a_warning(tmp_path: Path, caplog):
    ann = _write_coco(tmp_path / "s", [_ann(1, 1, 3, [5, 5, 10, 10])], images=3, broken=1)
    ds = CocoDetection(ann, size=64)
    with caplog.at_level(logging.WARNING, logger="recipes.detection"):
        assert ds[1] is None
    assert "im1.png: it does not decode" in caplog.text and "1 skipped so far" in caplog.text
    train = CocoDetection(ann, size=64, train=True)
    assert train[1][1]["image_id"].item() == 2  # the next image takes its place
    task = _task(Config(dict(model=dict(type="rfdetr", size="nano", resolution=64), task=dict(type="detection"))))
    samples, targets = task.collate([ds[0], ds[1], ds[2]])
    assert samples.tensors.shape == (2, 3, 64, 64) and [t["image_id"].item() for t in targets] == [0, 2]


def test_resolution_off_the_window_block_is_an_error():
    """RF-DETR nano: patch 16 x 2 windows; rfdetr's train() refuses 100 px, our collate would have padded it."""
    ok = _task(Config(dict(model=dict(type="rfdetr", size="nano", resolution=96), task=dict(type="detection"))))
    assert 96 in ok.scales() and all(s % 32 == 0 for s in ok.scales())  # multi-scale on by default
    bad = _task(Config(dict(model=dict(type="rfdetr", size="nano", resolution=100), task=dict(type="detection"))))
    with pytest.raises(ValueError, match=r"model.resolution=100 is not a multiple of .* = 32; use 96 or 128"):
        bad.scales()


def test_train_augmentation_keeps_boxes_valid(coco_root: Path):
    ds = CocoDetection(coco_root / "train" / "_annotations.coco.json", size=96, train=True)
    torch.manual_seed(0)
    np.random.seed(0)
    for k in range(len(ds)):
        for epoch in range(3):
            ds.set_epoch(epoch)
            image, t = ds[k]
            assert image.shape == (3, 96, 96)
            b = t["boxes"]
            assert len(b) == len(t["labels"]) <= len(ds.anns[ds.images[k]["id"]])
            assert ((b >= 0) & (b <= 1)).all() and (b[:, 2:] > 0).all()
            torch.testing.assert_close(ds[k][0], image)  # seeded by (seed, epoch, index): resumable


# --- evaluation --------------------------------------------------------------------------------------
def test_coco_map_perfect_and_empty():
    gt = {
        "images": [{"id": 0, "width": 50, "height": 50}, {"id": 1, "width": 50, "height": 50}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 1, "bbox": [1, 1, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [5, 5, 30, 30], "area": 900, "iscrowd": 0},
        ],
    }
    perfect = [
        dict(image_id=a["image_id"], category_id=a["category_id"], bbox=a["bbox"], score=0.9) for a in gt["annotations"]
    ]
    m = coco_map(gt, perfect)
    assert m == {"mAP": 1.0, "mAP50": 1.0, "mAP75": 1.0, "AP/a": 1.0, "AP/b": 1.0}
    half = coco_map(gt, perfect[:1])
    assert half["AP/a"] == 1.0 and half["AP/b"] == 0.0 and half["mAP50"] == 0.5
    assert coco_map(gt, [])["mAP"] == 0.0


# --- RF-DETR on the raccoon slice ----------------------------------------------------------------------
def _expected_lr(name: str, lr=1e-4, lr_enc=1.5e-4, layer_decay=0.8, comp=0.7, depth=13) -> float:
    """rfdetr's get_param_dict, written out (FIELD_NOTES): depth L = out_feature_indexes[-1] + 1 = 13."""
    if name.startswith("backbone.0.encoder."):
        if "embeddings" in name:
            layer = 0
        elif ".layer." in name:
            layer = int(name.split(".layer.")[1].split(".")[0]) + 1
        else:
            layer = depth + 1
        return lr_enc * layer_decay ** (depth + 1 - layer) * comp**2
    return lr * comp if name.startswith("transformer.decoder") else lr


def test_rfdetr_nano_model_data_and_groups_on_raccoon(coco_root: Path, caplog):
    from recipes.param_groups import build_param_groups

    cfg = _cfg(coco_root)
    task = _task(cfg)
    with caplog.at_level(logging.WARNING, logger="recipes.detection"):
        model = task.build_model()
    assert "starting from random weights" in caplog.text
    assert model.class_embed.out_features == 2 and task.class_names == ["raccoon"]  # 1 class + rfdetr's extra slot
    train, val = task.build_datasets()
    assert (len(train), len(val)) == (8, 4)

    groups = build_param_groups(model, cfg.strategy, adapter=cfg.adapter)
    lr_of = {n: g["lr"] for g in groups for n in g["param_names"]}
    assert len(lr_of) == sum(p.requires_grad for p in model.parameters())
    for name, lr in lr_of.items():
        assert lr == pytest.approx(_expected_lr(name), rel=1e-12), name
    assert lr_of["backbone.0.encoder.encoder.encoder.layer.11.mlp.fc1.weight"] == pytest.approx(1.5e-4 * 0.8**2 * 0.49)
    assert lr_of["transformer.decoder.layers.0.norm1.weight"] == pytest.approx(7e-5)


@pytest.mark.slow  # three RF-DETR Nano steps and an evaluation on CPU: ~15 s idle, over a minute on busy cores
def test_rfdetr_nano_trains_and_evaluates_on_raccoon(coco_root: Path):
    from recipes.param_groups import build_param_groups
    from recipes.schedules import build_schedule

    cfg = _cfg(coco_root)
    task = _task(cfg)
    model = task.build_model()
    train, val = task.build_datasets()
    opt = torch.optim.AdamW(build_param_groups(model, cfg.strategy, adapter=cfg.adapter))
    sched = build_schedule(cfg.schedule, total_steps=4, steps_per_epoch=2, lr=1e-4)
    loader = torch.utils.data.DataLoader(train, batch_size=2, collate_fn=task.collate)
    head = model.class_embed.weight.detach().clone()
    model.train()
    for step, batch in zip(range(3), loader, strict=False):
        sched.apply(opt, step)
        loss, logs = task.train_step(model, batch, CPU)
        loss.backward()
        opt.step()
        opt.zero_grad()
        assert math.isfinite(loss.item()) and set(logs) == {"loss_ce", "loss_bbox", "loss_giou"}
    assert not torch.equal(head, model.class_embed.weight)

    metrics = task.evaluate(model, torch.utils.data.DataLoader(val, batch_size=2, collate_fn=task.collate), CPU)
    assert set(metrics) == {"mAP", "mAP50", "mAP75", "AP/raccoon"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert model.training


def test_multi_scale_follows_rfdetr(coco_root: Path):
    from rfdetr.datasets.coco import compute_multi_scale_scales

    task = _task(_cfg(coco_root, multi_scale=True))
    assert task.scales() == compute_multi_scale_scales(128, True, 16, 2)  # Nano: patch 16, 2 windows
    train, _ = task.build_datasets()
    assert train[0][0].shape[-1] == max(task.scales())  # the dataset resizes to the largest scale


@pytest.mark.slow  # two RF-DETR steps with the encoder's backward (~8 s idle); test_engine covers train.freeze fast
def test_freeze_encoder_for_n_steps(coco_root: Path):
    """freeze_encoder=N is the engine's freeze plan: encoder groups exist from step 0 with rfdetr's LRs, the
    encoder's gradients are dropped before each step until N (no update, no AdamW state), then it trains."""
    from recipes.train.build import prepare_run

    cfg = _cfg(coco_root, freeze_encoder=1)
    cfg.train = dict(max_steps=2, batch_size=2)
    plan = prepare_run(cfg)
    model, task, opt = plan.model, plan.task, plan.optimizer
    enc = {n: p for n, p in model.named_parameters() if n.startswith("backbone.0.encoder.") and "mask_token" not in n}
    assert enc and all(p.requires_grad for p in enc.values())  # trainable from the start: plain DDP works
    # DINOv2's mask token never gets a gradient (rfdetr's own DDP probe): frozen for good, for plain DDP
    assert not model.backbone[0].encoder.encoder.embeddings.mask_token.requires_grad
    lr_of = {n: g["lr"] for g in opt.param_groups for n in g["param_names"]}
    assert all(lr_of[n] == pytest.approx(_expected_lr(n), rel=1e-12) for n in enc)  # groups from step 0
    assert {id(p) for p in plan.freeze.frozen(0)} == {id(p) for p in enc.values()} and plan.freeze.frozen(1) == []

    before = {n: p.detach().clone() for n, p in enc.items()}
    batch = task.collate([plan.train_set[0], plan.train_set[1]])
    for step in range(2):  # what the engine does each step
        plan.schedule.apply(opt, step)
        loss, _ = task.train_step(model, batch, CPU)
        loss.backward()
        for p in plan.freeze.frozen(step):
            p.grad = None
        opt.step()
        opt.zero_grad(set_to_none=True)
        changed = [n for n, p in enc.items() if not torch.equal(p, before[n])]
        with_state = {id(p) for p in opt.state}
        if step == 0:
            assert not changed and not with_state & {id(p) for p in enc.values()}
    assert changed and {id(p) for p in enc.values()} <= with_state | {id(p) for n, p in enc.items() if p.grad is None}


def test_lora_on_the_encoder(coco_root: Path):
    from recipes.param_groups import build_param_groups

    cfg = _cfg(coco_root)
    cfg.policy = dict(type="encoder_lora")
    model = _task(cfg).build_model()
    enc = {n: p for n, p in model.named_parameters() if n.startswith("backbone.0.encoder.")}
    trainable = [n for n, p in enc.items() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    groups = build_param_groups(model, cfg.strategy, adapter=cfg.adapter)
    names = {n for g in groups for n in g["param_names"]}
    assert set(trainable) <= names and not any(n in names for n, p in enc.items() if not p.requires_grad)


@pytest.mark.parametrize(
    ("options", "match"),
    [(["policy.type=encoder_lora", "policy.r=8"], r"policy.r: policy.type='encoder_lora' is rfdetr's own encoder LoRA"),
     (["policy.type=encoder_lora", "task.freeze_encoder=True"], r"task.freeze_encoder has no effect with "
                                                                r"policy.type='encoder_lora'"),
     (["task.lora=True"], r"`task.lora` is now `policy`")],
)  # fmt: skip
def test_encoder_lora_settings_that_cannot_act_are_errors(options, match):
    """Checked before any data or model: the config check asks the detection task about its policy."""
    from recipes.train.config import load_config
    from recipes.train.config_check import check_config
    from recipes.train.tasks.base import build_task

    cfg = load_config(ROOT / "configs" / "detection" / "rfdetr_nano.py", ["data_root=/nowhere", *options])
    with pytest.raises((KeyError, ValueError), match=match):
        check_config(cfg)
        build_task(cfg)


def test_class_count_must_match_the_dataset(coco_root: Path):
    cfg = _cfg(coco_root)
    cfg.model.num_classes = 3
    with pytest.raises(ValueError, match=r"model.num_classes=3 but the training set has 1 categories \['raccoon'\]"):
        _task(cfg).build_model()


def test_missing_weights_file_is_a_clear_error(tmp_path: Path):
    from recipes.train.models.rfdetr import build_rfdetr

    with pytest.raises(FileNotFoundError, match="pretrained: .*nope.pth' does not exist"):
        build_rfdetr("nano", num_classes=1, pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(KeyError, match="unknown RF-DETR size 'tiny'"):
        build_rfdetr("tiny")


def test_checkpoint_of_another_size_is_a_clear_error(tmp_path: Path):
    """rfdetr loads with strict=False: Nano's weights in Small would leave its third decoder layer random."""
    from recipes.train.models.rfdetr import build_rfdetr

    nano = build_rfdetr("nano", num_classes=2, resolution=128)
    torch.save({"model": nano.state_dict()}, tmp_path / "nano.pth")
    with pytest.raises(
        ValueError,
        match=r"nano.pth' does not fit RF-DETR 'small' .*another size.*"
        r"22 model parameter\(s\) not in checkpoint \(left at random init\)",
    ):
        build_rfdetr("small", num_classes=2, pretrained=str(tmp_path / "nano.pth"), resolution=128)
    small = build_rfdetr(
        "small", num_classes=2, pretrained=str(tmp_path / "nano.pth"), resolution=128, allow_partial_load=True
    )  # on purpose: loads what fits
    assert torch.equal(small.state_dict()["class_embed.bias"], nano.state_dict()["class_embed.bias"])
    same = build_rfdetr("nano", num_classes=2, pretrained=str(tmp_path / "nano.pth"), resolution=128)
    assert all(torch.equal(v, nano.state_dict()[k]) for k, v in same.state_dict().items())
    lora = build_rfdetr(
        "nano", num_classes=2, pretrained=str(tmp_path / "nano.pth"), resolution=128, backbone_lora=True
    )  # encoder LoRA on published weights: adapters are new, not "missing"
    assert any("lora_" in n for n, _ in lora.named_parameters())


@pytest.mark.parametrize("size", ["nano", "small", "medium", "large", "base"])
def test_every_size_config_builds_offline(size: str):
    from recipes.param_groups import build_param_groups
    from recipes.train.config import load_config
    from recipes.train.models.rfdetr import build_rfdetr

    cfg = load_config(ROOT / "configs" / "detection" / f"rfdetr_{size}.py")
    assert cfg.model.size == size and cfg.strategy.type == "rfdetr" and cfg.data_root is None
    model = build_rfdetr(size, num_classes=3)  # random weights, no download (Base: positional_encoding_size=40)
    assert model.class_embed.out_features == 4
    groups = build_param_groups(model, cfg.strategy, adapter=cfg.adapter)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_detect_draws_boxes(coco_root: Path, tmp_path: Path, capsys):
    from tools import detect

    model = _task(_cfg(coco_root)).build_model()
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict(), "class_names": ["raccoon"]}, ckpt)
    image = next((coco_root / "valid").glob("*.jpg"))
    args = [str(ROOT / "configs" / "rfdetr_ft.py"), str(ckpt), str(image), "--out-dir", str(tmp_path / "out")]
    assert detect.main([*args, "--threshold", "0", "--cfg-options", "model.resolution=128"]) == 0
    png = tmp_path / "out" / f"{image.stem}.png"
    assert Image.open(png).size == Image.open(image).size
    assert "300 boxes >= 0.0" in capsys.readouterr().out  # rfdetr keeps num_select=300 detections


@pytest.mark.slow  # ~50 s on 2 busy cores; the fast tests above cover the task's steps, the engine tests resume
def test_train_py_trains_evaluates_and_resumes_exactly(coco_root: Path, tmp_path: Path, capsys, caplog):
    from tools import detect, train

    config = str(ROOT / "configs" / "rfdetr_ft.py")
    opts = [f"data_root={coco_root}", "model.resolution=128", "task.multi_scale=False", "train.max_steps=4",
            "train.batch_size=4", "train.grad_accum=1", "train.ckpt_every=2", "train.progress=False"]  # fmt: skip
    a, b = tmp_path / "a", tmp_path / "b"
    with caplog.at_level(logging.WARNING, logger="recipes.detection"):
        assert train.main([config, "--work-dir", str(a), "--cfg-options", *opts]) == 0
    assert "starting from random weights" in caplog.text
    out = capsys.readouterr().out
    assert "[eval] epoch 1 step 2: mAP=" in out and "ema_mAP50=" in out and "AP/raccoon=" in out
    summary = json.loads((a / "summary.json").read_text())
    assert summary["steps"] == 4 and math.isfinite(summary["final_loss"]) and "best_mAP" in summary

    mid = a / "checkpoints" / "step_0000002.pt"
    assert train.main([config, "--work-dir", str(b), "--resume", str(mid), "--cfg-options", *opts]) == 0
    assert "[resume]" in capsys.readouterr().out
    end_a = torch.load(a / "checkpoints" / "step_0000004.pt", weights_only=True)
    end_b = torch.load(b / "checkpoints" / "step_0000004.pt", weights_only=True)
    for key in ("model", "ema"):
        for name, value in end_a[key].items():
            torch.testing.assert_close(end_b[key][name], value, rtol=0, atol=0, msg=f"{key}: {name}")

    assert end_a["class_names"] == ["raccoon"]
    best = torch.load(a / "best.pt", weights_only=True)  # the weights (model or EMA) with the best val mAP
    assert best["class_names"] == ["raccoon"] and best["metric"] == "mAP"
    assert (best["value"], best["epoch"], best["weights"]) == (
        summary["best_mAP"],
        summary["best_epoch"],
        summary["best_weights"],
    )
    from recipes.train.models.rfdetr import build_rfdetr_wrapper

    again = build_rfdetr_wrapper("nano", num_classes=1, pretrained=str(a / "best.pt"), resolution=128)
    reloaded = again.model.model.state_dict()  # rfdetr's own loader reads best.pt: fine-tune from it
    assert all(torch.equal(reloaded[k], v) for k, v in best["model"].items())

    image = next((coco_root / "valid").glob("*.jpg"))
    for ckpt, extra in ((a / "checkpoints" / "step_0000004.pt", ["--ema"]), (a / "best.pt", [])):
        args = [config, str(ckpt), str(image), *extra, "--out-dir", str(tmp_path / ckpt.stem)]
        assert detect.main([*args, "--cfg-options", "model.resolution=128"]) == 0  # class names from the file
        assert (tmp_path / ckpt.stem / f"{image.stem}.png").is_file()


@pytest.mark.slow  # two short RF-DETR trainings on CPU
def test_lora_best_pt_is_trainable_only_and_detect_completes_it(coco_root: Path, tmp_path: Path, capsys):
    """An encoder-LoRA run's best.pt holds the trainable tensors only (save_frozen='auto'); detect rebuilds
    the frozen rest from model.pretrained, checked against the run's fingerprint, or says what is missing."""
    from recipes.train.build import rebuild_model
    from recipes.train.checkpoint import read_checkpoint
    from recipes.train.config import load_config
    from recipes.train.models.rfdetr import build_rfdetr_wrapper
    from recipes.train.tasks.detection import DetectionTask
    from tools import detect, train

    start, other = tmp_path / "start.pth", tmp_path / "other.pth"
    for path, seed in ((start, 0), (other, 1)):  # the weights the run starts from, and another set
        torch.manual_seed(seed)
        torch.save(
            {"model": build_rfdetr_wrapper("nano", num_classes=1, resolution=128).model.model.state_dict()}, path
        )
    config = str(ROOT / "configs" / "rfdetr_ft.py")
    lora = ["model.resolution=128", "policy.type=encoder_lora", f"model.pretrained={start}"]
    opts = [f"data_root={coco_root}", "task.multi_scale=False", "train.max_steps=2", "train.batch_size=4",
            "train.grad_accum=1", "train.progress=False", *lora]  # fmt: skip
    assert train.main([config, "--work-dir", str(tmp_path / "run"), "--cfg-options", *opts]) == 0
    best_path = tmp_path / "run" / "best.pt"
    best = torch.load(best_path, weights_only=True)
    full = build_rfdetr_wrapper("nano", num_classes=1, resolution=128).model.model.state_dict()
    assert best["frozen_omitted"] and 0 < len(best["model"]) < len(full) and best["frozen_fingerprint"].numel() > 0
    assert any("lora_" in k for k in best["model"]) and not any(
        k.endswith("query.base_layer.weight") for k in best["model"]
    )

    image = next((coco_root / "valid").glob("*.jpg"))
    args = [config, str(best_path), str(image), "--out-dir", str(tmp_path / "out"), "--cfg-options"]
    assert detect.main([*args, *lora]) == 0
    assert (tmp_path / "out" / f"{image.stem}.png").is_file()
    _, model = rebuild_model(load_config(config, lora), read_checkpoint(best_path), DetectionTask)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in best["model"].items())  # the trained tensors, not the start's
    capsys.readouterr()
    assert detect.main([*args, *lora, "model.pretrained=None"]) == 2
    assert "holds only the trainable tensors" in capsys.readouterr().err
    assert detect.main([*args, *lora[:2], f"model.pretrained={other}"]) == 2
    assert "different frozen weights" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"holds only the trainable tensors of a LoRA"):
        build_rfdetr_wrapper("nano", num_classes=1, pretrained=str(best_path), resolution=128)
