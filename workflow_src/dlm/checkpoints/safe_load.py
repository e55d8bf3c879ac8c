"""Reading checkpoint files of other code bases without running code from them.

Weight files are loaded without a general unpickle:

* ``.safetensors``: ``safetensors.torch.load_file`` (no pickle at all);
* ``.bin`` / ``.pt`` / ``.pth``: ``torch.load(weights_only=True)`` (torch's own restricted unpickler);
* ``.ckpt`` (PyTorch Lightning checkpoints of the MDLM and DUO repositories) and files with any
  other name: ``torch.load`` with :class:`RestrictedUnpickler` as its pickle module. Those
  checkpoints pickle more than tensors: ``hyper_parameters`` holds the run's Hydra/OmegaConf config
  (``omegaconf.dictconfig.DictConfig`` with ``omegaconf.nodes.*`` values) and the Hugging Face
  tokenizer object (``transformers.*`` / ``tokenizers.*`` classes), which ``weights_only=True``
  refuses. The restricted unpickler resolves every global the file names through a fixed policy:

  1. tensor rebuild functions, ``torch.Size``/dtypes/devices, plain containers and the protocol-2
     helpers (``_codecs.encode``, ``copyreg._reconstructor``) are the real objects (``_REAL``);
  2. classes of known data-only libraries (OmegaConf, transformers, tokenizers, Lightning,
     numpy, ...; ``STAND_IN_MODULES``) become inert stand-ins: a :class:`StandIn` subclass that
     only records its constructor arguments and pickled state and never imports or calls
     anything. :func:`to_plain` turns OmegaConf stand-ins back into plain dicts and lists (the
     config's strings, interpolations included, stay strings: nothing is resolved or evaluated);
  3. anything else (``os.system``, ``builtins.eval``, ``subprocess.*``, ``torch.load``, user
     classes, ...) is refused with :class:`UnsafeCheckpointError` before it is imported, so a
     malicious ``__reduce__`` never runs.

  Storages are still read by torch's own zip reader (``torch.load`` calls ``persistent_load``
  itself); only ``find_class`` is ours.

Our own checkpoints (written by ``dlm train``, the distillation and ``dlm import``, and Lightning's
``last.ckpt`` a run resumes from) are read by :func:`load_checkpoint` alone: ``torch.load(weights_only=True)``,
torch's own unpickler that builds tensors, plain containers and numbers and nothing else. Our checkpoints hold
nothing more (``dlm.resume`` stores the RNG states as tensors and ints; hyper-parameters are plain dicts), so
no global is allowed beyond torch's defaults (``OWN_GLOBALS`` lists what they contain). A file that names any
other global (``os.system``, ``builtins.exec``, a class) is refused before anything of it runs, with an
:class:`UnsafeCheckpointError` naming the file and those globals (found by :func:`foreign_globals`, an unpickle
that builds inert stand-ins only). See docs/security.md.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import copyreg
import io
import os
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any

import torch

# modules whose classes are replaced by inert stand-ins (never imported): data-only objects that
# Lightning checkpoints carry next to the weights and that an import does not need
STAND_IN_MODULES = ("omegaconf", "transformers", "tokenizers", "lightning", "lightning_fabric", "pytorch_lightning",
                    "lightning_utilities", "torchmetrics", "hydra", "huggingface_hub", "numpy", "typing", "pathlib",
                    "argparse")

_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes",
             "bytearray", "slice", "range", "object")

_REAL: dict[tuple[str, str], Any] = {
    **{("builtins", name): getattr(__import__("builtins"), name) for name in _BUILTINS},
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("_codecs", "encode"): codecs.encode,  # how protocol 2 stores bytes
    ("copyreg", "_reconstructor"): copyreg._reconstructor,  # protocol 0/1 objects (class still vetted here)
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
}


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """The file names a global that is neither a tensor/container type nor a known data-only class."""


class StandIn:
    """Inert placeholder for an object of a class that is not imported.

    Pickle may create it (NEWOBJ, REDUCE), give it state (BUILD) and items (SETITEMS, APPENDS); it
    keeps them in `_args`, `_state`, `_items` and `_list` and does nothing else.
    """

    origin = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        obj = object.__new__(cls)
        obj._args, obj._kwargs, obj._state, obj._items, obj._list = args, kwargs, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self._state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self._items[key] = value

    def append(self, value: Any) -> None:
        self._list.append(value)

    def extend(self, values: Any) -> None:
        self._list.extend(values)

    def __repr__(self) -> str:
        return f"<stand-in for {self.origin}>"


_stand_ins: dict[str, type[StandIn]] = {}


def stand_in(module: str, name: str) -> type[StandIn]:
    """The (cached) inert class standing in for `module.name`."""
    origin = f"{module}.{name}"
    if origin not in _stand_ins:
        _stand_ins[origin] = type(name.replace(".", "_"), (StandIn,), {"origin": origin, "__module__": __name__})
    return _stand_ins[origin]


def resolve_global(module: str, name: str) -> Any:
    """The object a pickle's GLOBAL `module.name` is allowed to become (see the module docstring)."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))  # Python 2 names (protocol 2)
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    if (module, name) in _REAL:
        return _REAL[(module, name)]
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if module.split(".")[0] in STAND_IN_MODULES:
        return stand_in(module, name)
    raise UnsafeCheckpointError(
        f"refusing to unpickle global {module}.{name}: only tensors, plain containers and data-only classes of "
        f"{', '.join(STAND_IN_MODULES)} are allowed (the file may run code when fully unpickled)")


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose `find_class` is `resolve_global`: no global is imported unless allowlisted."""

    def find_class(self, module: str, name: str) -> Any:
        return resolve_global(module, name)


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# the `pickle_module` handed to torch.load: torch subclasses its Unpickler (adding storage handling)
RESTRICTED_PICKLE = types.ModuleType("dlm_restricted_pickle")
RESTRICTED_PICKLE.Unpickler = RestrictedUnpickler
RESTRICTED_PICKLE.load = _restricted_load
RESTRICTED_PICKLE.__version__ = pickle.format_version


def restricted_torch_load(path: str | os.PathLike) -> Any:
    """torch.load of a (Lightning) checkpoint through RestrictedUnpickler, tensors on the CPU."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=RESTRICTED_PICKLE, mmap=False)
    except RuntimeError as e:
        if "pickle_module" in str(e):  # TORCH_FORCE_WEIGHTS_ONLY_LOAD is set: fall back to torch's own loader
            return torch.load(path, map_location="cpu", weights_only=True)
        raise


