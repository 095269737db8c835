"""Bring a wheel larger than one device call's 64 MiB carry (onnxruntime-gpu: about 256 MB) in parts.

Here (the CPU machine), once:
    python benchmarks/gpu/wheel_parts.py split onnxruntime_gpu-1.31.1-...whl .whlparts   # parts < 60 MiB + manifest
    echo /.whlparts/ >> .git/info/exclude

Then one device call per part, on a machine kept warm between calls (it keeps what a call wrote outside $OUT
until it goes back, 30 s after a call ends: the first call must confirm that before relying on it), each call
carrying only its part: carry [".whlparts/part-N"] and run
    python3 benchmarks/gpu/wheel_parts.py stash .whlparts /root/whlparts
and after the last part, in the call that runs the check:
    python3 benchmarks/gpu/wheel_parts.py install /root/whlparts /tmp/site && export PYTHONPATH=/tmp/site ...
`install` checks every part's and the whole wheel's sha256 against the manifest, reassembles it and
pip-installs it with --no-deps --no-index into the target folder (onnxruntime-gpu in place of the CPU
onnxruntime: put the target first on PYTHONPATH). Standard library only.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

PART = 60 * 2 ** 20 - 4096  # under 60 MiB, so a part and the repository both fit one call's 64 MiB


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def split(wheel: Path, folder: Path, size: int = PART) -> dict:
    """wheel -> folder/part-0/<name>.000, folder/part-1/<name>.001, ... (one folder per call's carry), manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    with open(wheel, "rb") as f:
        for i, block in enumerate(iter(lambda: f.read(size), b"")):
            sub = folder / f"part-{i}"
            sub.mkdir(exist_ok=True)
            path = sub / f"{wheel.name}.{i:03d}"
            path.write_bytes(block)
            parts.append({"file": f"part-{i}/{path.name}", "bytes": len(block),
                          "sha256": hashlib.sha256(block).hexdigest()})
    manifest = {"wheel": wheel.name, "bytes": wheel.stat().st_size, "sha256": sha256(wheel), "parts": parts}
    for i in range(len(parts)):  # each part folder carries the manifest, so any call can check what it has
        (folder / f"part-{i}" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def stash(carried: Path, store: Path) -> list[str]:
    """Copy the parts that came with this call (any part-N folders under `carried`) to `store` on the machine's disk."""
    store.mkdir(parents=True, exist_ok=True)
    copied = []
    for sub in sorted(carried.glob("part-*")):
        for f in sub.iterdir():
            shutil.copy2(f, store / f.name)
            copied.append(f.name)
    return copied


def assemble(store: Path) -> Path:
    manifest = json.loads((store / "manifest.json").read_text())
    missing = [p["file"] for p in manifest["parts"] if not (store / Path(p["file"]).name).is_file()]
    if missing:
        raise SystemExit(f"missing parts (the machine went back between calls?): {missing}")
    wheel = store / manifest["wheel"]
    with open(wheel, "wb") as out:
        for p in manifest["parts"]:
            data = (store / Path(p["file"]).name).read_bytes()
            if hashlib.sha256(data).hexdigest() != p["sha256"]:
                raise SystemExit(f"{p['file']}: sha256 mismatch")
            out.write(data)
    if sha256(wheel) != manifest["sha256"]:
        raise SystemExit(f"{wheel.name}: sha256 mismatch after reassembly")
    return wheel


def install(store: Path, target: Path) -> Path:
    wheel = assemble(store)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(target), str(wheel)], check=True)
    return wheel


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "split":
        m = split(Path(argv[1]), Path(argv[2]))
        print(f"{m['wheel']}: {m['bytes'] / 2 ** 20:.1f} MiB in {len(m['parts'])} parts under {argv[2]}/part-N")
        return 0
    if len(argv) == 3 and argv[0] == "stash":
        print("stashed:", ", ".join(stash(Path(argv[1]), Path(argv[2]))) or "nothing")
        return 0
    if len(argv) == 3 and argv[0] == "install":
        print(f"installed {install(Path(argv[1]), Path(argv[2])).name} into {argv[2]}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
