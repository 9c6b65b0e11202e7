"""pycomp.Recipe and compress(model, recipe): parsing, per-step options, overrides, skips, training steps,
appending to a recorded recipe, and reproducing a result from its file's manifest."""
import dataclasses
import json
import sys
import types

import pytest
import torch
import yaml
from torch import nn

import pycomp
from pycomp.nn import Int4Conv2d, Int4Linear, Int8Conv2d, Int8Linear
from pycomp.recipe import TRAINING_STEPS, Recipe, Step

YAML = """
skip: ["6"]
steps:
  - finetune: {epochs: 1, lr: 0.002}
  - int4:
      group_size: 64
      skip: ["4"]
      overrides: {"0": {group_size: 32}}
  - int8
"""


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 40), nn.Linear(40, 8),
                         nn.ReLU(), nn.Linear(8, 3))


def _train(n=3):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_yaml_steps_form_and_call_form_are_one_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(YAML)
    recipe = Recipe.load(path)
    assert [s.technique for s in recipe.steps] == ["finetune", "int4", "int8"] and recipe.skip == ("6",)
    assert recipe.steps[1] == Step("int4", {"group_size": 64}, ("4",), (("0", {"group_size": 32}),))
    recorded = recipe.to_dict()
    assert recorded == {"spec": ["finetune", "int4", "int8"],
                        "options": [{"epochs": 1, "lr": 0.002},
                                    {"group_size": 64, "skip": ["4"], "overrides": {"0": {"group_size": 32}}}, {}],
                        "skip": ["6"]}
    assert Recipe.from_dict(json.loads(json.dumps(recorded))) == recipe
    assert Recipe.from_dict({"spec": "int8", "options": {"mode": "weight_only"}}).to_dict() == \
        {"spec": ["int8"], "options": {"mode": "weight_only"}, "skip": []}


def test_recipe_runs_its_steps_with_their_own_options():
    model = _model()
    small = pycomp.compress(model, Recipe.from_dict(yaml.safe_load(YAML)), train=_train())
    # int4 took 0 (its override: g32) and 3; "4" was skipped by int4 and so went to int8; "6" stayed float
    assert isinstance(small[0], Int4Conv2d) and small[0].group_size == 32
    assert isinstance(small[3], Int4Linear) and small[3].group_size == 64
    assert isinstance(small[4], Int8Linear) and isinstance(small[6], nn.Linear)
    assert not torch.equal(small[6].weight, model[6].weight)  # finetune trained before quantizing
    assert isinstance(model[0], nn.Conv2d)


def test_chain_options_go_to_the_step_that_takes_them():
    model = _model()
    small = pycomp.compress(model, ["finetune", "int4"], skip=["6"], train=_train(), epochs=1, group_size=32)
    assert small._pycomp_recipe == {"spec": ["finetune", "int4"], "options": [{"epochs": 1}, {"group_size": 32}],
                                    "skip": ["6"]}
    assert isinstance(small[3], Int4Linear) and small[3].group_size == 32
    with pytest.raises(TypeError, match=r"option\(s\) \['grup_size'\] fit no step of \['int4', 'int8'\].*int4 takes"):
        pycomp.compress(model, ["int4", "int8"], grup_size=32)
    with pytest.raises(TypeError, match="options \\['mode'\\] given with a Recipe"):
        pycomp.compress(model, Recipe.from_call("int8"), mode="dynamic")


def test_overrides_and_skips_on_a_single_technique():
    small = pycomp.compress(_model(), "int4", group_size=128, overrides={"[04]": {"group_size": 32}}, skip="6")
    assert [small[i].group_size for i in (0, 3, 4)] == [32, 128, 32] and isinstance(small[6], nn.Linear)
    with pytest.raises(TypeError, match="int4: unknown option.*'mode'"):
        pycomp.compress(_model(), "int4", overrides={"0": {"mode": "dynamic"}})


def test_missing_data_is_named_before_any_work():
    model = _model()
    with pytest.raises(ValueError, match=r"compress: step 1 \(finetune\) trains the model; pass train="):
        pycomp.compress(model, ["finetune", "int8"])
    with pytest.raises(ValueError, match=r"compress: step 2 \(int4\) calibrates.*pass calib="):
        pycomp.compress(model, Recipe.from_dict({"steps": ["int8", {"int4": {"method": "gptq"}}], "skip": []}))
    with pytest.raises(ValueError, match="finetune.*no trainable parameter"):
        pycomp.compress(model, ["int8", "finetune"], train=_train())


def test_recipe_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown technique 'int3'; available: .*finetune.*int8"):
        Recipe.from_dict({"steps": ["int3"]})
    with pytest.raises(ValueError, match="step 2 must be a technique name"):
        Recipe.from_dict({"steps": ["int8", {"int4": {}, "int8": {}}]})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['skp'\]"):
        Recipe.from_dict({"steps": ["int8"], "skp": ["x"]})
    with pytest.raises(TypeError, match=r"finetune: unknown option\(s\) \['epoch'\]"):
        Recipe.from_dict({"steps": [{"finetune": {"epoch": 2}}]})
    with pytest.raises(ValueError, match="finetune: skip and overrides apply to steps that replace layers"):
        Recipe.from_dict({"steps": [{"finetune": {"skip": ["0"]}}]})
    with pytest.raises(ValueError, match="Recipe: no step"):
        Recipe.from_dict({"steps": []})
    path = tmp_path / "bad.yaml"
    path.write_text("steps: [{int4: {group_size: 48}}]\n")
    with pytest.raises(ValueError, match="bad.yaml: int4: group_size must be one of"):
        Recipe.load(path)


