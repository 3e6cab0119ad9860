// fp8: block-scaled e4m3 dequantisation. Legend: M rows, N columns of the weight.
#include "fp8.h"

#include <inttypes.h>

#include "dtype.h"

static int64_t blocks(int64_t n) { return (n + DSV3_FP8_BLOCK - 1) / DSV3_FP8_BLOCK; }

Dsv3Err dsv3_fp8_check_scale_shape(const char *name, int64_t M, int64_t N, int64_t scale_rows,
                                   int64_t scale_cols) {
    DSV3_CHECK(
        scale_rows == blocks(M) && scale_cols == blocks(N), DSV3_ERR_USAGE,
        "%s: an F8_E4M3 weight of shape (%" PRId64 ", %" PRId64 ") needs weight_scale_inv of "
        "shape (%" PRId64 ", %" PRId64 ") for %d×%d blocks, but it is (%" PRId64 ", %" PRId64 ")",
        name, M, N, blocks(M), blocks(N), DSV3_FP8_BLOCK, DSV3_FP8_BLOCK, scale_rows, scale_cols);
    return DSV3_OK;
}

void dsv3_fp8_dequantize_rows(float *out, const uint8_t *q, const float *scale, int64_t row0,
                              int64_t rows, int64_t N) {
    // A table of the 256 codes turns the decode into a lookup.
    float table[256];
    for (int b = 0; b < 256; b++)
        table[b] = dsv3_dtype_e4m3_to_f32((uint8_t)b);
    int64_t scale_cols = blocks(N);
    for (int64_t r = 0; r < rows; r++) {
        const float *s = scale + ((row0 + r) / DSV3_FP8_BLOCK) * scale_cols;
        for (int64_t j = 0; j < N; j++)
            out[r * N + j] = table[q[r * N + j]] * s[j / DSV3_FP8_BLOCK];
    }
}
