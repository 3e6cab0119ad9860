// h5: the few HDF5 operations checkpoints need, with every return code checked.
//
// Files are opened with the default (sec2) driver: per-rank shard files need no MPI-IO, and
// HDF5 1.10 cannot read virtual datasets through MPI-IO (DESIGN.md §12). HDF5's own error
// printing is switched off; a failure is a DSV3_ERR_BACKEND error that names the file and
// object and quotes HDF5's innermost message. Datasets are contiguous (no chunking: ROMIO
// trouble with chunked datasets, and nothing here needs compression). Float data is stored as
// F32, or for model-only exports as F16 or BF16 (an HDF5 float type with bfloat16's bit
// fields); reads always convert to float32, whatever the stored float type.
// Box = a hyperslab given by start[d] and count[d] in the dataset's (global) coordinates.
#ifndef DSV3_CKPT_H5_H
#define DSV3_CKPT_H5_H

#include <hdf5.h>
#include <stdint.h>

#include "common/ckpt/dtype.h"
#include "common/core/error.h"

enum { DSV3_H5_MAX_DIMS = 3 };

// Creates (truncating) or opens for reading a file; close with dsv3_h5_close.
Dsv3Err dsv3_h5_create(hid_t *out, const char *path);
Dsv3Err dsv3_h5_open(hid_t *out, const char *path);

// Closes a file; with `sync`, also forces its bytes to disk (fsync) before returning.
Dsv3Err dsv3_h5_close(hid_t file, const char *path, int sync);

// A new contiguous dataset of type F32, F16 or BF16 (as stored), never filled (every byte is
// written by the caller). *out is closed with H5Dclose.
Dsv3Err dsv3_h5_dataset_create(hid_t *out, hid_t file, const char *path, const char *name,
                               Dsv3Dtype dtype, int ndim, const int64_t *shape);

// Writes the float32 values of a box, converted to the dataset's type.
Dsv3Err dsv3_h5_write_box(hid_t dset, const char *path, const char *name, Dsv3Dtype dtype, int ndim,
                          const int64_t *start, const int64_t *count, const float *data);

// Opens dataset `name` and checks that it is a float dataset of exactly this shape and, with
// f32_only, stored as F32; a missing dataset, another shape or type is an error naming
// `path`, `name` and both shapes.
Dsv3Err dsv3_h5_dataset_open(hid_t *out, hid_t file, const char *path, const char *name, int ndim,
                             const int64_t *shape, int f32_only);

// Reads a box as float32.
Dsv3Err dsv3_h5_read_box(hid_t dset, const char *path, const char *name, int ndim,
                         const int64_t *start, const int64_t *count, float *data);

// One source of a virtual dataset: `count` elements from `start` of the global dataset come
// from dataset `name` of shape `count` in file `file` (relative to the virtual file's folder).
typedef struct {
    const char *file, *name;
    int64_t start[DSV3_H5_MAX_DIMS], count[DSV3_H5_MAX_DIMS];
} Dsv3H5Source;

// Creates dataset `name` of global `shape` that stitches the sources together. Elements no
// source covers read as NaN.
Dsv3Err dsv3_h5_virtual_create(hid_t file, const char *path, const char *name, Dsv3Dtype dtype,
                               int ndim, const int64_t *shape, const Dsv3H5Source *sources,
                               int n_sources);

// Root attributes: an int64, and a string.
Dsv3Err dsv3_h5_attr_write_int(hid_t file, const char *path, const char *name, int64_t value);
Dsv3Err dsv3_h5_attr_write_str(hid_t file, const char *path, const char *name, const char *value);
Dsv3Err dsv3_h5_attr_read_int(hid_t file, const char *path, const char *name, int64_t *value);

// Calls visit(name, arg) for every dataset at the root (and under one level of groups, as
// "group/name"), in name order; stops at the first error it returns.
typedef Dsv3Err (*Dsv3H5Visit)(const char *name, void *arg);
Dsv3Err dsv3_h5_list(hid_t file, const char *path, Dsv3H5Visit visit, void *arg);

#endif