def load_file(path: str | os.PathLike) -> Any:
    """The object stored in a weights/checkpoint file, loaded safely according to its suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        return load_safetensors(str(path), device="cpu")
    if suffix in (".bin", ".pt", ".pth"):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(f"{path}: refused by torch.load(weights_only=True): {e}") from e
    return restricted_torch_load(path)


def to_plain(obj: Any, _seen: set[int] | None = None) -> Any:
    """Plain Python data from unpickled objects: OmegaConf stand-ins become dicts/lists/values,
    dict-like stand-ins (Lightning's AttributeDict) dicts; other stand-ins are returned as they are."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return None  # a cycle (OmegaConf nodes point at their parents; those links are never followed)
    if isinstance(obj, dict):
        seen.add(id(obj))
        out = {k: to_plain(v, seen) for k, v in obj.items()}
        seen.discard(id(obj))
        return out
    if isinstance(obj, (list, tuple)):
        seen.add(id(obj))
        out = [to_plain(v, seen) for v in obj]
        seen.discard(id(obj))
        return out
    if not isinstance(obj, StandIn):
        return obj
    state = obj._state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict state, slot state)
        state = {**(state[0] or {}), **state[1]}
    seen.add(id(obj))
    try:
        if obj.origin.startswith("omegaconf.") and isinstance(state, dict):
            if obj.origin.endswith(("DictConfig", "ListConfig")):
                return to_plain(state.get("_content"), seen)
            if "_val" in state:  # omegaconf.nodes.*: AnyNode, StringNode, IntegerNode, ...
                return to_plain(state["_val"], seen)
        if obj._items or obj._list:
            return to_plain(obj._items or obj._list, seen)
        return obj
    finally:
        seen.discard(id(obj))


# --- our own checkpoints -------------------------------------------------------------------------------

