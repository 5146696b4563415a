"""Registries: lazy locations, nearest-match errors, duplicates, custom_imports from a config."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch

from recipes import ADAPTERS, SCHEDULES, STRATEGIES, build_param_groups, build_schedule, canonical_name
from recipes.adapter import is_norm_name
from recipes.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
# every registry, by the module that declares it
REGISTRIES = {
    "ADAPTERS": "recipes.registry",
    "STRATEGIES": "recipes.registry",
    "SCHEDULES": "recipes.registry",
    "MODELS": "recipes.train.registry",
    "DATASETS": "recipes.train.registry",
    "TASKS": "recipes.train.registry",
    "OPTIMIZERS": "recipes.train.registry",
}


def _registry(name: str):
    return getattr(importlib.import_module(REGISTRIES[name]), name)


def _registrations() -> list[tuple[str, str]]:
    """(registry, module) of every ``REGISTRY.register_module`` call in recipes/ and zoo/."""
    out = []
    for path in sorted([*ROOT.glob("recipes/**/*.py"), *ROOT.glob("zoo/*.py")]):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr == "register_module"
                    and isinstance(node.value, ast.Name) and node.value.id in REGISTRIES):  # fmt: skip
                out.append((node.value.id, module))
    return out


def test_every_module_that_registers_lies_in_its_registrys_locations():
    """A registry finds an entry on its own only if the entry's module is one its ``locations`` import."""
    found = _registrations()
    assert {r for r, _ in found} == set(REGISTRIES)  # the scan sees every registry
    for reg, module in found:
        locations = _registry(reg)._locations
        assert any(module == loc or module.startswith(loc + ".") for loc in locations), (
            f"{module} registers into {reg}, whose locations {locations} do not import it"
        )
    for reg in REGISTRIES:  # a package location imports every module in it (pkgutil), as zoo/ does
        for loc in _registry(reg)._locations:
            init = ROOT.joinpath(*loc.split(".")) / "__init__.py"
            if init.exists():
                assert "pkgutil.iter_modules(__path__)" in init.read_text(), f"{init} does not import its modules"


_LIST_ALL = """
import importlib, json, pkgutil, sys
import recipes, zoo
for pkg in (recipes, zoo):  # every module of the package, optional bridges where their package is installed
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        try:
            importlib.import_module(info.name)
        except ImportError:
            pass
out = {}
for name, module in json.loads(sys.argv[1]).items():
    out[name] = sorted(getattr(importlib.import_module(module), name).module_dict)
print(json.dumps(out))
"""
_LOOKUP_ONE = """
import importlib, json, sys
reg = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])
names = reg.names()
for n in names:
    reg.lookup(n)
print(json.dumps(names))
"""


