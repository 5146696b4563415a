"""Convert Pascal VOC xml files, or a CSV of boxes, to a COCO-format folder.

    python tools/voc2coco.py xml ANNOTATIONS_DIR --images IMAGES_DIR --out OUT_DIR [--list ids.txt]
    python tools/voc2coco.py csv LABELS.csv --images IMAGES_DIR --out OUT_DIR

The CSV has the columns ``filename,width,height,class,xmin,ymin,xmax,ymax`` (one box a row; the
raccoon set's ``data/{train,test}_labels.csv``). ``OUT_DIR`` gets ``_annotations.coco.json`` and the
images (symlinked; ``--copy`` copies them): the Roboflow / RF-DETR split layout, so a dataset root
holds ``train/`` and ``valid/`` made by two calls::

    python tools/voc2coco.py csv raccoon/data/train_labels.csv --images raccoon/images --out coco/train
    python tools/voc2coco.py csv raccoon/data/test_labels.csv --images raccoon/images --out coco/valid

VOC pixel coordinates are 1-based and inclusive; COCO's are 0-based: ``x = xmin - 1`` and
``w = xmax - xmin + 1`` (as detectron2 reads VOC). The raccoon CSV copies the xml values, so it
gets the same rule. Category ids start at 1, in the order of ``--classes`` or sorted by name.

The tool never touches a source file: ``--out`` may not be ``--images`` or a folder inside it; an
image name that is absolute or contains ``..`` (it would leave the image folder) is an error; an
existing file in ``--out`` is only replaced when the tool made it (a link into ``--images``, a copy
with the same bytes, an annotation file it wrote); anything else stops the run before it writes.
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import json
import math
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.train.errors import BadInput, cli  # noqa: E402
from recipes.train.workdir import check_output_folder  # noqa: E402

ANN_NAME = "_annotations.coco.json"
CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
WRITTEN_BY = "tools/voc2coco.py"  # in the json's ``info``: marks an annotation file this tool may replace


def _box(where: str, xmin: Any, ymin: Any, xmax: Any, ymax: Any) -> list[float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in (xmin, ymin, xmax, ymax))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: box coordinates must be numbers, got {(xmin, ymin, xmax, ymax)!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"{where}: box coordinates must be finite, got {(xmin, ymin, xmax, ymax)!r}")
    if x1 < x0 or y1 < y0:
        raise ValueError(f"{where}: inverted box (xmax < xmin or ymax < ymin): {(xmin, ymin, xmax, ymax)!r}")
    return [x0 - 1.0, y0 - 1.0, x1 - x0 + 1.0, y1 - y0 + 1.0]


def _size(where: str, width: Any, height: Any) -> dict[str, int]:
    """The image's width and height: whole numbers > 0 (a box is checked against them)."""
    try:
        size = {"width": float(width), "height": float(height)}
    except (TypeError, ValueError):
        size = {}
    if not size or not all(math.isfinite(v) and v >= 1 and v == int(v) for v in size.values()):
        raise ValueError(f"{where}: width/height must be whole numbers > 0, got {width!r}, {height!r}")
    return {k: int(v) for k, v in size.items()}


def _text(node: ET.Element, path: str, where: str) -> str:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise ValueError(f"{where}: missing the <{path}> field")
    return found.text.strip()


def read_voc_xml(path: str | Path) -> tuple[dict[str, Any], list[tuple[str, list[float]]]]:
    """One VOC file: ``({file_name, width, height}, [(class name, [x, y, w, h]), ...])``."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}: not a valid xml file ({e})") from None
    image = {
        "file_name": safe_image_name(_text(root, "filename", str(path)), str(path)),
        **_size(str(path), _text(root, "size/width", str(path)), _text(root, "size/height", str(path))),
    }
    boxes = []
    for k, obj in enumerate(root.findall("object")):
        where = f"{path}: object {k}"
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"{where}: missing the <bndbox> field")
        coords = [_text(bb, c, where) for c in ("xmin", "ymin", "xmax", "ymax")]
        boxes.append((_text(obj, "name", where), _box(where, *coords)))
    return image, boxes


def read_box_csv(path: str | Path) -> list[tuple[dict[str, Any], list[tuple[str, list[float]]]]]:
    """A ``filename,width,height,class,xmin,ymin,xmax,ymax`` CSV, grouped by image in file order."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; expected the header {','.join(CSV_COLUMNS)}")
        images: dict[str, tuple[dict[str, Any], list]] = {}
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            name = safe_image_name(row["filename"], where)
            if name not in images:
                images[name] = ({"file_name": name, **_size(where, row["width"], row["height"])}, [])
            images[name][1].append((row["class"], _box(where, row["xmin"], row["ymin"], row["xmax"], row["ymax"])))
    return list(images.values())


