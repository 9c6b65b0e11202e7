"""`pycomp.save` / `pycomp.load`: a model in one file, its packed tensors as they are plus a JSON manifest.

The file is plain safetensors (8-byte header length, JSON header, raw tensor bytes), so it holds no
pickle and loading runs no code from it. The header's string metadata carries:

- "format": "pt", the safetensors convention for torch tensors;
- "pycomp.format_version": FORMAT_VERSION as text, checked before anything else is parsed;
- "pycomp.manifest": JSON with format_version, pycomp_version, torch_version, model (class, and the
  factory name and kwargs when it is one of pycomp.models.FACTORIES), recipe (what compress used),
  layers (qualified name -> class, settings, format, nbytes), aliases (tied tensors stored once),
  nbytes (tensors, compressed, float), data_sha256 (of the tensors' names, dtypes and bytes) and retention.

Tensors keep their state_dict names: compressed layers their packed buffers (int8 qweight, uint8 nibbles,
float16/float32 scales, zero points, bias), other modules their float parameters and buffers. Loading
rebuilds layer classes from pycomp.nn.LAYERS and models from pycomp.models.FACTORIES only, by name.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
import secrets
import stat

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from pycomp.models import FACTORIES, factory_of
from pycomp.nn import LAYERS, CompressedLayer
from pycomp.nn.base import put_layer

FORMAT_VERSION = 1
_VERSION_KEY = "pycomp.format_version"
_MANIFEST_KEY = "pycomp.manifest"
_LISTED = 8  # names quoted in an error before "and N more"


class PycompFileError(ValueError):
    """A model that cannot be written to a pycomp file, or a file that cannot be read back into one."""


def save(model: nn.Module, path: str | os.PathLike, *, retention=None) -> int:
    """Write `model` to one file at `path` (".pcz" by convention); returns the bytes written, the model's size.

    retention: a RetentionReport (anything with to_dict()) or a dict, recorded in the manifest.
    The model is not modified. The file is written next to `path` under a temporary name and then
    moved onto it, so a failed save leaves whatever was at `path` as it was.
    """
    path = os.fspath(path)
    layers = _layer_entries(model)
    tensors, aliases = _unique_tensors(model)
    total = sum(t.nbytes for t in tensors.values())
    # A compressed layer may hold others (low-rank factors that are Int8Linear): count each byte once.
    compressed = sum(e["nbytes"] for n, e in layers.items()
                     if not any(n.startswith(f"{outer}.") for outer in layers if outer != n))
    manifest = {
        "format_version": FORMAT_VERSION,
        "pycomp_version": _pycomp_version(),
        "torch_version": str(torch.__version__),
        "model": {"class": type(model).__name__, **(factory_of(model) or {})},
        "recipe": getattr(model, "_pycomp_recipe", None),
        "layers": layers,
        "aliases": aliases,
        "nbytes": {"tensors": total, "compressed": compressed, "float": total - compressed},
        "data_sha256": _digest(tensors),
        "retention": retention.to_dict() if hasattr(retention, "to_dict") else retention,
    }
    metadata = {"format": "pt", _VERSION_KEY: str(FORMAT_VERSION),
                _MANIFEST_KEY: json.dumps(manifest, sort_keys=True, default=_json_default)}
    _write_replacing(path, tensors, metadata)
    return os.path.getsize(path)


def load(path: str | os.PathLike, model: nn.Module | None = None, *, device: str | torch.device = "cpu") -> nn.Module:
    """Read a file written by `save` back into a model, in eval mode, on `device`.

    model: the float architecture the file's model was compressed from (a skeleton, e.g. DigitsCNN()).
    It is not modified: load deep-copies it, replaces the modules the file names by compressed layers
    rebuilt from their settings, and loads every tensor, strictly (names, shapes, integer or float kind).
    Its own weights are never read, so a skeleton built under `torch.device("meta")` costs no memory.
    model=None: the file must name a model of pycomp.models.FACTORIES, or hold a single layer.
    Raises PycompFileError (a ValueError) for a corrupt, truncated, too new or mismatched file, naming
    the tensor or layer; FileNotFoundError when there is no file.
    """
    path = os.fspath(path)
    manifest, tensors = _read(path)
    layers = {name: _rebuild(name, entry) for name, entry in manifest["layers"].items()}
    out = _skeleton(path, manifest, model, layers)
    _check_state(out, tensors, layers)
    out.load_state_dict(tensors, strict=True, assign=True)
    for layer in layers.values():
        try:
            layer.check_buffers()
        except ValueError as e:
            raise PycompFileError(f"{path}: {e}") from None
    _check_no_meta(out)
    out._pycomp_recipe = manifest.get("recipe")
    return out.to(device).eval()


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a pycomp file (no tensor is read)."""
    path = os.fspath(path)
    return _open(path, lambda f: _parse_manifest(path, f.metadata() or {}))


# --- writing ---------------------------------------------------------------------------------------

def _pycomp_version() -> str:
    import pycomp  # the package imports this module: read its version when saving, not at import

    return pycomp.__version__


