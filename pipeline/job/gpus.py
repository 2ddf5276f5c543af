"""A GPU pair's GPUs, as the job was given them: which device nodes its model's sandbox gets, what
CUDA_VISIBLE_DEVICES says inside, what the GPUs are, and how much GPU memory the pair used (NVML, sampled).

Standard library only (copied into every bundle). The scheduler says which GPUs a job holds: Slurm's
`SLURM_STEP_GPUS` / `SLURM_JOB_GPUS` (global ids; the local executor sets them the same way), else
`CUDA_VISIBLE_DEVICES` when it holds indices. GPU `N` is the device node `nvidiaN` of the device folder
(`gpu_dev_dir`, `/dev` on every real node; a test points it at a folder of device nodes it made), which must be a
character device of NVIDIA's major number. A pair that asked for GPUs and cannot be shown them fails as the
infrastructure's (`NoGpu`): it never runs on the CPU in silence.
"""

from __future__ import annotations

import os
import re
import stat

NVIDIA_MAJOR = 195  # the kernel's major number of /dev/nvidia0.. and nvidiactl (nvidia-uvm's is dynamic)
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
PROC_DRIVER = "/proc/driver/nvidia"
# folders where a driver's user-space libraries (libcuda, libnvidia-ml) live when not under /usr or /lib
DRIVER_LIBRARY_DIRS = ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib64/nvidia", "/usr/lib/nvidia",
                       "/opt/nvidia/lib64")
DRIVER_LIBRARIES = re.compile(r"lib(cuda|nvidia-ml|nvidia-ptxjitcompiler|nvidia-nvvm|nvcuvid)\.so")

# CUDA's out-of-memory as PyTorch, TensorFlow, JAX and the CUDA libraries word it (never a host MemoryError)
GPU_OUT_OF_MEMORY = re.compile(
    r"CUDA out of memory|CUDA error: out of memory|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation"
    r"|CUBLAS_STATUS_ALLOC_FAILED"
    r"|CUDNN_STATUS_ALLOC_FAILED|OOM when allocating tensor[^\n]*GPU|RESOURCE_EXHAUSTED: Out of memory"
    r"|GPU out of memory|out of memory on GPU")


class NoGpu(Exception):
    """The pair asked for GPUs this job cannot show it; the message says why, in one line."""


def given_gpus(environ: dict | os._Environ) -> list[str] | None:
    """The GPU ids the scheduler gave this job, in its order; None when nothing says (no scheduler variable)."""
    for name in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        value = environ.get(name, "").strip()
        if value:
            return [v.strip() for v in value.split(",") if v.strip()]
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() and all(v.strip().isdigit() for v in visible.split(",")):
        return [v.strip() for v in visible.split(",")]
    return None


