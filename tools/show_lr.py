"""Print a config's LR grid and plot every group's LR over the whole schedule.

    python tools/show_lr.py configs/default.py [--out-dir DIR] [--csv] [--per-param csv|json] [--cfg-options k=v ...]
    python tools/show_lr.py --timm vit_base_patch16_224 [--strategy JSON] [--schedule JSON] [--steps N]
    python tools/show_lr.py --hf ViTForImageClassification   (a transformers class, or a local config.json / folder)

Builds exactly the model ``tools/train.py`` trains, by the same path (``recipes.train.build.prepare_run``:
the task's model with the class count from the training data, the trainable policy, freezing), on
the meta device where the model builder takes ``device`` (no memory: a 12B denoiser draws on a laptop);
prints the grid and writes ``lr_schedule.png`` (and ``lr_schedule.csv`` with ``--csv``) to ``--out-dir``.
No data or weights are needed: weight files not on this machine are left out (the groups depend on the
architecture only), and without the data the config's class count is used, with ``--steps-per-epoch N``
(default 100, said) or ``train.max_steps`` for the schedule's length.
Beside it ``lr_heatmap.png`` (peak LR per component and block), and with ``--per-param`` one row
per parameter (name, group, layer id, layer, component, lr, lr_scale, weight decay) as
``params.csv`` or ``params.json``. ``--timm`` / ``--hf`` take a model by name instead of a config:
built on the meta device (no weights, no download), grouped by ``--strategy`` over ``--steps``.
No file is replaced: where a name is taken, the run's files all get the next free ``-<k>`` suffix
(``lr_schedule-1.png``, ``lr_heatmap-1.png``, ...).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from recipes.adapter import ModelMap  # noqa: E402
from recipes.param_groups import base_lr_of, build_param_groups  # noqa: E402
from recipes.report import (  # noqa: E402
    describe_for_report,
    format_lr_grid,
    lr_table,
    param_table,
    plot_lr,
    plot_lr_heatmap,
    write_csv,
    write_table,
)
from recipes.schedules import build_schedule  # noqa: E402
from recipes.train.build import RunPlan, prepare_run  # noqa: E402
from recipes.train.config import load_config, world_size  # noqa: E402
from recipes.train.errors import BadInput, cli  # noqa: E402
from recipes.train.workdir import check_output_folder  # noqa: E402

DEFAULT_STRATEGY = '{"type": "layer_decay", "lr": 1e-3, "decay": 0.75, "weight_decay": 0.05}'
DEFAULT_SCHEDULE = '{"type": "cosine", "warmup_steps": 50, "min_lr_ratio": 0.01}'


def output_paths(out: Path, names: list[str]) -> dict[str, Path]:
    """``{name: out/name}``, or with the first suffix ``-<k>`` under which none of the names exists yet."""
    out.mkdir(parents=True, exist_ok=True)
    k = 0
    while True:
        paths = {n: out / (n if k == 0 else f"{Path(n).stem}-{k}{Path(n).suffix}") for n in names}
        if not any(p.exists() or p.is_symlink() for p in paths.values()):
            return paths
        k += 1


def report_names(csv: bool, per_param: str | None) -> list[str]:
    return ["lr_schedule.png", "lr_heatmap.png"] + ["lr_schedule.csv"] * csv + [f"params.{per_param}"] * bool(per_param)


def add_model_name_args(ap: argparse.ArgumentParser) -> None:
    """--timm / --hf (instead of a config), --strategy / --schedule / --steps for them, --per-param."""
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--timm", metavar="NAME", help="a timm model name, e.g. vit_base_patch16_224")
    which.add_argument(
        "--hf", metavar="CLASS_OR_CONFIG", help="a transformers class name, or a local config.json / folder"
    )
    ap.add_argument("--adapter", default="auto", help="with --timm / --hf: the adapter (default auto)")
    ap.add_argument("--strategy", default=None, help=f"with --timm / --hf: JSON (default {DEFAULT_STRATEGY})")
    ap.add_argument("--schedule", default=None, help=f"with --timm / --hf: JSON (default {DEFAULT_SCHEDULE})")
    ap.add_argument("--steps", type=int, default=None, help="with --timm / --hf: schedule length (default 1000)")
    ap.add_argument("--per-param", choices=("csv", "json"), default=None, help="write params.csv / params.json")


def model_from_name(timm_name: str | None, hf: str | None) -> nn.Module:
    """A full-size model with no weights (meta device), by timm name or transformers class / local config."""
    with torch.device("meta"):
        if timm_name:
            import timm

            return timm.create_model(timm_name, pretrained=False)
        import transformers

        if Path(hf).exists():
            config = transformers.AutoConfig.from_pretrained(hf, local_files_only=True)
            return transformers.AutoModel.from_config(config)
        cls = getattr(transformers, hf, None)
        if not isinstance(cls, type) or not hasattr(cls, "config_class"):
            raise BadInput(f"--hf {hf!r}: not a transformers model class (e.g. ViTModel) nor a local config path")
        return cls(cls.config_class())


def _json_option(flag: str, text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{flag}: not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise BadInput(f"{flag}: expected a JSON object with a 'type', got {text!r}")
    return value


def show_model(args: argparse.Namespace) -> int:
    """--timm / --hf: the grid, the plots and the table for a model by name, no config."""
    if args.config or args.cfg_options or args.steps_per_epoch:
        raise BadInput("--timm / --hf replace the config: drop the config, --cfg-options and --steps-per-epoch")
    model = model_from_name(args.timm, args.hf)
    name = args.timm or Path(args.hf).stem
    strategy = _json_option("--strategy", args.strategy or DEFAULT_STRATEGY)
    groups = build_param_groups(model, strategy, args.adapter)
    mmap = describe_for_report(model, args.adapter, strategy)
    print(format_lr_grid(groups, model, title=name, mmap=mmap))
    total = args.steps or 1000
    sched = build_schedule(_json_option("--schedule", args.schedule or DEFAULT_SCHEDULE), total_steps=total,
                           lr=base_lr_of(groups))  # fmt: skip
    out = output_paths(
        Path(args.out_dir or Path("work_dirs") / "show_lr" / name), report_names(args.csv, args.per_param)
    )
    plot_lr(lr_table(groups, sched, every=max(1, total // 400)), str(out["lr_schedule.png"]), title=name)
    print(f"wrote {out['lr_schedule.png']}")
    if args.csv:
        write_csv(lr_table(groups, sched), str(out["lr_schedule.csv"]))
        print(f"wrote {out['lr_schedule.csv']}")
    write_model_reports(groups, model, mmap, out, args.per_param, name)
    return 0


def write_model_reports(
    groups: list[dict], model: nn.Module, mmap: ModelMap, out: dict[str, Path], per_param: str | None, title: str
) -> None:
    """``lr_heatmap.png`` beside the LR plot, and ``params.<fmt>`` with ``--per-param`` (paths from ``out``)."""
    plot_lr_heatmap(groups, mmap, str(out["lr_heatmap.png"]), title=f"{title}: peak LR per component and block")
    print(f"wrote {out['lr_heatmap.png']}")
    if per_param:
        path = out[f"params.{per_param}"]
        rows = param_table(groups, model, mmap)
        write_table(rows, str(path))
        print(f"wrote {path} ({len(rows)} parameters)")


WEIGHT_KEYS = ("pretrained", "encoder_weights")
ASSUMED_STEPS_PER_EPOCH = 100
ASSUMED_CLASSES = 10  # without the data: the head's size changes no group


def _builder_keys(model: dict) -> set[str] | None:
    """The keywords the config's ``MODELS`` builder takes (None: unknown, or it takes ``**kwargs``)."""
    from recipes.options import accepted_options
    from recipes.train.registry import MODELS

    try:
        builder = MODELS.lookup(model.get("type"))
    except (KeyError, TypeError, ValueError):
        return None
    named = set(inspect.signature(builder).parameters)  # its own keywords, also where it takes **kwargs
    return named | (accepted_options(builder) or set())


