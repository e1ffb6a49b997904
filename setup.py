"""Install the lip-sync toolkit: the ``audio``, ``marlin`` and ``lipsync`` packages.

The pinned, tested set of versions lives in requirements.txt (install with
``pip install -r requirements.txt``); the ranges here are what the code needs.
Extras keep the heavier parts optional: ``pip install .`` is enough for
``from marlin import Marlin``; add ``[face]``, ``[train]``, ``[metrics]``, ``[demo]``
or ``[all]`` for the rest.
"""

from setuptools import find_packages, setup

EXTRAS = {
    "face": ["mediapipe==0.10.21", "opencv-contrib-python>=4.8,<5", "scipy>=1.10"],
    "train": ["accelerate>=0.30", "tensorboard>=2.14"],
    "metrics": ["torchvision", "lpips>=0.1.4", "pytorch-fid>=0.3.0", "scikit-image>=0.21", "scipy>=1.10"],
    "demo": ["gradio>=5", "gradio_client>=1"],
    "dev": ["pytest>=8", "hypothesis>=6", "ruff>=0.5", "matplotlib>=3.7", "selenium>=4.20"],
}
EXTRAS["all"] = sorted({req for name, reqs in EXTRAS.items() if name != "dev" for req in reqs})

setup(
    name="marlin-lipsync",
    version="0.1.0",
    description="Lip-sync generation (Wav2Lip-style) conditioned on MARLIN facial video features",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["audio", "audio.*", "marlin", "marlin.*", "lipsync", "lipsync.*"]),
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24,<2",
        "einops>=0.7",
        "av>=12",
        "librosa>=0.10",
        "soundfile>=0.12",
        "python_speech_features>=0.6",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "pillow>=9",
        "psutil>=5",
    ],
    extras_require=EXTRAS,
    include_package_data=True,
)