def is_nvidia_node(path: str, major: int | None = NVIDIA_MAJOR) -> bool:
    """A character device (of NVIDIA's major number, when `major` is given), never followed through a link."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISCHR(info.st_mode) and (major is None or os.major(info.st_rdev) == major)


class GpuView:
    """What one pair's model process gets: device nodes (source, destination), read-only paths, variables, and
    a record of the GPUs (`gpus`: [{"id", "model"}])."""

    def __init__(self) -> None:
        self.devices: list[tuple[str, str]] = []
        self.ro: list[str] = []
        self.proc_ro: list[str] = []
        self.env: dict[str, str] = {}
        self.gpus: list[dict] = []

    @property
    def count(self) -> int:
        return len(self.gpus)

    def describe(self) -> str:
        models = sorted({g["model"] or "unknown model" for g in self.gpus})
        return f"{self.count} GPU(s) ({', '.join(models)}): {', '.join(d for _, d in self.devices[:self.count])}"


def gpu_view(wanted: int, dev_dir: str = "/dev", environ: dict | os._Environ | None = None,
             proc_dir: str = PROC_DRIVER, renumber: bool = True) -> GpuView:
    """The view of a pair that asked for `wanted` GPUs: exactly the device nodes of the GPUs the job was given,
    the control nodes present, the driver's libraries and /proc/driver/nvidia read-only, CUDA_VISIBLE_DEVICES
    renumbered 0..n-1 (CUDA numbers the devices it can open: only these) or the scheduler's UUIDs as they are.
    Without the sandbox (`renumber` False) the pair sees the node's own /dev: CUDA_VISIBLE_DEVICES stays as the
    scheduler set it (else the GPUs' ids). Raises NoGpu with the reason when the sandbox would show fewer GPUs
    than asked for."""
    environ = os.environ if environ is None else environ
    view = GpuView()
    if wanted <= 0:
        return view
    given = given_gpus(environ)
    if not given:
        raise NoGpu(f"the pair asked for {wanted} GPU(s) but this job was given none (no SLURM_JOB_GPUS, "
                    "SLURM_STEP_GPUS or CUDA_VISIBLE_DEVICES: submit with --gres=gpu, or set CUDA_VISIBLE_DEVICES "
                    "for a job run by hand); nothing ran on the CPU instead")
    if len(given) < wanted:
        raise NoGpu(f"the pair asked for {wanted} GPU(s) but this job was given {len(given)} ({','.join(given)})")
    for gpu in given[:wanted]:
        if not gpu.isdigit():
            raise NoGpu(f"GPU id {gpu[:40]!r} of this job is not a number: its device node cannot be named")
        node = os.path.join(dev_dir, f"nvidia{int(gpu)}")
        if not is_nvidia_node(node):
            raise NoGpu(f"this job was given GPU {gpu} but {node} is not an NVIDIA device node on this node "
                        f"(driver not loaded, or the node hides it): the pair's sandbox would show no GPU")
        view.devices.append((node, f"/dev/nvidia{int(gpu)}"))
        view.gpus.append({"id": int(gpu), "model": gpu_model(int(gpu), proc_dir)})
    if not is_nvidia_node(os.path.join(dev_dir, "nvidiactl")):
        raise NoGpu(f"NVIDIA's control device {os.path.join(dev_dir, 'nvidiactl')} is missing on this node: "
                    "CUDA cannot reach the GPUs")
    for name in CONTROL_NODES:
        node = os.path.join(dev_dir, name)
        if is_nvidia_node(node, major=None):  # nvidia-uvm has a major number of its own
            view.devices.append((node, f"/dev/{name}"))
    if os.path.isdir(proc_dir):
        view.proc_ro.append(proc_dir)
    view.ro.extend(driver_library_dirs())
    visible = environ.get("CUDA_VISIBLE_DEVICES", "")
    uuids = [v.strip() for v in visible.split(",") if v.strip().startswith(("GPU-", "MIG-"))]
    if not renumber:
        shown = visible.strip() or ",".join(given[:wanted])
    else:
        shown = ",".join(uuids) if uuids else ",".join(str(i) for i in range(wanted))
    view.env = {"CUDA_VISIBLE_DEVICES": shown,
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # minor numbers follow the PCI order: index i is the i-th node
    return view


def gpu_model(minor: int, proc_dir: str = PROC_DRIVER) -> str | None:
    """The GPU's model name from the driver's /proc entry (`Model:` of the GPU whose `Device Minor` is `minor`)."""
    try:
        entries = os.listdir(os.path.join(proc_dir, "gpus"))
    except OSError:
        return None
    for entry in entries:
        try:
            with open(os.path.join(proc_dir, "gpus", entry, "information"), encoding="utf-8",
                      errors="replace") as f:
                text = f.read(8192)
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("Device Minor", "").strip() == str(minor):
            return fields.get("Model", "").strip()[:200] or None
    return None


def driver_library_dirs() -> list[str]:
    """Folders outside the sandbox's system folders that hold the driver's user-space libraries (read from the
    loader's configuration and the usual places), to be bound read-only."""
    candidates = list(DRIVER_LIBRARY_DIRS)
    try:
        conf = [os.path.join("/etc/ld.so.conf.d", n) for n in sorted(os.listdir("/etc/ld.so.conf.d"))]
    except OSError:
        conf = []
    for path in ("/etc/ld.so.conf", *conf):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                candidates.extend(line.strip() for line in f if line.startswith("/"))
        except OSError:
            continue
    found = []
    for folder in dict.fromkeys(candidates):
        if folder.startswith(("/usr/", "/lib")) or folder in ("/usr", "/lib"):
            continue  # already in the sandbox
        try:
            if any(DRIVER_LIBRARIES.match(n) for n in os.listdir(folder)):
                found.append(folder)
        except OSError:
            continue
    return found


class GpuMeter:
    """Peak GPU memory of a pair on its GPUs, sampled through NVML (libnvidia-ml, ctypes) while it runs: the most
    the devices held above what they held before it started. `peak` is None ("not measured") where NVML cannot
    be loaded or answers with an error; it is never a made-up 0."""

    def __init__(self, ids: list[int]):
        self.peak: int | None = None
        self.used_on: set[int] = set()
        self._handles: list[tuple[int, object]] = []
        self._base: dict[int, int] = {}
        self._lib = None
        if not ids:
            return
        try:
            self._open(ids)
        except (OSError, AttributeError, RuntimeError):
            self._handles = []
        if self._handles:
            self._base = {gpu: self._used(h) for gpu, h in self._handles}
            self.peak = 0

    def _open(self, ids: list[int]) -> None:
        import ctypes

        lib = ctypes.CDLL("libnvidia-ml.so.1")
        if lib.nvmlInit_v2() != 0:
            raise RuntimeError("nvmlInit failed")
        self._lib = lib
        count = ctypes.c_uint()
        if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            raise RuntimeError("nvmlDeviceGetCount failed")
        for i in range(count.value):
            handle, minor = ctypes.c_void_p(), ctypes.c_uint()
            if lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                continue
            if lib.nvmlDeviceGetMinorNumber(handle, ctypes.byref(minor)) == 0 and minor.value in ids:
                self._handles.append((minor.value, handle))
        if len(self._handles) != len(ids):
            raise RuntimeError("not every GPU of the pair is known to NVML")

    def _used(self, handle: object) -> int:
        import ctypes

        class Memory(ctypes.Structure):
            _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

        info = Memory()
        if self._lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(info)) != 0:
            raise RuntimeError("nvmlDeviceGetMemoryInfo failed")
        return int(info.used)

    def sample(self) -> None:
        if self.peak is None:
            return
        try:
            total = 0
            for gpu, handle in self._handles:
                above = max(0, self._used(handle) - self._base.get(gpu, 0))
                if above:
                    self.used_on.add(gpu)
                total += above
        except RuntimeError:
            self.peak = None  # an answer missing part-way: not measured, rather than too low
            return
        self.peak = max(self.peak, total)

    def close(self) -> None:
        if self._lib is not None:
            try:
                self._lib.nvmlShutdown()
            except OSError:
                pass
            self._lib = None