@pytest.mark.slow
def test_a_fresh_interpreter_finds_every_registered_name():
    """Each registry alone, in its own fresh interpreter, finds everything any module of the package registers."""
    run = [sys.executable, "-c"]
    procs = {
        name: subprocess.Popen([*run, _LOOKUP_ONE, module, name], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for name, module in REGISTRIES.items()
    }
    everything = subprocess.run([*run, _LIST_ALL, json.dumps(REGISTRIES)], cwd=ROOT, capture_output=True, text=True)
    assert everything.returncode == 0, everything.stderr
    expected = json.loads(everything.stdout.splitlines()[-1])
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, name
        missing = sorted(set(expected[name]) - set(json.loads(out.splitlines()[-1])))
        assert not missing, f"{name}: a fresh interpreter does not find {missing}"
        assert expected[name], name


def test_lazy_locations_register_everything():
    assert "timm_vit" in ADAPTERS.names()
    assert {"layer_decay", "component_depth", "flat"} <= set(STRATEGIES.names())
    assert {"cosine", "linear", "constant", "step", "multistep", "wsd", "inverse_sqrt", "noam"} <= set(
        SCHEDULES.names()
    )


def test_unknown_names_list_known_and_nearest():
    with pytest.raises(KeyError, match=r"unknown adapters 'timm_vti'. Did you mean 'timm_vit'\?.*Known: "):
        ADAPTERS.lookup("timm_vti")
    with pytest.raises(KeyError, match="Did you mean 'cosine'"):
        SCHEDULES.build(dict(type="cosin", total_steps=3))


def test_duplicate_name_raises(registries):
    with pytest.raises(KeyError, match="already registered"):
        SCHEDULES.register_module("cosine", module=type("Dup", (), {}))


def test_auto_adapter_errors_on_unknown_model():
    # flat needs no adapter (any module); depth does, and the error names the model
    with pytest.raises(ValueError, match=r"no registered adapter knows torch.nn.modules.linear.Linear"):
        build_param_groups(torch.nn.Linear(2, 2), dict(type="layer_decay", lr=1.0, decay=0.5))


def test_custom_imports_register_a_users_schedule(tmp_path, monkeypatch, registries):
    (tmp_path / "my_sched.py").write_text(
        textwrap.dedent("""
        from recipes.registry import SCHEDULES
        from recipes.schedules import Schedule

        @SCHEDULES.register_module("my_half")
        class Half(Schedule):
            def decay(self, t):
                return 0.5
    """)
    )
    (tmp_path / "cfg.py").write_text(
        textwrap.dedent("""
        custom_imports = dict(imports=["my_sched"], allow_failed_imports=False)
        model = dict(type="timm", name="vit_tiny_patch16_224")
        strategy = dict(type="flat", lr=1.0)
        schedule = dict(type="my_half", lr=2.0)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cfg = load_config(tmp_path / "cfg.py", ["schedule.lr=4.0"])
        assert build_schedule(cfg.schedule, total_steps=10).value(5) == 2.0
    finally:  # the registries fixture removes the entry; the module goes too
        sys.modules.pop("my_sched", None)


@pytest.mark.parametrize(
    "name,canon,role",
    [
        ("blocks.3.attn.qkv.weight", "blocks.3.attn.qkv.weight", None),
        ("base_model.model.blocks.3.attn.qkv.lora_A.default.weight", "blocks.3.attn.qkv.weight", "lora_A"),
        ("base_model.model.blocks.3.attn.qkv.lora_B.default.weight", "blocks.3.attn.qkv.weight", "lora_B"),
        ("blocks.3.attn.qkv.base_layer.bias", "blocks.3.attn.qkv.bias", None),
        ("module._orig_mod.head.weight", "head.weight", None),
        ("base_model.model.head.modules_to_save.default.weight", "head.weight", None),
        ("base_model.model.head.original_module.bias", "head.bias", None),
        ("x.to_q.lora_magnitude_vector.default", "x.to_q.weight", "lora_magnitude"),
        ("x.emb.lora_embedding_B.default", "x.emb.weight", "lora_B"),
    ],
)
def test_canonical_names(name, canon, role):
    assert canonical_name(name) == (canon, role)


@pytest.mark.parametrize(
    "name,norm",
    [
        ("blocks.0.norm1.weight", True),
        ("encoder.layer.0.layernorm_before.bias", True),
        ("ln_post.weight", True),
        ("x.attn.norm_added_q.weight", True),
        ("bn1.weight", True),
        ("blocks.0.attn.qkv.weight", False),
        ("transformer.ln_f.weight", True),
        ("head.weight", False),
    ],
)
def test_norm_names(name, norm):
    assert is_norm_name(name) is norm


def test_peft_lora_on_timm_takes_the_wrapped_layer():
    peft = pytest.importorskip("peft")
    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=8, depth=2, num_classes=3, embed_dim=8, num_heads=2
    )
    model = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["qkv"], modules_to_save=["head"]))
    groups = build_param_groups(
        model, dict(type="layer_decay", lr=1.0, decay=0.5, weight_decay=0.05, loraplus_ratio=16)
    )
    lr = {n: g["lr"] for g in groups for n in g["param_names"]}
    assert lr["base_model.model.blocks.0.attn.qkv.lora_A.default.weight"] == 0.25
    assert lr["base_model.model.blocks.0.attn.qkv.lora_B.default.weight"] == 0.25 * 16
    assert lr["base_model.model.blocks.1.attn.qkv.lora_B.default.weight"] == 0.5 * 16
    assert lr["base_model.model.head.modules_to_save.default.weight"] == 1.0
    names = {g["name"] for g in groups}
    assert "blocks.01.self_attn.lora_B.decay" in names


def test_the_registries_fixture_restores_every_registry(registries):
    SCHEDULES.register_module("my_test_only", module=type("Half", (), {}))
    assert "my_test_only" in SCHEDULES.names()


def test_no_test_left_an_entry_behind():
    """Runs after the test above: the fixture removed what it registered."""
    assert "my_test_only" not in SCHEDULES.names()
