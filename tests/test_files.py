"""pycomp.save / pycomp.load: bit-identical round trips, sizes, the manifest, no pickle, clear errors."""
import json
import os
import pickle
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import pycomp
from pycomp.files import FORMAT_VERSION, PycompFileError, read_manifest
from pycomp.models.digits import DigitsCNN
from pycomp.nn import LAYERS, CompressedLayer
from pycomp.retention.evaluate import model_nbytes

SPECS = [("int8", {"mode": "dynamic"}), ("int8", {"mode": "weight_only"}),
         ("int4", {"group_size": 32}), ("int4", {"group_size": 32, "symmetric": True})]
HEADER_SLACK = 8192  # bytes a file may hold beyond its tensors: the safetensors header and the manifest


def _model():
    """Grouped, dilated, 'same'-padded and 1x1 convs, a linear with odd K, and a float layer kept by skip."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, padding="same", dilation=2, bias=False), nn.ReLU(),
                         nn.Conv2d(6, 5, 1), nn.Flatten(), nn.Linear(5 * 36, 37), nn.ReLU(), nn.Linear(37, 3))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model, state):
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], v) for k, v in state.items())


def _rewrite(src, dst, edit_manifest=None, edit_metadata=None, edit_tensors=None):
    """Copy a pycomp file with its manifest, header metadata or tensors edited (as a newer or hostile writer
    would); edited tensors get a matching checksum, so only load's other checks can catch them."""
    with safe_open(src, "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    manifest = json.loads(metadata["pycomp.manifest"])
    for edit, target in ((edit_manifest, manifest), (edit_metadata, metadata), (edit_tensors, tensors)):
        if edit:
            edit(target)
    if edit_tensors:
        manifest["data_sha256"] = pycomp.files._digest(tensors)
    if edit_manifest or edit_tensors:
        metadata["pycomp.manifest"] = json.dumps(manifest)
    save_file(tensors, dst, metadata=metadata)
    return dst


@pytest.mark.parametrize("spec,options", SPECS)
def test_round_trip_is_bit_identical(tmp_path, spec, options):
    model = _model()
    small = pycomp.compress(model, spec, skip=["8"], **options)
    path = tmp_path / "small.pcz"
    nbytes = pycomp.save(small, path)
    assert nbytes == os.path.getsize(path)
    skeleton = _model()
    before = _state(skeleton)
    again = pycomp.load(path, model=skeleton)
    assert _same_state(skeleton, before) and isinstance(skeleton[0], nn.Conv2d)  # the skeleton is not modified
    for i in (0, 2, 4, 6):
        a, b = small[i], again[i]
        assert type(a) is type(b) and b.name == str(i) and a.settings() == b.settings()
    assert isinstance(again[8], nn.Linear) and not again.training
    assert _same_state(again, small.state_dict())
    x = torch.randn(5, 4, 6, 6)
    with torch.no_grad():
        assert torch.equal(small(x), again(x))
    assert again._pycomp_recipe == {"spec": [spec], "options": options, "skip": ["8"]}


def test_manifest_fields_and_settings_rebuild(tmp_path):
    model = _model()
    calib = [torch.randn(100, 4, 6, 6) for _ in range(2)]
    small = pycomp.compress(model, "int4", group_size=32, method="gptq", calib=calib)
    report = {"accuracy_compressed": 0.5, "agreement": torch.tensor(0.75)}
    path = tmp_path / "gptq.pcz"
    pycomp.save(small, path, retention=report)
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == "pt" and metadata["pycomp.format_version"] == str(FORMAT_VERSION)
    m = read_manifest(path)
    assert m["format_version"] == FORMAT_VERSION and m["pycomp_version"] == pycomp.__version__
    assert m["torch_version"] == str(torch.__version__)
    assert m["recipe"] == {"spec": ["int4"], "options": {"group_size": 32, "method": "gptq",
                                                         "calib": "<calibration data>"}, "skip": []}
    assert m["retention"] == {"accuracy_compressed": 0.5, "agreement": 0.75}
    assert m["model"] == {"class": "Sequential"}
    assert sorted(m["layers"]) == ["0", "2", "4", "6", "8"]
    conv = m["layers"]["0"]
    assert conv["class"] == "Int4Conv2d" and conv["format"]["layout"] == "k-nibble"
    assert conv["settings"] == {"in_channels": 4, "out_channels": 8, "kernel_size": [3, 3], "stride": [1, 1],
                                "padding": [1, 1], "dilation": [1, 1], "groups": 2, "bias": True,
                                "group_size": 32, "symmetric": False, "round_x": True}
    assert m["layers"]["2"]["settings"]["padding"] == "same"
    assert conv["nbytes"] == sum(t.nbytes for t in small[0].state_dict().values())
    assert m["nbytes"]["compressed"] == m["nbytes"]["tensors"] == model_nbytes(small)
    for name, entry in m["layers"].items():  # settings() is what the constructor takes
        rebuilt = LAYERS[entry["class"]](**entry["settings"])
        assert rebuilt.settings() == entry["settings"] == small.get_submodule(name).settings()
        assert rebuilt.format_info() == entry["format"]


def test_digits_cnn_sizes_and_factory(tmp_path):
    """The file is the size we report: packed tensors plus a few KB of header. Sizes are printed (-s)."""
    torch.manual_seed(0)
    model = DigitsCNN()
    x = torch.randn(4, 1, 8, 8)
    sizes = {}
    for label, spec, options in [("float", None, {}), ("int8 dynamic", "int8", {}),
                                 ("int4 g128", "int4", {"group_size": 128})]:
        small = model if spec is None else pycomp.compress(model, spec, **options)
        path = tmp_path / f"{label.replace(' ', '_')}.pcz"
        sizes[label] = pycomp.save(small, path)
        assert 0 < sizes[label] - model_nbytes(small) < HEADER_SLACK
        again = pycomp.load(path)  # no skeleton: the manifest names pycomp.models.digits:DigitsCNN
        assert type(again) is DigitsCNN
        with torch.no_grad():
            assert torch.equal(small(x), again(x))
    print("digits CNN file bytes:", sizes)
    assert sizes["float"] / sizes["int8 dynamic"] > 3.5 and sizes["int8 dynamic"] / sizes["int4 g128"] > 1.7


def test_pretrained_digits_accuracy_identical_after_load(tmp_path):
    from pycomp.models.digits import digits_loaders, pretrained_digits_cnn

    model = pretrained_digits_cnn()
    _, test = digits_loaders()
    small = pycomp.compress(model, "int4", group_size=128)
    report = pycomp.retention.evaluate(model, small, test, latency=False)
    path = tmp_path / "digits_int4.pcz"
    pycomp.save(small, path, retention=report)
    again = pycomp.load(path, model=DigitsCNN())
    after = pycomp.retention.evaluate(model, again, test, latency=False)
    assert after.accuracy_compressed == report.accuracy_compressed > 0.95
    assert after.kl_divergence == report.kl_divergence and after.flipped == report.flipped
    assert read_manifest(path)["retention"]["accuracy_compressed"] == report.accuracy_compressed


def test_meta_skeleton_and_tied_weights(tmp_path):
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.Linear(8, 10, bias=False))
    model[2].weight = model[0].weight  # tied: stored once, recorded as an alias
    small = pycomp.compress(model, "int8", skip=["2"])
    path = tmp_path / "tied.pcz"
    pycomp.save(small, path)
    assert read_manifest(path)["aliases"] == {"2.weight": "0.weight"}
    with torch.device("meta"):
        skeleton = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.Linear(8, 10, bias=False))
    again = pycomp.load(path, model=skeleton)
    idx = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(small(idx), again(idx))
    assert again[2].weight.data_ptr() == again[0].weight.data_ptr()


