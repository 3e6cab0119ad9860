// dtype: the element types of checkpoint files and their conversion to and from float32.
//
// Names are safetensors' ("F32", "BF16", "F8_E4M3", …). Every type safetensors defines is
// known, so a header can be validated whatever it holds; only the floating types convert to
// float32 (F64, F32, F16, BF16, F8_E4M3 as e4m3fn: bias 7, no infinities, S.1111.111 = NaN).
// Conversions from float32 round to nearest even. Block-scaled FP8 weights are in fp8.h.
// No I/O here.
#ifndef DSV3_CKPT_DTYPE_H
#define DSV3_CKPT_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"

#define DSV3_DTYPES(X)                                                                             \
    X(F64, "F64", 8, 1)                                                                            \
    X(F32, "F32", 4, 1)                                                                            \
    X(F16, "F16", 2, 1)                                                                            \
    X(BF16, "BF16", 2, 1)                                                                          \
    X(F8_E4M3, "F8_E4M3", 1, 1)                                                                    \
    X(F8_E5M2, "F8_E5M2", 1, 0)                                                                    \
    X(I64, "I64", 8, 0)                                                                            \
    X(I32, "I32", 4, 0)                                                                            \
    X(I16, "I16", 2, 0)                                                                            \
    X(I8, "I8", 1, 0)                                                                              \
    X(U64, "U64", 8, 0)                                                                            \
    X(U32, "U32", 4, 0)                                                                            \
    X(U16, "U16", 2, 0)                                                                            \
    X(U8, "U8", 1, 0)                                                                              \
    X(BOOL, "BOOL", 1, 0)

#define DSV3_DTYPE_ENUM(id, name, size, to_f32) DSV3_DTYPE_##id,
typedef enum { DSV3_DTYPES(DSV3_DTYPE_ENUM) DSV3_DTYPE_COUNT } Dsv3Dtype;
#undef DSV3_DTYPE_ENUM

// "F32", …
const char *dsv3_dtype_name(Dsv3Dtype d);

// Bytes per element.
size_t dsv3_dtype_size(Dsv3Dtype d);

// The type of a safetensors name; an unknown name is a usage error that lists the known ones.
Dsv3Err dsv3_dtype_parse(const char *name, Dsv3Dtype *out);

// checkpoint.export_dtype ("float32", "bfloat16", "float16") as a type.
Dsv3Err dsv3_dtype_from_export(const char *export_dtype, Dsv3Dtype *out);

// Whether dsv3_dtype_to_f32 converts this type.
int dsv3_dtype_converts_to_f32(Dsv3Dtype d);

// out[i] = in[i] as float32 for n elements of type d (little-endian in memory).
Dsv3Err dsv3_dtype_to_f32(float *out, const void *in, int64_t n, Dsv3Dtype d);

// out[i] = in[i] rounded to F32, F16 or BF16 (nearest even; F16 overflows to ±inf).
Dsv3Err dsv3_dtype_from_f32(void *out, const float *in, int64_t n, Dsv3Dtype d);

// Single values (exposed for tests and the FP8 dequantiser).
// How many of the n values are NaN or infinite.
int64_t dsv3_count_nonfinite(const float *x, int64_t n);

float dsv3_dtype_bf16_to_f32(uint16_t h);
uint16_t dsv3_dtype_f32_to_bf16(float f);
float dsv3_dtype_f16_to_f32(uint16_t h);
uint16_t dsv3_dtype_f32_to_f16(float f);
float dsv3_dtype_e4m3_to_f32(uint8_t b);

#endif