def on_meta_without_weights(cfg) -> None:  # noqa: ANN001 - an mmengine Config
    """No memory, no weights: ``model.device='meta'`` where the builder takes it and none is set, and weight
    files that are not on this machine left out (the groups depend on the architecture only), each said."""
    model = cfg.get("model") or {}
    known = _builder_keys(model)
    if "device" not in model and known is not None and "device" in known:
        model["device"] = "meta"
        print("note: model.device='meta': the full-size model without memory (set model.device to override)")
    for key in WEIGHT_KEYS:
        value = model.get(key)
        if isinstance(value, str) and value.startswith(("/", ".", "~")) and not Path(value).expanduser().exists():
            model[key] = None
            print(f"note: model.{key}={value!r} is not on this machine; the groups do not need it: left out")
    if model.get("pretrained_format") and not model.get("pretrained"):  # the format of a file not given
        model.pop("pretrained_format")


def plan_for(cfg, steps_per_epoch: int | None) -> RunPlan:  # noqa: ANN001 - an mmengine Config
    """The run as tools/train.py builds it; without the data, the config's own class count (said so)."""
    if not cfg.get("data"):  # a config for the library alone (e.g. a diffusion LoRA's groups): no data to read
        return prepare_run(cfg, world=world_size(), steps_per_epoch=steps_per_epoch, data=False)
    try:
        return prepare_run(cfg, world=world_size(), steps_per_epoch=steps_per_epoch)
    except (FileNotFoundError, KeyError, ValueError) as e:  # BadInput is a ValueError
        msg = str(e).strip("'\"")
        if not ("data_root" in msg or "data." in msg or msg.startswith("data")):
            raise
        if not steps_per_epoch:  # train.max_steps sets the length; *_epochs keys still need a conversion
            steps_per_epoch = ASSUMED_STEPS_PER_EPOCH
            print(f"note: assuming {steps_per_epoch} steps per epoch (give --steps-per-epoch N for the real length)")
        print(f"note: the data cannot be read ({e}); using the config's own class count")
        model = cfg.get("model") or {}
        if "num_classes" not in model and "num_classes" in (_builder_keys(model) or ()):  # else it may be headless
            model["num_classes"] = ASSUMED_CLASSES
            print(
                f"note: model.num_classes not set: {ASSUMED_CLASSES} classes assumed (the groups do not depend on it)"
            )
        return prepare_run(cfg, world=world_size(), steps_per_epoch=steps_per_epoch, data=False)


@cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", help="a config file (or --timm / --hf)")
    ap.add_argument("--out-dir", default=None, help="where the PNG/CSV go (default: work_dirs/<config>/show_lr)")
    ap.add_argument("--csv", action="store_true", help="also write every group's LR per step as CSV")
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="override the data-derived value")
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    add_model_name_args(ap)
    args = ap.parse_args(argv)
    if args.timm or args.hf:
        return show_model(args)
    if not args.config:
        ap.error("give a config, --timm NAME or --hf CLASS_OR_CONFIG")

    cfg = load_config(args.config, args.cfg_options)
    on_meta_without_weights(cfg)
    plan = plan_for(cfg, args.steps_per_epoch)
    groups, total, spe, model = plan.groups, plan.total_steps, plan.steps_per_epoch, plan.model
    mmap = describe_for_report(model, cfg.get("adapter", "auto"), cfg.strategy)
    print(format_lr_grid(groups, model, title=Path(args.config).stem, mmap=mmap))
    for line in plan.freeze.describe():
        print(f"[freeze] {line}")
    out = output_paths(check_output_folder(args.out_dir or Path("work_dirs") / Path(args.config).stem / "show_lr",
                                           "--out-dir"),
                       report_names(args.csv, args.per_param))  # fmt: skip
    rows = lr_table(groups, plan.schedule, every=max(1, total // 400))
    plot_lr(rows, str(out["lr_schedule.png"]), title=f"{Path(args.config).stem}: {len(groups)} groups, {total} steps")
    per_epoch = f" ({spe} per epoch)" if spe else ""  # train.max_steps without data: no epochs to speak of
    print(f"schedule {cfg.schedule['type']}: {total} steps{per_epoch}; "
          f"base lr peak {max(r['base_lr'] for r in rows):.4g}")  # fmt: skip
    print(f"wrote {out['lr_schedule.png']}")
    if args.csv:
        write_csv(lr_table(groups, plan.schedule), str(out["lr_schedule.csv"]))
        print(f"wrote {out['lr_schedule.csv']}")
    write_model_reports(groups, model, mmap, out, args.per_param, Path(args.config).stem)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
