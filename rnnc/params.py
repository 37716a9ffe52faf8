"""Initial parameter values: deterministic from (seed, parameter name).

Each parameter draws from its own generator, seeded by the run's seed and a hash of its
name, so adding a layer never changes the initial values of the others.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .cells import ParamSpec
from .graph import NUMPY_DTYPES


def initial_value(name: str, spec: ParamSpec, seed: int, dtype: str) -> np.ndarray:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    shape = spec.shape
    if spec.init == "glorot":
        fan_in, fan_out = shape[0], shape[-1]
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        value = rng.uniform(-limit, limit, size=shape)
    elif spec.init == "zeros":
        value = np.zeros(shape)
    elif spec.init == "ones":
        value = np.ones(shape)
    elif spec.init == "gru_bias":      # TF1 GRUCell: r and z biases 1.0, candidate 0.0
        value = np.concatenate([np.ones(2 * shape[0] // 3), np.zeros(shape[0] // 3)])
    else:
        raise ValueError(f"unknown initializer {spec.init!r}")
    return value.astype(NUMPY_DTYPES[dtype])
