"""r2n2-jax: 3D-R2N2 single- and multi-view 3D reconstruction in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="r2n2-jax",
    version="0.1.0",
    description="3D-R2N2 (Choy et al., ECCV 2016) in JAX/Flax: train, evaluate and reuse.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["r2n2_jax", "r2n2_jax.*", "data_prep", "data_prep.*"]),
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12,<0.13",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "tensorflow-datasets>=4.9.9",
        "array-record>=0.8",
        "zlib-ng>=0.5",  # Inflates the training views 4-7x faster than zlib (input_pipeline).
        "grain>=0.2.12",
        "ml-collections>=1.0",
        "absl-py>=2.1",
        "numpy>=1.26",
        "scipy>=1.11",
        "trimesh>=4.5",
        "rtree>=1.3",
        "manifold3d>=3.0",
        "pyrender>=0.1.45",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
        "scikit-image>=0.24",
        "pillow>=10",
        "fast-simplification>=0.1",  # trimesh's quadric decimation of huge meshes (data_prep).
        "importlib_resources",  # tfds dataset builders import it (tfds declares it for Python < 3.9 only).
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5"],
        # The PyTorch reference network of benchmarks/ (CPU wheel; not needed to train or test).
        "bench": ["torch==2.13.0"],
        # Building datasets on Apache Beam through TFDS (`python -m data_prep ... --beam`).
        "beam": ["apache-beam>=2.50"],
    },
)