def test_compress_appends_to_the_recorded_recipe_and_the_record_reproduces_it():
    model = _model()
    first = pycomp.compress(model, "int4", skip=["4", "6"], group_size=32)
    second = pycomp.compress(first, "int8", mode="weight_only")
    rec = second._pycomp_recipe
    assert rec == {"spec": ["int4", "int8"],
                   "options": [{"group_size": 32, "skip": ["4", "6"]}, {"mode": "weight_only"}], "skip": []}
    again = pycomp.compress(model, Recipe.from_dict(rec))
    assert [type(m) for m in again] == [type(m) for m in second] and _same(again, second)


def test_result_is_reproducible_from_its_file_manifest(tmp_path):
    """Seeded training + quantization: the manifest's recipe, run again on the same model and data,
    gives bit-identical packed weights."""
    model = _model()
    model[5] = nn.Dropout(0.3)  # so the training step's seed matters
    recipe = Recipe.from_dict({"steps": [{"finetune": {"epochs": 2, "seed": 3}}, {"int4": {"group_size": 32}}],
                               "skip": ["6"]})
    small = pycomp.compress(model, recipe, train=_train())
    pycomp.save(small, tmp_path / "small.pcz")
    manifest_recipe = pycomp.load(tmp_path / "small.pcz", model=model)._pycomp_recipe
    assert manifest_recipe == recipe.to_dict()
    again = pycomp.compress(model, Recipe.from_dict(manifest_recipe), train=_train())
    assert _same(again, small)
    other = pycomp.compress(model, dataclasses.replace(recipe, steps=(
        Step("finetune", {"epochs": 2, "seed": 4}), *recipe.steps[1:])), train=_train())
    assert not _same(other, small)  # the seed is what made the two runs agree


def test_new_table_rows_work_without_changes(monkeypatch):
    """A technique row and a training step added to the tables run through Recipe and compress unchanged."""

    @dataclasses.dataclass(frozen=True)
    class HalfConfig:
        bits: int = 16

        def convert(self, module, name):
            if not isinstance(module, nn.Linear):
                return None
            out = nn.Linear(module.in_features, module.out_features).requires_grad_(False)
            out.weight.copy_(module.weight.half().float())
            out.bias.copy_(module.bias)
            return out

    calls = []

    def zero_bias(model, *, teacher, train, value: float = 0.0):
        calls.append((teacher, len(list(train))))
        for m in model.modules():
            if isinstance(m, nn.Linear):
                torch.nn.init.constant_(m.bias, value)
        return model

    monkeypatch.setitem(pycomp.TECHNIQUES, "half", HalfConfig)
    monkeypatch.setitem(TRAINING_STEPS, "zero_bias", zero_bias)
    model = _model()
    small = pycomp.compress(model, ["zero_bias", "half"], train=_train(2), value=0.5, bits=16)
    assert small._pycomp_recipe["options"] == [{"value": 0.5}, {"bits": 16}]
    assert calls == [(model, 2)] and float(small[3].bias[0].detach()) == 0.5
    assert torch.equal(small[3].weight, model[3].weight.half().float())


def test_distill_step_drives_a_distiller(monkeypatch):
    """The glue against pycomp.distill's protocol, Distiller(teacher, student, ...).fit(train, ...), with a
    stand-in Distiller: each option goes to the constructor or to fit, whichever names it."""
    seen = {}

    class Distiller:
        def __init__(self, teacher, student, temperature: float = 4.0, alpha: float = 0.9):
            self.teacher, self.student = teacher, student
            seen["init"] = (temperature, alpha)

        def fit(self, train, epochs: int = 1, lr: float = 1e-3):
            seen["fit"] = (len(list(train)), epochs, lr)
            with torch.no_grad():
                self.student[6].bias.add_(1.0)
            return {"history": []}

    monkeypatch.setitem(sys.modules, "pycomp.distill", types.SimpleNamespace(Distiller=Distiller))
    model = _model()
    small = pycomp.compress(model, ["distill", "int8"], skip=["6"], train=_train(2), temperature=2.0, epochs=3)
    assert seen == {"init": (2.0, 0.9), "fit": (2, 3, 1e-3)}
    assert torch.equal(small[6].bias, model[6].bias + 1.0) and isinstance(small[3], Int8Linear)
    assert small._pycomp_recipe["options"] == [{"temperature": 2.0, "epochs": 3}, {}]
    with pytest.raises(TypeError, match=r"distill: unknown option\(s\) \['beta'\]"):
        pycomp.compress(model, Recipe.from_dict({"steps": [{"distill": {"beta": 1}}]}), train=_train())


def test_gptq_step_in_a_recipe_records_its_calibration():
    model = _model()
    calib = [torch.randn(200, 1, 8, 8)]
    small = pycomp.compress(model, Recipe.from_dict({"steps": [{"int4": {"method": "gptq", "group_size": 32}}],
                                                     "skip": ["6"]}), calib=calib)
    assert small._pycomp_recipe["options"] == {"method": "gptq", "group_size": 32, "calib": "<calibration data>"}
    again = pycomp.compress(model, Recipe.from_dict(small._pycomp_recipe), calib=calib)
    assert _same(again, small) and isinstance(again[0], Int4Conv2d) and isinstance(again[6], nn.Linear)
    assert isinstance(pycomp.compress(model, "int8")[0], Int8Conv2d)


def test_an_option_json_cannot_hold_is_named_in_the_record(monkeypatch, tmp_path):
    def scaled(model, *, teacher, train, factor=1.0):
        return model

    monkeypatch.setitem(TRAINING_STEPS, "scaled", scaled)
    small = pycomp.compress(_model(), ["scaled", "int8"], train=_train(1), factor=torch.tensor(2.0))
    assert small._pycomp_recipe["options"] == [{"factor": "<Tensor>"}, {}]
    pycomp.save(small, tmp_path / "s.pcz")  # the manifest stays JSON
