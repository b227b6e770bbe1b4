"""How much memory a model load may still use, as the kernel will enforce it.

SageMaker's multi-model contract: "whenever a model cannot be loaded due to insufficient memory or any
other resource, this API should return a 507 HTTP status code", after which SageMaker unloads unused
models and retries ("Custom Containers Contract for Multi-Model Endpoints", SageMaker developer guide).
Inside a container the limit that counts is the cgroup's, not the host's ``MemAvailable`` (which a
container sees unchanged): allocations past ``memory.max`` are not refused, the OOM killer ends a process
instead. So the handler compares what a load will need with :func:`available_bytes` *before* it reads the
weights, and raises ``MemoryError`` (MMS answers 507) rather than letting the kernel kill a worker.
What a load needs (:func:`load_needs`) counts the weights by the network's element count (not the file's
size: a stride-0 tensor is small on disk) and the warm-up forward pass, which grows with the input's
pixels. Measured here as peak RSS growth per added input pixel between warm-ups at 512, 1024 and 2048 px
(one image, float32, eager): ResNet18 ~120 bytes, ResNet50 ~210, ResNet101 ~230, EfficientNet-Lite0 ~330;
:data:`WARMUP_BYTES_PER_INPUT_PIXEL` takes 512.

Both cgroup versions are read, at the process's own cgroup and every ancestor up to the mount point:
v2 ``memory.max`` / ``memory.current`` / ``memory.stat``, v1 ``memory/memory.limit_in_bytes`` /
``memory.usage_in_bytes`` / ``memory.stat``. Page cache the kernel can drop (``inactive_file``) counts as
available, as the kubelet's working-set figure does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
LOAD_MEMORY_FACTOR = 2          # the weights as read plus a converted copy (bf16 form) or allocator slack
LOAD_MEMORY_MARGIN = 128 * MIB  # libraries' first-use buffers (oneDNN: ~45 MiB) and allocator slack
WARMUP_BYTES_PER_INPUT_PIXEL = 512  # activations of the warm-up pass at image_size x image_size
UNLIMITED_V1 = 1 << 62          # v1 reports "no limit" as a page-rounded 2**63 - 1
PROC_MEMINFO = Path("/proc/meminfo")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class Available:
    bytes: int
    source: str  # where the figure comes from, for the error message

    def __str__(self) -> str:
        return f"{self.bytes / MIB:.0f} MiB available ({self.source})"


def load_needs(weights_bytes: int, image_size: int) -> int:
    """Bytes a model load is expected to allocate: ``weights_bytes`` of weights (the larger of the file
    and the network's element count), warmed up with one ``image_size`` square image."""
    warmup = WARMUP_BYTES_PER_INPUT_PIXEL * image_size * image_size
    return LOAD_MEMORY_FACTOR * weights_bytes + warmup + LOAD_MEMORY_MARGIN


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(path: Path, keys: tuple[str, ...]) -> int:
    try:
        lines = path.read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return 0
    values = dict(line.split(" ", 1) for line in lines if " " in line)
    for key in keys:
        if key in values and values[key].strip().isdigit():
            return int(values[key])
    return 0


def _own_paths(proc_self_cgroup: Path) -> dict[str, str]:
    """{"v2": "/a/b", "v1": "/c"} from /proc/self/cgroup (only the hierarchies that are present)."""
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except FileNotFoundError:
        return {}
    paths: dict[str, str] = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths["v2"] = path
        elif "memory" in controllers.split(","):
            paths["v1"] = path
    return paths


def _levels(mount: Path, own: str) -> list[Path]:
    """The process's cgroup folder under ``mount`` and its ancestors; just ``mount`` when the own
    folder is not visible (a container sees its own cgroup at the mount point)."""
    own_dir = mount / own.lstrip("/")
    if not own_dir.is_dir():
        return [mount]
    levels = [own_dir]
    while levels[-1] != mount and mount in levels[-1].parents:
        levels.append(levels[-1].parent)
    return levels


def _cgroup_available(cgroup_dir: Path, proc_self_cgroup: Path) -> Available | None:
    own = _own_paths(proc_self_cgroup)
    versions = (
        ("v2", cgroup_dir, "memory.max", "memory.current", ("inactive_file",)),
        ("v1", cgroup_dir / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
         ("total_inactive_file", "inactive_file")),
    )
    best: Available | None = None
    for version, mount, limit_file, usage_file, cache_keys in versions:
        for level in _levels(mount, own.get(version, "/")):
            limit = _read_int(level / limit_file)
            if limit is None or limit >= UNLIMITED_V1:
                continue
            usage = _read_int(level / usage_file) or 0
            cache = _stat_value(level / "memory.stat", cache_keys)
            free = max(0, limit - usage + min(cache, usage))
            if best is None or free < best.bytes:
                best = Available(free, f"cgroup {version} limit {limit / MIB:.0f} MiB at {level}")
    return best


def _host_available(meminfo: Path) -> Available | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return Available(int(line.split()[1]) * 1024, "host MemAvailable")
    except (FileNotFoundError, ValueError, IndexError):
        pass
    return None


def available_bytes(cgroup_dir: Path, meminfo: Path = PROC_MEMINFO,
                    proc_self_cgroup: Path = PROC_SELF_CGROUP) -> Available | None:
    """The smaller of the host's and the cgroup's free memory; None when neither can be read."""
    found = [a for a in (_cgroup_available(cgroup_dir, proc_self_cgroup), _host_available(meminfo)) if a]
    return min(found, key=lambda a: a.bytes) if found else None


def check_room(needed: int, what: str, cgroup_dir: Path) -> None:
    """``MemoryError`` (MMS answers 507) when ``needed`` bytes are not available for ``what``."""
    available = available_bytes(cgroup_dir)
    if available is not None and available.bytes < needed:
        raise MemoryError(f"not enough memory for {what}: it needs about {needed / MIB:.0f} MiB, {available}")