def _layer_entries(model: nn.Module) -> dict:
    entries = {}
    for name, m in model.named_modules():
        if not isinstance(m, CompressedLayer):
            continue
        if LAYERS.get(type(m).__name__) is not type(m):
            raise PycompFileError(f"cannot save '{name}': {type(m).__name__} is not in pycomp.nn.LAYERS, "
                                  "so pycomp.load could not rebuild it")
        entries[name] = {"class": type(m).__name__, "settings": m.settings(), "format": m.format_info(),
                         "nbytes": sum(t.nbytes for t in m.state_dict().values())}
    return entries


def _unique_tensors(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The state_dict as contiguous CPU tensors, a tensor reached by two names (tied weights) stored once:
    (tensors, aliases {second name: stored name}). Other views sharing memory are copied (safetensors
    refuses shared memory)."""
    tensors, aliases, views, storages = {}, {}, {}, set()
    for key, t in model.state_dict().items():
        if not isinstance(t, Tensor):
            raise PycompFileError(f"cannot save '{key}': its state is a {type(t).__name__}, not a tensor; "
                                  "a pycomp file holds tensors only")
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        view = (t.device, ptr, t.storage_offset(), t.dtype, tuple(t.shape), t.stride())
        if ptr is not None and view in views:
            aliases[key] = views[view]
            continue
        shared = ptr is None or (t.device, ptr) in storages
        views[view] = key
        storages.add((t.device, ptr))
        t = t.detach().cpu()
        tensors[key] = t.clone() if shared else t.contiguous()
    return tensors, aliases


def _digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _json_default(value):
    if hasattr(value, "tolist"):  # tensors and numpy values in a report
        return value.tolist()
    return f"<{type(value).__name__}>"


def _write_replacing(path: str, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    folder, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{base}.{secrets.token_hex(4)}.tmp")  # same folder: os.replace stays atomic
    try:
        with open(tmp, "xb"):  # a new file gets the umask's mode; safetensors writes 0600
            pass
        mode = os.stat(path if os.path.exists(path) else tmp).st_mode
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, stat.S_IMODE(mode))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# --- reading ---------------------------------------------------------------------------------------

def _open(path: str, read):
    """read(safe_open handle) for the file at `path`, safetensors' errors turned into PycompFileError."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no pycomp file at {path!r}")
    try:
        with safe_open(path, framework="pt") as f:
            return read(f)
    except SafetensorError as e:
        raise PycompFileError(f"{path}: not a readable pycomp file (corrupt or truncated?): {e}") from None


def _read(path: str) -> tuple[dict, dict[str, Tensor]]:
    def read(f):
        manifest = _parse_manifest(path, f.metadata() or {})
        return manifest, {k: f.get_tensor(k) for k in f.keys()}

    manifest, tensors = _open(path, read)
    if _digest(tensors) != manifest["data_sha256"]:
        raise PycompFileError(f"{path}: the tensor data does not match the manifest's checksum; the file is corrupt")
    for alias, stored in manifest["aliases"].items():
        if stored not in tensors or alias in tensors:
            raise PycompFileError(f"{path}: manifest alias {alias!r} -> {stored!r} does not match the stored tensors")
        tensors[alias] = tensors[stored]
    return manifest, tensors


def _parse_manifest(path: str, metadata: dict[str, str]) -> dict:
    if _MANIFEST_KEY not in metadata:
        raise PycompFileError(f"{path}: a safetensors file without a pycomp manifest; was it written by pycomp.save?")
    version = metadata.get(_VERSION_KEY, "")
    if not version.isdigit():
        raise PycompFileError(f"{path}: header field {_VERSION_KEY} is {version!r}, not a version number")
    if int(version) > FORMAT_VERSION:  # checked first: a newer manifest may be shaped differently
        raise PycompFileError(f"{path}: pycomp file format version {version} is newer than this pycomp "
                              f"({_pycomp_version()}) reads (up to {FORMAT_VERSION}); upgrade pycomp")
    try:
        manifest = json.loads(metadata[_MANIFEST_KEY])
    except json.JSONDecodeError as e:
        raise PycompFileError(f"{path}: the manifest is not valid JSON ({e})") from None
    shape = {"format_version": int, "model": dict, "layers": dict, "aliases": dict, "data_sha256": str}
    for key, kind in shape.items():
        if not isinstance(manifest, dict) or not isinstance(manifest.get(key), kind):
            raise PycompFileError(f"{path}: manifest field {key!r} is missing or not a {kind.__name__}")
    if manifest["format_version"] != int(version):
        raise PycompFileError(f"{path}: the manifest says format version {manifest['format_version']}, "
                              f"the header {version}")
    for name, entry in manifest["layers"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("class"), str)
                and isinstance(entry.get("settings"), dict) and isinstance(entry.get("format"), dict)):
            raise PycompFileError(f"{path}: manifest entry of layer '{name}' needs class, settings and format")
    return manifest


