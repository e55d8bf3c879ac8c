"""The registry of released checkpoints (registry.yaml beside this file): where each one is, the settings it
expects, and the download with its sha256 lock.

    load(path=None) -> {name: entry}          the registry (matrix entries expanded), validated
    fetch(entry, local_dir) -> Path            the checkpoint on this machine: a Hugging Face snapshot
                                               (huggingface_hub.snapshot_download: resumable, cached in the
                                               HF cache, HF_HUB_OFFLINE honoured) or a hand-downloaded file
    make_lock(name, entry, path) -> dict        sha256 and size of every file, the hub commit it resolved to
    materialize(entry, lock, local_dir) -> Path the same files again (the locked commit), checked against the lock
    expand_released(config) -> {run: entry}    runs.RUN.released: NAME gets its algo (and tokenizer) from here

A checkpoint that is not on this machine and cannot be fetched is a one-line `CheckpointUnavailable` naming
what to download and where to put it; a file whose hash differs from its lock (or from the registry's
published hash) is a one-line `ChecksumMismatch`. No torch here: the workflow reads the registry when it
builds the DAG.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import itertools
import os
import re
from pathlib import Path
from typing import Any

import yaml

REGISTRY = Path(__file__).with_name("registry.yaml")
LOCAL_DIR = "resources/released"  # hand-downloaded files (Google Drive): LOCAL_DIR/FILE
LOCK_DIR = "resources/checkpoint_locks"  # the lock of each checkpoint: LOCK_DIR/NAME.json
STATUSES = ("importable", "pending-images")
WEIGHTS = ("ema", "raw", "stored")
EXPECTS = {"length": int, "time_conditioning": bool, "weights": str, "p_uniform": float, "T": int, "sampler": str}
CHECKED = ("length", "time_conditioning", "p_uniform")  # compared with the imported model's settings
ENTRY_KEYS = {"title", "announced", "source", "layout", "algo", "tokenizer", "expects", "status", "alternate_of",
              "unverified", "sha256", "matrix"}
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class RegistryError(ValueError):
    """The registry file is malformed, or a name is not in it."""


class CheckpointUnavailable(FileNotFoundError):
    """The checkpoint is neither on this machine nor fetchable now; the message says what to download where."""


class ChecksumMismatch(ValueError):
    """A file differs from the hash its lock (or the registry) records."""


# --- the registry -----------------------------------------------------------------------------------

def _substitute(value: Any, values: dict[str, Any]) -> Any:
    """`value` with {key} replaced by the matrix values in every string (a string that is exactly "{key}"
    becomes the value itself)."""
    if isinstance(value, str):
        whole = re.fullmatch(r"\{(\w+)\}", value)
        return values[whole.group(1)] if whole and whole.group(1) in values else value.format_map(values)
    if isinstance(value, dict):
        return {k: _substitute(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values) for v in value]
    return value


def _expand(name: str, entry: dict) -> dict[str, dict]:
    matrix = entry.get("matrix")
    if not matrix:
        return {name: entry}
    if not isinstance(matrix, dict) or not all(isinstance(v, list) and v for v in matrix.values()):
        raise RegistryError(f"checkpoints.{name}.matrix: expected {{key: [values]}}, got {matrix!r}")
    out = {}
    body = {k: v for k, v in entry.items() if k != "matrix"}
    for combo in itertools.product(*matrix.values()):
        values = dict(zip(matrix, combo))
        expanded = name.format_map(values)
        if expanded in out:
            raise RegistryError(f"checkpoint {expanded!r} is listed twice (checkpoints.{name}.matrix)")
        out[expanded] = _substitute(copy.deepcopy(body), values)
    return out


def _typed(value: Any, kind: type, key: str) -> Any:
    """`value` as `kind` (a matrix value such as "0.1" becomes 0.1); booleans must be booleans."""
    if kind is bool and not isinstance(value, bool):
        raise RegistryError(f"{key}: value {value!r} is not a bool")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise RegistryError(f"{key}: value {value!r} is not a {kind.__name__}") from None


def _check_entry(name: str, e: dict, where: str) -> dict:
    key = f"{where}: checkpoints.{name}"
    unknown = set(e) - ENTRY_KEYS
    if unknown:
        raise RegistryError(f"{key}: unknown keys {sorted(unknown)}; expected some of {sorted(ENTRY_KEYS - {'matrix'})}")
    for k in ("title", "announced", "source", "layout", "algo"):
        if k not in e:
            raise RegistryError(f"{key}: missing key {k!r}")
    src = e["source"]
    if not isinstance(src, dict) or ("hub" in src) == ("gdrive" in src):
        raise RegistryError(f"{key}.source: expected either {{hub, revision, files}} or {{gdrive, file}}, got {src!r}")
    if "hub" in src:
        if not isinstance(src.get("files"), list) or not src["files"]:
            raise RegistryError(f"{key}.source.files: expected a list of file names or patterns")
        src.setdefault("revision", "main")
    elif not isinstance(src.get("file"), str) or "/" in src["file"]:
        raise RegistryError(f"{key}.source.file: expected the file name in the Google Drive folder")
    e.setdefault("status", "importable")
    if e["status"] not in STATUSES:
        raise RegistryError(f"{key}.status: value {e['status']!r} is invalid: expected one of {list(STATUSES)}")
    expects = {}
    for k, v in (e.get("expects") or {}).items():
        if k not in EXPECTS:
            raise RegistryError(f"{key}.expects.{k}: unknown setting; expected some of {list(EXPECTS)}")
        expects[k] = _typed(v, EXPECTS[k], f"{key}.expects.{k}")
    if expects.get("weights", "stored") not in WEIGHTS:
        raise RegistryError(f"{key}.expects.weights: value {expects['weights']!r} is invalid: expected one of "
                            f"{list(WEIGHTS)}")
    e["expects"] = expects
    for file, digest in (e.get("sha256") or {}).items():
        if not _HEX64.match(str(digest)):
            raise RegistryError(f"{key}.sha256.{file}: {digest!r} is not a sha256 hex digest")
    e.setdefault("tokenizer", None)
    e.setdefault("unverified", [])
    e["name"] = name
    return e


def load(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """{name: entry} of a registry file (default: the shipped registry.yaml), matrix entries expanded and
    every entry validated (errors name the file and the key)."""
    path = Path(path) if path else REGISTRY
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise RegistryError(f"cannot read the checkpoint registry {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise RegistryError(f"{path}: not valid YAML ({_first_line(e)})") from None
    raw = doc.get("checkpoints")
    if not isinstance(raw, dict) or not raw:
        raise RegistryError(f"{path}: expected a mapping `checkpoints: {{NAME: entry}}`")
    out: dict[str, dict] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise RegistryError(f"{path}: checkpoints.{name}: expected a mapping, got {entry!r}")
        for n, e in _expand(str(name), entry).items():
            if n in out:
                raise RegistryError(f"{path}: checkpoint {n!r} is listed twice")
            out[n] = _check_entry(n, e, str(path))
    for n, e in out.items():
        if e.get("alternate_of") and e["alternate_of"] not in out:
            raise RegistryError(f"{path}: checkpoints.{n}.alternate_of: {e['alternate_of']!r} is not a checkpoint")
    return out


def entry(name: str, path: str | os.PathLike | None = None) -> dict:
    """One checkpoint of the registry; an unknown name is a RegistryError naming the closest ones."""
    reg = load(path)
    if name not in reg:
        close = difflib.get_close_matches(name, list(reg), n=3)
        raise RegistryError(f"no released checkpoint {name!r} in {path or REGISTRY}"
                            + (f"; did you mean {', '.join(close)}?" if close else f" ({len(reg)} entries: "
                                                                                   "`dlm released list`)"))
    return reg[name]


def describe(e: dict) -> str:
    """Where an entry comes from, in one phrase (hub repo@revision, or the Drive file)."""
    src = e["source"]
    return f"{src['hub']}@{src['revision']}" if "hub" in src else f"{src['file']} (Google Drive {src['gdrive']})"


# --- fetching, locking, verifying -------------------------------------------------------------------

def local_path(e: dict, local_dir: str | os.PathLike = LOCAL_DIR) -> Path:
    """Where a hand-downloaded (Google Drive) file of entry `e` is read from: LOCAL_DIR/FILE."""
    return Path(local_dir) / e["source"]["file"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def download_hub(repo: str, revision: str = "main", files: list[str] | None = None) -> Path:
    """huggingface_hub.snapshot_download of `repo` at `revision` (the files matching `files`): resumable, kept
    in the HF cache (HF_HOME / HF_HUB_CACHE) and read from it with HF_HUB_OFFLINE=1. Any failure is a
    one-line CheckpointUnavailable that says how to get the files onto this machine."""
    from huggingface_hub import constants, snapshot_download

    try:
        folder = Path(snapshot_download(repo, revision=revision, allow_patterns=files))
    except Exception as e:  # offline and not cached, unknown repo or revision, gated, network errors
        why = (f"it is not in the Hugging Face cache {constants.HF_HUB_CACHE} and HF_HUB_OFFLINE is set"
               if constants.HF_HUB_OFFLINE else _first_line(e))
        raise CheckpointUnavailable(
            f"cannot fetch {repo}@{revision}: {why}; download it where the hub is reachable with `hf download {repo} "
            f"--revision {revision}` into the same cache (HF_HOME / HF_HUB_CACHE), or put its files in a folder and "
            "import that folder (a run's `import:`)") from None
    missing = [f for f in files or [] if not any(c in f for c in "*?[") and not (folder / f).exists()]
    if missing:
        raise CheckpointUnavailable(f"{repo}@{revision}: the snapshot {folder} lacks {', '.join(missing)}")
    return folder


def fetch(e: dict, local_dir: str | os.PathLike = LOCAL_DIR, revision: str | None = None) -> Path:
    """The checkpoint of entry `e` on this machine: its hub snapshot folder (at `revision`, default the
    entry's), or its hand-downloaded file."""
    if e.get("status", "importable") != "importable":
        raise CheckpointUnavailable(f"{e.get('name', '?')}: status {e['status']}: this pipeline cannot import it yet")
    src = e["source"]
    if "hub" in src:
        return download_hub(src["hub"], revision or src["revision"], src["files"])
    path = local_path(e, local_dir)
    if not path.is_file():
        raise CheckpointUnavailable(
            f"{e.get('name', src['file'])}: {path} not found; download {src['file']} from the Google Drive folder "
            f"{src['gdrive']} and put it at {path} (released.dir sets the folder)")
    return path


def files_of(path: Path) -> dict[str, Path]:
    """{relative name: file} of a checkpoint: the file itself, or every file of a snapshot folder."""
    if path.is_file():
        return {path.name: path}
    return {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*")) if p.is_file()}


def snapshot_commit(path: Path) -> str | None:
    """The hub commit of a HF-cache snapshot folder (.../snapshots/<commit>), else None."""
    return path.name if path.is_dir() and path.parent.name == "snapshots" and _HEX40.match(path.name) else None


def make_lock(name: str, e: dict, path: Path) -> dict:
    """The lock of a fetched checkpoint: the source, the hub commit the revision resolved to, and the sha256
    and size of every file. A file of the HF cache is also checked against the blob it links to (the hub
    names LFS blobs by their sha256), and against the registry's published hash where it gives one."""
    from dlm.utils import sha256_file

    files = {}
    for rel, f in files_of(path).items():
        digest = sha256_file(f)
        blob = Path(os.path.realpath(f)).name
        if f.is_symlink() and _HEX64.match(blob) and blob != digest:
            raise ChecksumMismatch(f"{name}: {rel} has sha256 {digest} but the hub's blob is {blob}: a corrupted "
                                   f"download; delete {os.path.realpath(f)} and fetch again")
        published = (e.get("sha256") or {}).get(rel)
        if published and published != digest:
            raise ChecksumMismatch(f"{name}: {rel} has sha256 {digest}, the registry publishes {published}")
        files[rel] = {"sha256": digest, "bytes": f.stat().st_size,
                      "hub_blob_checked": bool(f.is_symlink() and _HEX64.match(blob))}
    if not files:
        raise CheckpointUnavailable(f"{name}: {path} holds no files")
    return {"name": name, "source": e["source"], "commit": snapshot_commit(path), "files": files,
            "locked_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def verify(name: str, lock: dict, path: Path) -> None:
    """Every file of the lock is in `path` with the locked sha256 (ChecksumMismatch / CheckpointUnavailable)."""
    from dlm.utils import sha256_file

    have = files_of(path)
    for rel, rec in lock["files"].items():
        if rel not in have:
            raise CheckpointUnavailable(f"{name}: {rel} (locked) is missing from {path}")
        digest = sha256_file(have[rel])
        if digest != rec["sha256"]:
            raise ChecksumMismatch(f"{name}: {have[rel]} has sha256 {digest}, its lock {rec['sha256']} (the file "
                                   "changed since the lock was written; delete the lock to accept the new file)")


def cached_snapshot(repo: str, commit: str) -> Path | None:
    """The HF-cache snapshot folder of `repo` at `commit` (HF_HUB_CACHE/models--OWNER--NAME/snapshots/COMMIT),
    if it is there."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    return folder if folder.is_dir() else None


def materialize(e: dict, lock: dict, local_dir: str | os.PathLike = LOCAL_DIR) -> Path:
    """The locked checkpoint on this machine: the hub snapshot at the locked commit (read from the cache without
    asking the hub, so compute nodes need no network; fetched otherwise) or the local file, checked file by file
    against the lock."""
    if lock.get("source") != e["source"]:
        raise ChecksumMismatch(f"{e['name']}: its lock is for {lock.get('source')}, the registry now says "
                               f"{e['source']}; delete the lock to fetch the new source")
    cached = cached_snapshot(e["source"]["hub"], lock["commit"]) if "hub" in e["source"] and lock.get("commit") else None
    path = cached or fetch(e, local_dir, revision=lock.get("commit"))
    verify(e["name"], lock, path)
    return path


def import_checks(e: dict) -> dict:
    """What the import compares with the model it builds (convert.import_checkpoint `expects`)."""
    return {"layout": e["layout"], **{k: e["expects"][k] for k in CHECKED if k in e["expects"]}}


def use_ema(e: dict) -> bool:
    """The weights the import takes: the EMA (ema; stored: the one set of a file), or the raw ones (raw)."""
    return e["expects"].get("weights", "stored") != "raw"


# --- configs ----------------------------------------------------------------------------------------

def expand_released(config: dict) -> dict[str, dict]:
    """For every run with `released: NAME`: the registry entry (returned as {run: entry}); the run gets the
    entry's algo unless it sets one, and the entry's tokenizer when the pipeline's (tokenizer.name_or_path)
    is another. A name not in the registry, a checkpoint that cannot be imported yet, or a run that also
    gives `import`, is a ConfigError naming the key."""
    from dlm.config import ConfigError

    runs = config.get("runs") or {}
    wanted = {r: e["released"] for r, e in runs.items() if isinstance(e, dict) and e.get("released")}
    if not wanted:
        return {}
    path = (config.get("released") or {}).get("registry")
    try:
        reg = load(path)
    except RegistryError as e:
        raise ConfigError(f"key 'released.registry': {e}") from None
    pipeline_tok = (config.get("tokenizer") or {}).get("name_or_path")
    out = {}
    for run, name in wanted.items():
        spec = runs[run]
        if name not in reg:
            close = difflib.get_close_matches(name, list(reg), n=3)
            raise ConfigError(f"key 'runs.{run}.released': value {name!r} is invalid: expected a checkpoint of "
                              f"{path or REGISTRY}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        e = reg[name]
        if e["status"] != "importable":
            raise ConfigError(f"key 'runs.{run}.released': {name} has status {e['status']!r}: this pipeline cannot "
                              f"import it yet ({e['title']})")
        if spec.get("import"):
            raise ConfigError(f"key 'runs.{run}': give either `import` (a path or hub name) or `released` (a registry "
                              "name), not both")
        spec.setdefault("algo", e["algo"])
        if not spec.get("tokenizer") and e["tokenizer"] and e["tokenizer"] != pipeline_tok:
            spec["tokenizer"] = e["tokenizer"]
        out[run] = e
    return out
