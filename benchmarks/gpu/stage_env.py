"""Stage a: the machine. GPU name, driver, clocks (nvidia-smi where present), torch / CUDA / cuDNN / Triton /
ONNX Runtime versions and providers, CPU model and flags (lscpu), the tools the other stages use."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

from check_common import Stage, parse_args

SMI_FIELDS = ["name", "driver_version", "memory.total", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem",
              "power.limit", "temperature.gpu", "persistence_mode", "compute_mode", "mig.mode.current"]


def run(cmd: list[str], timeout: float = 10) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout.strip()


def main() -> int:
    args = parse_args()
    stage = Stage("env", args)
    with stage.case("python and packages") as r:
        import numpy
        import torch

        r.update(python=sys.version.split()[0], executable=sys.executable, torch=torch.__version__,
                 torch_cuda=torch.version.cuda, numpy=numpy.__version__, platform=platform.platform())
        for name in ("triton", "onnxruntime", "onnx", "onnxscript", "cupy", "skimage", "PIL"):
            try:
                mod = __import__(name)
                r[name] = getattr(mod, "__version__", "present")
            except Exception as exc:  # absent packages are a fact of the machine, not a failure
                r[name] = f"absent ({type(exc).__name__})"
        try:
            import onnxruntime as ort

            r["onnxruntime_providers"] = ort.get_available_providers()
        except Exception:
            pass
        stage.figure("torch", torch.__version__)
    with stage.case("torch device") as r:
        import torch

        r["cuda_available"] = torch.cuda.is_available()
        if args.device == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("--device cuda but torch.cuda.is_available() is False")
            props = torch.cuda.get_device_properties(0)
            r.update(device=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                     multiprocessors=props.multi_processor_count, memory_gib=round(props.total_memory / 2 ** 30, 1),
                     cudnn=torch.backends.cudnn.version(), cuda_runtime=torch.version.cuda)
            stage.figure("device", r["device"])
            stage.figure("cuDNN", r["cudnn"])
        else:
            r["device"] = "cpu"
            stage.figure("device", f"cpu ({os.cpu_count()} cores)")
    with stage.case("nvidia-smi") as r:
        if shutil.which("nvidia-smi") is None:
            r["absent"] = "nvidia-smi not on PATH"
        else:
            values = run(["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader"]).split("\n")[0]
            r.update(dict(zip(SMI_FIELDS, [v.strip() for v in values.split(",")])))
            stage.figure("driver", r.get("driver_version"))
            stage.figure("SM clock", f"{r.get('clocks.sm')} (max {r.get('clocks.max.sm')})")
    with stage.case("CUDA tools") as r:
        for tool in ("nvcc", "compute-sanitizer", "ncu", "nvidia-smi"):
            r[tool] = shutil.which(tool) or "absent"
        if shutil.which("nvcc"):
            r["nvcc_version"] = run(["nvcc", "--version"]).splitlines()[-1]
    with stage.case("cpu") as r:
        r["cores"] = os.cpu_count()
        if shutil.which("lscpu"):
            info = dict(line.split(":", 1) for line in run(["lscpu"]).splitlines() if ":" in line)
            r["model"] = info.get("Model name", "").strip()
            flags = info.get("Flags", "").split()
            r["flags"] = [f for f in flags if f.startswith(("avx", "amx", "fma", "f16c", "sse4"))]
        else:
            r["model"] = platform.processor()
        stage.figure("CPU", f"{r.get('model') or '?'} x{r['cores']}")
    return stage.finish()


if __name__ == "__main__":
    sys.exit(main())