def _rebuild(name: str, entry: dict) -> CompressedLayer:
    """The layer the manifest describes, with empty buffers on the meta device (load assigns the file's)."""
    cls = LAYERS.get(entry["class"])
    if cls is None:
        raise PycompFileError(f"layer '{name}': {entry['class']!r} is not a layer this pycomp knows "
                              f"({', '.join(sorted(LAYERS))})")
    settings = entry["settings"]
    reserved = sorted(set(settings) & {"device", "dtype", "name"})
    if reserved:
        raise PycompFileError(f"layer '{name}': settings may not set {reserved}")
    try:
        with torch.device("meta"):
            layer = cls(**settings, name=name)
    except (TypeError, ValueError, RuntimeError) as e:
        raise PycompFileError(f"layer '{name}': cannot build {cls.__name__} from settings {settings}: {e}") from None
    _check_format(layer, entry["format"])
    return layer


def _check_format(layer: CompressedLayer, stored: dict) -> None:
    expected = layer.format_info()
    if stored == expected:
        return
    version, known = stored.get("version"), expected.get("version")
    if stored.get("format") == expected.get("format") and isinstance(version, int) and version > known:
        raise PycompFileError(f"{layer.label}: stored in {stored['format']} format version {version}, newer than "
                              f"this pycomp reads ({known}); upgrade pycomp")
    raise PycompFileError(f"{layer.label}: the file stores {stored}; this pycomp reads {expected}")


def _skeleton(path: str, manifest: dict, model: nn.Module | None, layers: dict) -> nn.Module:
    """A copy of `model` (or the factory's model) with the file's layers in place."""
    if model is not None:
        out = copy.deepcopy(model)
    elif "" in layers:  # the model is itself one compressed layer
        out = None
    else:
        out = _from_factory(path, manifest["model"])
    for name, layer in layers.items():
        if name == "":
            if len(layers) > 1:
                raise PycompFileError(f"{path}: the manifest has a root layer and other layers")
            if out is not None:
                _check_replaces(out, layer)
            out = layer
            continue
        try:
            old = out.get_submodule(name)
        except AttributeError:
            raise PycompFileError(f"the model has no module '{name}', which the file holds as {layer.label}; "
                                  "is it the architecture that was compressed?") from None
        _check_replaces(old, layer)
        put_layer(out, name, layer)
    return out


def _from_factory(path: str, model: dict) -> nn.Module:
    cls = FACTORIES.get(model.get("name"))
    if cls is None:
        raise PycompFileError(f"{path}: the file holds a {model.get('class', 'model')} that pycomp cannot build "
                              "by itself; pass its float architecture: pycomp.load(path, model=MyModel(...))")
    kwargs = model.get("kwargs") or {}
    try:
        with torch.device("meta"):
            return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise PycompFileError(f"{path}: cannot build {model['name']} from kwargs {kwargs}: {e}") from None


def _check_replaces(old: nn.Module, layer: CompressedLayer) -> None:
    """`old` must be the float module `layer` was made from (or an equal compressed layer)."""
    settings = layer.settings()
    if type(old) is type(layer) and old.settings() == settings:
        return
    if not isinstance(old, layer.float_type):
        raise PycompFileError(f"the model's module '{layer.name}' is a {type(old).__name__}; the file's "
                              f"{layer.label} replaces an nn.{layer.float_type.__name__}")
    for key in settings.keys() & inspect.signature(layer.float_type.__init__).parameters.keys():
        value = old.bias is not None if key == "bias" else getattr(old, key)
        value = list(value) if isinstance(value, tuple) else value
        if value != settings[key]:
            raise PycompFileError(f"the model's module '{layer.name}' has {key}={value}; the file's {layer.label} "
                                  f"was made from one with {key}={settings[key]}")


def _owner(key: str, layers: dict) -> str:
    module = key.rpartition(".")[0]
    return layers[module].label if module in layers else f"module '{module}'"


def _listed(keys: list[str], layers: dict) -> str:
    shown = ", ".join(f"'{k}' ({_owner(k, layers)})" for k in keys[:_LISTED])
    return shown + (f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else "")


def _check_state(model: nn.Module, tensors: dict[str, Tensor], layers: dict) -> None:
    """Strict: the same names, the same shapes, and integer data stays integer."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise PycompFileError(f"the file lacks tensors the model needs: {_listed(missing, layers)}")
    unexpected = [k for k in tensors if k not in expected]
    if unexpected:
        raise PycompFileError(f"the file holds tensors the model has no place for: {_listed(unexpected, layers)}")
    for key, want in expected.items():
        got = tensors[key]
        if got.shape != want.shape:
            raise PycompFileError(f"tensor '{key}' ({_owner(key, layers)}): the file holds shape {tuple(got.shape)}, "
                                  f"the model expects {tuple(want.shape)}")
        if got.dtype != want.dtype and not (got.dtype.is_floating_point and want.dtype.is_floating_point):
            raise PycompFileError(f"tensor '{key}' ({_owner(key, layers)}): the file holds {got.dtype}, "
                                  f"the model expects {want.dtype}")


def _check_no_meta(model: nn.Module) -> None:
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise PycompFileError(f"{left} stayed on the meta device: the file does not hold them (non-persistent "
                              "buffers?); build the model on a real device")
