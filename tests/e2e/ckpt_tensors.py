"""Every tensor of a dsv3 checkpoint folder, read whole with h5py, for the end-to-end tests."""
import h5py
import numpy as np


def checkpoint_tensors(folder):
    """{"model:<fqn>" or "optimizer:exp_avg/<fqn>" (and exp_avg_sq): array} of a step-N folder."""
    out = {}
    for kind in ("model", "optimizer"):
        with h5py.File(f"{folder}/{kind}.h5", "r") as f:
            f.visititems(lambda key, d: out.__setitem__(f"{kind}:{key}", d[()])
                         if isinstance(d, h5py.Dataset) else None)
    return out


def state_difference(got, ref):
    """The largest relative L2 difference of a tensor of `got` from the same tensor of `ref`
    (checkpoint_tensors of two folders) and its key; both hold the same tensors in the same
    shapes, and expert biases are equal (they follow the token counts exactly)."""
    assert sorted(got) == sorted(ref), set(got) ^ set(ref)
    worst, where = 0.0, ""
    for key, b in ref.items():
        a = got[key]
        assert a.shape == b.shape, (key, a.shape, b.shape)
        if key.endswith("expert_bias"):
            assert np.array_equal(a, b), (key, a, b)
            continue
        scale = float(np.linalg.norm(b.astype(np.float64)))
        error = float(np.linalg.norm(a.astype(np.float64) - b)) / scale if scale > 0 else 0.0
        if error > worst:
            worst, where = error, key
    return worst, where
