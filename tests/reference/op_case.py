"""Writing one op's numerics case: arrays as .npy files in a folder of their own.

Shared by the ops_*.py reference scripts; tests/numerics/case.h reads what this writes.
"""

import os

import numpy as np
import torch


class Case:
    """A sub-case folder ROOT/NAME; save() writes NAME.npy files into it."""

    def __init__(self, root, name):
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)

    def save(self, name, value, dtype=np.float64):
        if isinstance(value, torch.Tensor):
            value = value.detach().numpy()
        np.save(os.path.join(self.dir, name + ".npy"), np.ascontiguousarray(value, dtype=dtype))

    def dims(self, *values):
        self.save("dims", np.array(values), np.int64)

    def params(self, *values):
        self.save("params", np.array(values), np.float64)


def float32_normals(generator, *shape, scale=1.0):
    """float64 normals that are exactly representable in float32."""
    return (torch.randn(*shape, generator=generator) * scale).float().double()
