// fp8: DeepSeek-V3's block-quantised FP8 weights, dequantised to float32.
//
// An HF DeepSeek-V3 checkpoint stores a linear weight W (M, N) as F8_E4M3 together with
// `<name>_scale_inv` S (ceil(M / 128), ceil(N / 128)), F32 (or BF16): W[i, j] = e4m3(Q[i, j]) ×
// S[i / 128, j / 128]. This module checks the shapes and computes that, a row range at a time
// so a caller can stream a large weight. It does not quantise (dsv3 never writes FP8).
#ifndef DSV3_CKPT_FP8_H
#define DSV3_CKPT_FP8_H

#include <stdint.h>

#include "common/core/error.h"

enum { DSV3_FP8_BLOCK = 128 }; // rows and columns per scale block

// Checks that a scale of shape (scale_rows, scale_cols) fits a weight (M, N); `name` names the
// weight in the message.
Dsv3Err dsv3_fp8_check_scale_shape(const char *name, int64_t M, int64_t N, int64_t scale_rows,
                                   int64_t scale_cols);

// out (rows, N) = dequantised rows [row0, row0 + rows) of the weight; q holds those rows as
// e4m3 bytes (rows, N); scale is the whole (ceil(M/128), ceil(N/128)) float32 scale.
void dsv3_fp8_dequantize_rows(float *out, const uint8_t *q, const float *scale, int64_t row0,
                              int64_t rows, int64_t N);

#endif
