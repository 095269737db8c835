"""stylert: StyleGAN2-based portrait editing, exported and run fast (see README.md)."""
import re
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
SDK_PARTS = ("runtime", "faces", "calls", "tools", "serving", "video")  # sdk/stylert/<part>/
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "sdk/stylert/_version.py").read_text()).group(1)

setup(
    name="stylert",
    version=VERSION,
    description="Inference SDK for StyleGAN2-based portrait retouching, restoration and stylization",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=["stylert", *(f"stylert.{part}" for part in SDK_PARTS), "stylert_export", "stylert_export.ops"],
    package_dir={
        "stylert": "sdk/stylert",
        "stylert_export": "export/stylert_export",
        "stylert_export.ops": "export/stylert_export/ops",
    },
    # The runtime (import name `stylert`) never needs torch. The face detector's network files ship
    # inside it (sdk/stylert/faces/mtcnn, MIT, NOTICE beside them), and so does the demo page of `stylert serve`.
    package_data={"stylert": ["py.typed"], "stylert.faces": ["mtcnn/*.onnx", "mtcnn/NOTICE"],
                  "stylert.serving": ["demo/index.html", "demo/demo.js", "demo/demo.css"]},
    license_files=["LICENSE"],
    install_requires=["numpy>=1.24", "onnxruntime>=1.17", "onnx>=1.16", "opencv-python-headless>=4.8", "pillow>=10",
                      "tqdm>=4.60", "simplejpeg>=1.8"],
    extras_require={
        # The PyTorch side: models, checkpoint loaders, ONNX export. Install torch first
        # (CPU build: `pip install torch==2.13.0`) so that this range pulls nothing more.
        "export": ["torch>=2.8", "onnx>=1.16", "onnxscript>=0.7", "safetensors>=0.4", "onnxruntime-extensions>=0.12"],
        # OpenVINO for x86 CPUs (chosen automatically there when installed; see README "Backends").
        "openvino": ["openvino>=2025.0,<2027"],
        # `stylert serve` (Ray Serve) and `stylert batch` (Ray Data); tested with Ray 2.60. Nothing else imports Ray.
        # python-multipart parses /inpaint's multipart forms (Starlette's form parser needs it).
        "serve": ["ray[serve,data]>=2.60,<2.61", "python-multipart>=0.0.9"],
        # Phone targets of `stylert export --target executorch` (ExecuTorch with XNNPACK, checked here through
        # executorch.runtime) and `--target ncnn` (pnnx converts, the ncnn wheel checks). ExecuTorch pins torch: 1.4.1
        # goes with torch 2.13.0, the pair tested; an extra so that nothing else inherits the pin. pnnx and ncnn are
        # released together, by date; their pair is the one tested. `--target ort-mobile` needs only onnxruntime.
        "mobile": ["executorch==1.4.1", "torch==2.13.0", "pnnx==20261020", "ncnn==1.0.20261020"],
        # tensorrt-stubs is installed with --no-deps by the Makefile: it requires NVIDIA's placeholder wheel.
        # the suite: pytest with two workers, the browser test (Playwright drives the system's Chromium; it never
        # downloads a browser), the documentation site's build (MkDocs, Material, mkdocstrings), and setuptools for
        # tests/test_wheel.py, which builds the wheel without build isolation (70.1+ needs no `wheel` package);
        # Hypothesis draws tests/test_fuzz.py's arrays and controls (seeded: the same cases on every run).
        "test": ["pytest>=7", "pytest-xdist>=3.5", "filelock>=3.12", "scikit-image>=0.21", "mypy>=1.8",
                 "matplotlib>=3.7", "playwright>=1.40", "mkdocs>=1.6", "mkdocs-material>=9.5",
                 "mkdocstrings[python]>=0.26", "setuptools>=70.1",
                 "hypothesis>=6.100"],
    },
    entry_points={
        "console_scripts": ["stylert=stylert.cli:main"],
        # Subcommands that live outside the runtime register here; the runtime never imports them.
        "stylert.commands": ["export=stylert_export.cli:register"],
        # The PyTorch reference of an exported graph, for `stylert bench --reference`.
        "stylert.references": ["torch=stylert_export.references:build"],
    },
)
