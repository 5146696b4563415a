"""Classification datasets in their real on-disk formats, pipelines, metrics and temperature scaling."""

from __future__ import annotations

import gzip
import pickle
import tarfile

import numpy as np
import pytest
import torch

from recipes.train.data.classification import build_pipeline, cifar10, cifar100, digits, idx, image_folder
from recipes.train.metrics.classification import classification_metrics, expected_calibration_error, fit_temperature


def write_idx(path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_files_as_mnist_ships_them(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 9, 3]))
    ds = idx(tmp_path, split="test")
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and y == 9 and len(ds.classes) == 10
    assert torch.equal(x[0], torch.from_numpy(imgs[3]).float() / 255)
    with pytest.raises(FileNotFoundError, match="neither train-images-idx3-ubyte nor"):
        idx(tmp_path, split="train")


@pytest.mark.parametrize("variant", [10, 100])
def test_cifar_torchvision_layout(tmp_path, variant):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (4, 3072), dtype=np.uint8)
    if variant == 10:
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        pickle.dump({"data": data, "labels": [1, 2, 3, 4]}, open(folder / "test_batch", "wb"))
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, open(folder / "batches.meta", "wb"))
        ds = cifar10(tmp_path, split="test")
    else:
        folder = tmp_path / "cifar-100-python"
        folder.mkdir()
        pickle.dump({"data": data, "fine_labels": [5, 6, 7, 99]}, open(folder / "test", "wb"))
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, open(folder / "meta", "wb"))
        ds = cifar100(folder, split="test")  # the folder itself works too
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and len(ds.classes) == variant
    assert torch.equal(x, torch.from_numpy(data[0].reshape(3, 32, 32)).float() / 255)  # CHW order kept


def test_image_folder_and_pipeline(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((12, 10, 3), 40 * i, np.uint8)).save(tmp_path / "train" / c / f"{i}.png")
    pipe = [dict(type="Resize", height=16, width=16), dict(type="Normalize", mean=(0.5,) * 3, std=(0.5,) * 3)]
    ds = image_folder(tmp_path, split="train", pipeline=pipe)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    x, y = ds[4]
    assert x.shape == (3, 16, 16) and y == 1 and x.min() >= -1.0
    with pytest.raises(FileNotFoundError, match="image folder '.*valid' does not exist"):
        image_folder(tmp_path, split="valid")
    with pytest.raises(KeyError, match="'Rezise' is not an albumentations transform"):
        build_pipeline([dict(type="Rezise")])


def test_augmentation_is_a_function_of_seed_epoch_index():
    aug = [dict(type="Affine", rotate=(-30, 30), p=1.0)]
    a, b = digits(pipeline=aug, seed=1), digits(pipeline=aug, seed=1)
    assert torch.equal(a[5][0], b[5][0])
    b.set_epoch(1)
    assert not torch.equal(a[5][0], b[5][0])
    n = [len(digits(split=s)) for s in ("train", "val", "test")]
    assert n == [1257, 180, 360]  # 70 / 10 / 20 %, disjoint
    main, held = digits(holdout=0.25, part="main"), digits(holdout=0.25, part="holdout")
    assert len(main) + len(held) == 1257


def test_real_cifar10_jpegs_as_image_folder(shared_data, tmp_path):
    with tarfile.open(shared_data / "cifar10_jpg.tar.gz") as tar:
        members = []
        for m in tar:
            if m.isfile() and m.name.count("/") >= 2 and "/test/" in f"/{m.name}":
                members.append(m)
            if len(members) >= 40:
                break
        tar.extractall(tmp_path, members=members)
    root = next(p.parent for p in tmp_path.rglob("test") if p.is_dir())
    ds = image_folder(root, split="test")
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and 0 <= y < len(ds.classes)


def test_metrics_and_temperature_scaling():
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 1])
    m = classification_metrics(logits, labels)
    assert m["top1"] == 75.0 and "top5" not in m
    conf = torch.softmax(logits[0], 0)[0].item()  # one bin holds all four: |0.75 - conf|
    assert expected_calibration_error(logits, labels) == pytest.approx(abs(0.75 - conf), abs=1e-6)
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (2000,), generator=gen)
    over = torch.randn(2000, 10, generator=gen) + 2.0 * torch.nn.functional.one_hot(labels, 10)
    over *= 4.0  # over-confident
    t = fit_temperature(over, labels)
    assert t > 2.0
    assert expected_calibration_error(over / t, labels) < 0.5 * expected_calibration_error(over, labels)


def test_real_fashion_mnist_idx_and_its_config():
    from pathlib import Path

    from recipes.train.config import load_config
    from recipes.train.tasks.classification import ClassificationTask

    root = Path("/usr/share/datasets/fashion-mnist")
    if not (root / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    cfg = load_config("configs/classification/fashion_mnist_vit.py")
    task = ClassificationTask(cfg)
    train, val = task.build_datasets()
    assert (len(train), len(val), len(task.dataset("test"))) == (55_000, 5_000, 10_000)
    x, y = task.dataset("test")[0]
    assert x.shape == (1, 28, 28) and train.classes[y] == "Ankle boot"  # the first test image