# every global a checkpoint of ours names (trained, a resumed run's last.ckpt, distilled, imported; listed from
# real files): torch's tensor rebuild functions and storage types and OrderedDict, all in torch's weights-only
# allowlist. `foreign_globals` reports any other.
OWN_GLOBALS = frozenset({"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "collections.OrderedDict",
                         *(f"torch.{t}Storage" for t in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short",
                                                         "Char", "Byte", "Bool"))})


class _GlobalRecorder(pickle.Unpickler):
    """Unpickles into inert stand-ins only, recording each global the stream names (see `foreign_globals`)."""

    def __init__(self, file: Any):
        super().__init__(file)
        self.names: list[str] = []

    def find_class(self, module: str, name: str) -> Any:
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        self.names.append(f"{module}.{name}")
        return stand_in(module, name)

    def persistent_load(self, pid: Any) -> Any:  # torch's storages: never read here
        return None


def foreign_globals(path: str | os.PathLike) -> list[str]:
    """The globals a checkpoint file names beyond `OWN_GLOBALS`, in order of appearance, found without running
    anything: the pickle (a torch zip file's data.pkl, else the file's leading pickles) is unpickled with every
    global replaced by an inert `StandIn`. A stream that stops early (malformed) gives what was seen so far."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                streams = [z.read(n) for n in z.namelist() if n.endswith("data.pkl")]
        else:
            streams = [Path(path).read_bytes()]
    except (OSError, zipfile.BadZipFile, RuntimeError):  # a damaged zip: nothing to name
        return []
    found: list[str] = []
    for data in streams:
        f = io.BytesIO(data)
        for _ in range(5):  # a legacy torch file is several pickles in a row (magic, version, info, object)
            rec = _GlobalRecorder(f)
            try:
                rec.load()
            except Exception:  # noqa: BLE001 - a malformed stream: keep the globals seen before it ended
                found += rec.names
                break
            found += rec.names
    return list(dict.fromkeys(n for n in found if n not in OWN_GLOBALS))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """A checkpoint of ours (a dict: state_dict, hyper_parameters, ...) read with ``torch.load(weights_only=True)``.

    Errors name the file: FileNotFoundError when it is missing; UnsafeCheckpointError (a ValueError) when it names
    a global that no checkpoint of ours holds (the file could run code when fully unpickled; nothing of it ran);
    ValueError when it is truncated or not a torch checkpoint, or holds no dict."""
    where = os.fspath(path)
    if not os.path.isfile(path):
        what = "is a directory, not a file" if os.path.isdir(path) else "not found"
        raise FileNotFoundError(f"checkpoint {where!r} {what} (expected a .ckpt written by dlm train, dlm import or "
                                f"the distillation)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        foreign = foreign_globals(path)
        if foreign:
            raise UnsafeCheckpointError(
                f"checkpoint {where!r} refused: it names {', '.join(foreign[:5])}, which no checkpoint of dlm train, "
                f"dlm import or the distillation holds (unpickling it could run code; nothing of it was run). "
                f"Load only checkpoints of this pipeline; convert other code bases' files with `dlm import`") from None
        raise _not_a_checkpoint(where, e) from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as e:  # OSError: a cut legacy-format file
        raise _not_a_checkpoint(where, e) from e
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {where!r} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def pretrained_model(auto_cls: Any, name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
    """``auto_cls.from_pretrained`` (a transformers ``AutoModel*`` class; hub name or local folder) without running
    anything from the folder or repository: ``trust_remote_code=False`` (a config whose ``auto_map`` names the
    repository's own Python gets transformers' built-in class of its ``model_type``, or an error when there is
    none; the code is never imported), and ``weights_only=True`` (``model.safetensors`` is read when the folder has
    one, transformers' own preference; only without it ``pytorch_model.bin``, through torch's weights-only
    unpickler). Tokenizers: `dlm.data.tokenizer.load_tokenizer`."""
    return auto_cls.from_pretrained(str(name_or_path), trust_remote_code=False, weights_only=True, **kwargs)


def _not_a_checkpoint(where: str, e: Exception) -> ValueError:
    text = str(e).split("WeightsUnpickler error:")[-1]  # torch's weights-only message: the unpickler's own reason
    reason = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return ValueError(f"checkpoint {where!r} ({os.path.getsize(where)} bytes) is truncated or not a torch checkpoint: "
                      f"{type(e).__name__}: {reason.split('. ')[0]} (an interrupted copy or write? rerun the step "
                      f"that produced it)")
