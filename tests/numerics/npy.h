// npy: NumPy .npy files for the numerics tests (read and write, little-endian, C order).
//
// The PyTorch reference scripts (tests/reference/) write their inputs and expected outputs as
// .npy files; the C tests read them, run dsv3's ops, and compare. Supports float32, float64,
// int32 and int64 arrays of up to DSV3_NPY_MAX_DIMS dimensions, format versions 1.0 and 2.0.
#ifndef DSV3_TESTS_NUMERICS_NPY_H
#define DSV3_TESTS_NUMERICS_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"

enum { DSV3_NPY_MAX_DIMS = 8 };

typedef enum { DSV3_NPY_F32, DSV3_NPY_F64, DSV3_NPY_I32, DSV3_NPY_I64 } Dsv3NpyType;

typedef struct {
    Dsv3NpyType type;
    int ndim;
    int64_t shape[DSV3_NPY_MAX_DIMS];
    int64_t count; // product of shape
    void *data;    // counted allocation (dsv3_free)
} Dsv3Npy;

// Reads `dir`/`name`.npy.
Dsv3Err dsv3_npy_read(Dsv3Npy *out, const char *dir, const char *name);

// Reads and converts to float32 (from f32 or f64), or int32 (from i32 or i64, range-checked).
Dsv3Err dsv3_npy_read_f32(float **out, int64_t *count, const char *dir, const char *name);
Dsv3Err dsv3_npy_read_i32(int32_t **out, int64_t *count, const char *dir, const char *name);
// Reads as float64 (from any of the four types), for the expected values of comparisons.
Dsv3Err dsv3_npy_read_f64(double **out, int64_t *count, const char *dir, const char *name);

// Writes `count` float32 values as a 1-D array `dir`/`name`.npy.
Dsv3Err dsv3_npy_write_f32(const char *dir, const char *name, const float *data, int64_t count);

void dsv3_npy_free(Dsv3Npy *npy);

// ‖a − b‖ / ‖b‖ in double (0 when both are zero).
double dsv3_npy_relative_error(const float *a, const double *b, int64_t count);

#endif