def to_coco(
    records: Iterable[tuple[dict[str, Any], list[tuple[str, list[float]]]]], classes: Sequence[str] | None = None
) -> dict[str, Any]:
    """COCO dict from ``(image, [(class, xywh), ...])`` records; unknown classes fail when ``classes`` is given."""
    records = list(records)
    names = list(classes) if classes else sorted({c for _, boxes in records for c, _ in boxes})
    cat_id = {n: i + 1 for i, n in enumerate(names)}
    images, annotations = [], []
    for img_id, (image, boxes) in enumerate(records, start=1):
        images.append({"id": img_id, **image})
        for name, (x, y, w, h) in boxes:
            if name not in cat_id:
                raise ValueError(f"{image['file_name']}: class {name!r} is not in --classes {names}")
            width, height = image.get("width"), image.get("height")
            if width and height and (x < 0 or y < 0 or x + w > float(width) or y + h > float(height)):
                raise ValueError(f"{image['file_name']}: box of {name!r} (VOC {x + 1:g},{y + 1:g},{x + w:g},"
                                 f"{y + h:g}) leaves the {width}x{height} image")  # fmt: skip
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img_id,
                    "category_id": cat_id[name],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": n, "supercategory": "none"} for n, i in cat_id.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def safe_image_name(name: str, where: str) -> str:
    """An image name relative to the image folder that cannot leave it (no absolute path, no ``..``)."""
    parts = Path(name).parts
    if (
        not name
        or Path(name).is_absolute()
        or name.startswith(("/", "\\"))
        or ".." in parts
        or ".." in name.split("\\")
    ):
        raise BadInput(
            f"{where}: image name {name!r} is absolute or contains '..'; names must stay inside --images "
            "(a relative path such as 'raccoon-1.jpg' or 'sub/raccoon-1.jpg')"
        )
    return name


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_folders(images_dir: Path, out_dir: Path) -> None:
    images, out = images_dir.resolve(), out_dir.resolve()
    if not images.is_dir():
        raise BadInput(f"--images {str(images_dir)!r} is not a folder")
    if _inside(out, images):
        raise BadInput(
            f"--out {str(out_dir)!r} is --images or a folder inside it; the split would be written over the source "
            "images. Choose an output folder outside the image folder"
        )


def _replaceable(src: Path, dst: Path, images: Path) -> bool:
    """Whether an existing ``dst`` is this tool's own output for ``src`` (else it must not be touched)."""
    if dst.is_symlink():
        target = Path(os.path.realpath(dst))
        return _inside(target, images) and target != dst.parent.resolve() / dst.name
    if dst.is_file() and src.resolve() != dst.resolve():  # a copy an earlier --copy run made: kept as it is
        return filecmp.cmp(src, dst, shallow=False)
    return False


def write_split(coco: dict[str, Any], images_dir: str | Path, out_dir: str | Path, copy: bool = False) -> Path:
    """``out_dir/_annotations.coco.json`` plus the images it names (symlinks unless ``copy``).

    Everything is checked before anything is written (see the module docstring for the rules).
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    _check_folders(images_dir, out_dir)
    images = images_dir.resolve()
    plan = []
    for image in coco["images"]:
        name = safe_image_name(image["file_name"], "annotations")
        src, dst = images_dir / name, out_dir / name
        if not src.is_file():
            raise BadInput(f"image {str(src)!r} named by the annotations does not exist")
        if dst.exists() or dst.is_symlink():
            if not _replaceable(src, dst, images):
                raise BadInput(
                    f"{str(dst)!r} already exists and was not made by this tool from {str(src)!r}; nothing was "
                    "written. Remove it or choose another --out"
                )
        plan.append((src, dst))
    ann = out_dir / ANN_NAME
    if ann.exists() and not _written_by_us(ann):
        raise BadInput(f"{str(ann)!r} already exists and was not written by {WRITTEN_BY}; nothing was written")
    out_dir.mkdir(parents=True, exist_ok=True)
    for src, dst in plan:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink():  # a link this tool made earlier
            dst.unlink()
        elif dst.exists():  # a copy this tool made earlier, with the same bytes
            continue
        if copy:
            shutil.copyfile(src, dst)
        else:
            dst.symlink_to(src.resolve())
    tmp = ann.with_name(ann.name + ".tmp")
    tmp.write_text(json.dumps({"info": {"description": f"written by {WRITTEN_BY}"}, **coco}))
    os.replace(tmp, ann)
    return ann


def _written_by_us(ann: Path) -> bool:
    try:
        return json.loads(ann.read_text()).get("info", {}).get("description") == f"written by {WRITTEN_BY}"
    except (OSError, ValueError, AttributeError):
        return False


@cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("format", choices=("xml", "csv"))
    ap.add_argument("source", help="xml: a folder of VOC .xml files; csv: the labels file")
    ap.add_argument("--images", required=True, help="folder holding the image files")
    ap.add_argument("--out", required=True, help="output split folder (gets _annotations.coco.json)")
    ap.add_argument("--classes", default=None, help="comma-separated class names (default: sorted names found)")
    ap.add_argument("--list", default=None, help="xml only: a VOC ImageSets file of ids to convert")
    ap.add_argument("--copy", action="store_true", help="copy images instead of symlinking them")
    args = ap.parse_args(argv)
    check_output_folder(args.out, "--out")  # before anything is read or written

    if args.format == "xml":
        src = Path(args.source)
        if args.list:
            ids = [s.split()[0] for s in Path(args.list).read_text().splitlines() if s.strip()]
            files = [src / f"{i}.xml" for i in ids]
        else:
            files = sorted(src.glob("*.xml"))
        if not files:
            raise FileNotFoundError(f"no .xml files in {str(src)!r}")
        records = [read_voc_xml(f) for f in files]
    else:
        records = read_box_csv(args.source)
    coco = to_coco(records, args.classes.split(",") if args.classes else None)
    ann = write_split(coco, args.images, args.out, copy=args.copy)
    names = [c["name"] for c in coco["categories"]]
    print(f"wrote {ann}: {len(coco['images'])} images, {len(coco['annotations'])} boxes, classes {names}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