def test_file_is_plain_safetensors_and_load_never_unpickles(tmp_path, monkeypatch):
    small = pycomp.compress(_model(), "int4", group_size=32)
    path = tmp_path / "small.pcz"
    size = pycomp.save(small, path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])  # JSON header, then raw tensor bytes and nothing else
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    assert 8 + n + max(ends) == size
    assert not data.startswith(b"PK") and not data.startswith(b"\x80")  # neither torch.save's zip nor a pickle

    def refuse(*args, **kwargs):
        raise AssertionError("pycomp.load must not unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    again = pycomp.load(path, model=_model())
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        assert torch.equal(small(x), again(x))


@pytest.fixture
def saved(tmp_path):
    small = pycomp.compress(DigitsCNN(), "int8")
    path = tmp_path / "digits.pcz"
    pycomp.save(small, path)
    return path


def _raises_and_changes_nothing(path, match, model=None):
    before = path.read_bytes()
    state = None if model is None else _state(model)
    with pytest.raises(PycompFileError, match=match):
        pycomp.load(path, model=model)
    assert path.read_bytes() == before
    assert model is None or _same_state(model, state)


def test_corrupt_and_truncated_files_raise(saved, tmp_path):
    data = saved.read_bytes()
    bad = tmp_path / "bad.pcz"
    bad.write_bytes(os.urandom(len(data)))
    _raises_and_changes_nothing(bad, "not a readable pycomp file")
    for cut in (0, 5, 100, len(data) // 2, len(data) - 1):
        bad.write_bytes(data[:cut])
        _raises_and_changes_nothing(bad, "not a readable pycomp file")
    flipped = bytearray(data)
    flipped[-100] ^= 0xFF  # inside the tensor data: only the checksum can tell
    bad.write_bytes(bytes(flipped))
    _raises_and_changes_nothing(bad, "checksum")
    save_file({"w": torch.zeros(2)}, str(bad))
    _raises_and_changes_nothing(bad, "without a pycomp manifest")
    with pytest.raises(FileNotFoundError):
        pycomp.load(tmp_path / "missing.pcz")


def test_newer_or_foreign_files_raise(saved, tmp_path):
    def newer(metadata):
        metadata["pycomp.format_version"] = str(FORMAT_VERSION + 1)
        metadata["pycomp.manifest"] = json.dumps({"format_version": FORMAT_VERSION + 1, "anything": "new"})

    _raises_and_changes_nothing(_rewrite(saved, tmp_path / "a.pcz", edit_metadata=newer), "newer than this pycomp")
    layer_newer = _rewrite(saved, tmp_path / "b.pcz",
                           edit_manifest=lambda m: m["layers"]["fc1"]["format"].update(version=2))
    _raises_and_changes_nothing(layer_newer, "Int8Linear 'fc1': stored in int8 format version 2, newer")

    def foreign(m):
        m["layers"]["fc1"]["class"] = "os.system"

    foreign_file = _rewrite(saved, tmp_path / "c.pcz", edit_manifest=foreign)
    _raises_and_changes_nothing(foreign_file, "'os.system' is not a layer")
    bad_settings = _rewrite(saved, tmp_path / "d.pcz",
                            edit_manifest=lambda m: m["layers"]["fc1"]["settings"].update(mode="static"))
    _raises_and_changes_nothing(bad_settings, "layer 'fc1': cannot build Int8Linear")

    def widen(t):  # a qweight with -128, outside the int8 format: checked after loading, never a wrong answer
        t["fc1.qweight"][0, 0] = -128

    _raises_and_changes_nothing(_rewrite(saved, tmp_path / "e.pcz", edit_tensors=widen), "'fc1'.*-128")


def test_mismatched_skeletons_raise_and_are_left_alone(saved, tmp_path):
    _raises_and_changes_nothing(saved, "no module 'conv1'", model=_model())
    _raises_and_changes_nothing(saved, "'conv1' has out_channels=16.*out_channels=32", model=DigitsCNN(width=0.5))
    swapped = DigitsCNN()
    swapped.fc2 = nn.Conv2d(128, 10, 1)
    _raises_and_changes_nothing(saved, "'fc2' is a Conv2d; the file's Int8Linear 'fc2' replaces an nn.Linear",
                                model=swapped)
    float_file = tmp_path / "float.pcz"
    pycomp.save(pycomp.compress(DigitsCNN(), "int8", skip=["fc2"]), float_file)
    wider = DigitsCNN()
    wider.fc2 = nn.Linear(128, 11)
    _raises_and_changes_nothing(float_file, r"tensor 'fc2.weight' \(module 'fc2'\).*\(10, 128\).*\(11, 128\)",
                                model=wider)
    extra = DigitsCNN()
    extra.register_buffer("running", torch.zeros(3))
    _raises_and_changes_nothing(float_file, "lacks tensors the model needs: 'running'", model=extra)
    seq_file = tmp_path / "seq.pcz"
    pycomp.save(pycomp.compress(_model(), "int8"), seq_file)
    _raises_and_changes_nothing(seq_file, "pass its float architecture")


def test_failed_save_leaves_the_existing_file(saved, monkeypatch):
    before = saved.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(pycomp.files, "save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        pycomp.save(pycomp.compress(DigitsCNN(), "int4"), saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before and os.listdir(saved.parent) == [saved.name]
    saved.chmod(0o640)
    pycomp.save(DigitsCNN(), saved)  # replacing a file keeps its permissions
    assert saved.stat().st_mode & 0o777 == 0o640
    before = saved.read_bytes()

    class Odd(nn.Linear):
        def get_extra_state(self):
            return {"not": "a tensor"}

    with pytest.raises(PycompFileError, match="'0._extra_state'.*not a tensor"):
        pycomp.save(nn.Sequential(Odd(2, 2)), saved)
    assert saved.read_bytes() == before


def test_unregistered_layer_classes_are_refused_at_save(tmp_path):
    class MyInt8(pycomp.nn.Int8Linear):
        pass

    layer = MyInt8(4, 4)
    assert isinstance(layer, CompressedLayer)
    with pytest.raises(PycompFileError, match="MyInt8 is not in pycomp.nn.LAYERS"):
        pycomp.save(nn.Sequential(layer), tmp_path / "x.pcz")
    assert not os.listdir(tmp_path)


def test_a_single_layer_model_needs_no_skeleton(tmp_path):
    torch.manual_seed(0)
    small = pycomp.compress(nn.Conv2d(6, 4, 3, groups=2), "int4", group_size=32, symmetric=True)
    path = tmp_path / "layer.pcz"
    pycomp.save(small, path)
    again = pycomp.load(path)
    assert type(again) is type(small) and again.settings() == small.settings()
    x = torch.randn(2, 6, 5, 5)
    with torch.no_grad():
        assert torch.equal(small(x), again(x))
    _raises_and_changes_nothing(path, "is a Linear; the file's Int4Conv2d replaces an nn.Conv2d", model=nn.Linear(6, 4))
