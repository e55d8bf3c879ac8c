"""Small shared helpers: atomic file writes, hashing and provenance records.

Every output of the pipeline goes through `atomic_path` (write to a temporary name in the same
directory, then rename), so a killed job never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp creates 0600; give the file the usual umask-based permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy / torch scalars and arrays
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line of a JSONL file; a bad line raises ValueError
    naming the file and the line."""
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able settings object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The current git commit (with a '-dirty' suffix when the tree has changes), or 'unknown'."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


_TRACKED_PACKAGES = ("dlm", "torch", "lightning", "transformers", "tokenizers", "numpy", "scipy", "pandas")


def package_versions(names: tuple[str, ...] = _TRACKED_PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(settings: Any) -> dict[str, Any]:
    """What every metric JSON records next to its numbers: settings hash, git commit, versions."""
    return {"config_hash": config_hash(settings), "git_commit": git_commit(),
            "packages": package_versions()}


def setup_logging(log_path: str | os.PathLike | None = None) -> None:
    """Send logging (INFO) and stderr to `log_path` (Snakemake's `log:`), line-buffered. DDP ranks other than
    0 (Slurm tasks under srun: SLURM_PROCID; processes started by Lightning's launcher: LOCAL_RANK) write
    `log_path.rank<N>` beside it instead of overwriting it."""
    import logging
    import sys

    if log_path is not None:
        if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            rank = int(os.environ.get("SLURM_PROCID", "0"))
        else:
            rank = int(os.environ.get("LOCAL_RANK", "0"))
        if rank > 0:
            log_path = f"{log_path}.rank{rank}"
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        sys.stderr = open(log_path, "w", buffering=1)
        sys.stdout = sys.stderr  # library chatter (Lightning, tqdm) belongs in the job's log too
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def tune_malloc() -> None:
    """Keep freed tensor memory in glibc's heap instead of returning it to the OS after every op.

    PyTorch on CPU allocates and frees large activation tensors at every step; with glibc's default
    mmap threshold each one is a fresh mmap and page-faults on first touch. Raising the mmap and trim
    thresholds (the same as MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_) is worth 0-10% of CPU
    training throughput here (bench/RESULTS.md). A no-op where glibc is not available.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's maximum (32 MiB on 64-bit)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass


def setup_job(log_path: str | os.PathLike | None, threads: int | None = None) -> None:
    """Start of every Snakemake job: logging into `log:`, torch CPU threads = the rule's `threads`,
    and the allocator tuning above."""
    setup_logging(log_path)
    tune_malloc()
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def fail_job(message: str) -> None:
    """End a Snakemake job with a one-line error: `message` goes to the job's log (sys.stderr after
    `setup_job`) and to the console Snakemake runs in (the original stderr), then exit status 1."""
    import sys

    line = " ".join(str(message).split())
    print(f"error: {line}", file=sys.stderr, flush=True)
    if sys.__stderr__ is not None and sys.__stderr__ is not sys.stderr:
        print(f"error: {line}", file=sys.__stderr__, flush=True)
    raise SystemExit(1)


def stale_snakemake_locks(directory: str | os.PathLike = ".") -> list[Path]:
    """Snakemake's lock files in `directory`/.snakemake/locks when no live process works in that directory
    (a Snakemake or one of its jobs: a command line naming snakemake, whose --directory/-d or, failing that,
    working directory is `directory`); [] when there are none or a live one holds them. A Snakemake killed
    with SIGKILL (or by a full disk, an OOM killer, a lost node) leaves its locks behind, and the next
    invocation would refuse to start ("Directory cannot be locked")."""
    locks = sorted((Path(directory) / ".snakemake" / "locks").glob("*.lock"))
    if not locks:
        return []
    target = Path(directory).resolve()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            args = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        if not any("snakemake" in a for a in args):
            continue
        workdir = cwd
        for flag in ("--directory", "-d"):
            if flag in args[:-1]:
                workdir = cwd / args[args.index(flag) + 1]
        if workdir.resolve() == target:
            return []
    return locks
