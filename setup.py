"""Installation script for jambatalk."""

import re
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "jambatalk" / "__init__.py").read_text()).group(1)

setup(
    name="jambatalk",
    version=VERSION,
    description="Speech-driven 3D facial animation with a hybrid Mamba / Transformer (Jamba) decoder",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_namespace_packages(include=["jambatalk", "jambatalk.*"], exclude=["*.__pycache__"]),
    package_data={"jambatalk": ["assets/*", "assets/**/*", "ops/*.c"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "transformers>=4.38",
        "numpy>=1.24",
        "scipy>=1.10",
        "trimesh>=4.0",
        "soundfile>=0.12",
        "imageio-ffmpeg>=0.4.9",
        "safetensors>=0.4",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "tensorboard>=2.12",
    ],
    extras_require={
        # Offscreen rendering: moderngl on EGL (or OSMesa); no CUDA needed.
        "render": ["moderngl>=5.8", "glcontext>=2.5"],
        # Fused CUDA kernels for the selective scan; GPU users only.
        "kernels": ["mamba-ssm>=2.0", "causal-conv1d>=1.2"],
        # Offline phoneme pseudo-labels for lip-reading supervision.
        "phonemes": ["hama>=1.0"],
        "dev": [
            "pytest>=7",
            "ruff>=0.4",
            "torchmetrics>=1.3",
            "mambapy>=1.2",
            "moderngl>=5.8",
            "glcontext>=2.5",
            "av>=11",
        ],
    },
    entry_points={"console_scripts": ["jambatalk=jambatalk.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Multimedia :: Graphics :: 3D Modeling",
    ],
)
