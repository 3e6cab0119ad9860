"""Every tensor of a dsv3 checkpoint folder, read whole with h5py, for the end-to-end tests."""
import h5py


def checkpoint_tensors(folder):
    """{"model:<fqn>" or "optimizer:exp_avg/<fqn>" (and exp_avg_sq): array} of a step-N folder."""
    out = {}
    for kind in ("model", "optimizer"):
        with h5py.File(f"{folder}/{kind}.h5", "r") as f:
            f.visititems(lambda key, d: out.__setitem__(f"{kind}:{key}", d[()])
                         if isinstance(d, h5py.Dataset) else None)
    return out
