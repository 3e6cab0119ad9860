// dtype: names, sizes and float32 conversions of checkpoint element types.
#include "dtype.h"

#include <math.h>
#include <string.h>

#define DSV3_DTYPE_NAME(id, name, size, to_f32) name,
static const char *const dtype_names[DSV3_DTYPE_COUNT] = {DSV3_DTYPES(DSV3_DTYPE_NAME)};
#undef DSV3_DTYPE_NAME
#define DSV3_DTYPE_SIZE(id, name, size, to_f32) size,
static const size_t dtype_sizes[DSV3_DTYPE_COUNT] = {DSV3_DTYPES(DSV3_DTYPE_SIZE)};
#undef DSV3_DTYPE_SIZE
#define DSV3_DTYPE_CONVERTS(id, name, size, to_f32) to_f32,
static const int dtype_converts[DSV3_DTYPE_COUNT] = {DSV3_DTYPES(DSV3_DTYPE_CONVERTS)};
#undef DSV3_DTYPE_CONVERTS

// float32 bit fields.
static const uint32_t F32_ABS_MASK = 0x7fffffffu, F32_INF_BITS = 0x7f800000u;
// float16: exponent bias 15 (float32's 127 − 112), 10 mantissa bits (13 fewer than float32).
static const uint32_t F16_REBIAS = 112u << 23, F16_SHIFT = 13;
static const uint32_t F16_INF = 0x7c00u, F16_QNAN_BIT = 0x200u;
// Smallest float32 that rounds to float16 infinity (65520), and float16's smallest normal 2^-14.
static const uint32_t F16_OVERFLOW_BITS = 0x477ff000u, F16_MIN_NORMAL_BITS = 0x38800000u;
// float16 subnormals are multiples of 2^-24.
static const float F16_SUBNORMAL_SCALE = 16777216.0f;
// e4m3fn: bias 7, 3 mantissa bits, subnormals are multiples of 2^-9, S.1111.111 is NaN.
enum { E4M3_BIAS = 7, E4M3_MANTISSA_BITS = 3, E4M3_NAN_BITS = 0x7f, E4M3_SUBNORMAL_EXP = -9 };

const char *dsv3_dtype_name(Dsv3Dtype d) { return d < DSV3_DTYPE_COUNT ? dtype_names[d] : "?"; }

size_t dsv3_dtype_size(Dsv3Dtype d) { return d < DSV3_DTYPE_COUNT ? dtype_sizes[d] : 0; }

int dsv3_dtype_converts_to_f32(Dsv3Dtype d) { return d < DSV3_DTYPE_COUNT && dtype_converts[d]; }

Dsv3Err dsv3_dtype_parse(const char *name, Dsv3Dtype *out) {
    for (int d = 0; d < DSV3_DTYPE_COUNT; d++)
        if (strcmp(name, dtype_names[d]) == 0) {
            *out = (Dsv3Dtype)d;
            return DSV3_OK;
        }
    DSV3_RAISE(DSV3_ERR_USAGE,
               "unknown dtype \"%.64s\" (known: F64, F32, F16, BF16, F8_E4M3, F8_E5M2, "
               "I64, I32, I16, I8, U64, U32, U16, U8, BOOL)",
               name);
}

Dsv3Err dsv3_dtype_from_export(const char *export_dtype, Dsv3Dtype *out) {
    if (strcmp(export_dtype, "float32") == 0)
        *out = DSV3_DTYPE_F32;
    else if (strcmp(export_dtype, "bfloat16") == 0)
        *out = DSV3_DTYPE_BF16;
    else if (strcmp(export_dtype, "float16") == 0)
        *out = DSV3_DTYPE_F16;
    else
        DSV3_RAISE(DSV3_ERR_USAGE, "export dtype \"%s\" is not one of float32, bfloat16, float16",
                   export_dtype);
    return DSV3_OK;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float dsv3_dtype_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t dsv3_dtype_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & F32_ABS_MASK) > F32_INF_BITS) return (uint16_t)((u >> 16) | 0x40); // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u); // round to nearest even
    return (uint16_t)(u >> 16);
}

float dsv3_dtype_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    float magnitude;
    if (e == 0)
        magnitude = ldexpf((float)m, -24);
    else if (e == 0x1f)
        magnitude = m ? NAN : INFINITY;
    else
        magnitude = ldexpf((float)(m | 0x400u), (int)e - 25);
    return bits_f32(f32_bits(magnitude) | sign);
}

uint16_t dsv3_dtype_f32_to_f16(float f) {
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000u, a = u & F32_ABS_MASK;
    if (a >= F32_INF_BITS)
        return (uint16_t)(sign | F16_INF | (a > F32_INF_BITS ? F16_QNAN_BIT : 0));
    if (a >= F16_OVERFLOW_BITS) return (uint16_t)(sign | F16_INF);
    if (a < F16_MIN_NORMAL_BITS) // subnormal: a multiple of 2^-24, scaled exactly, rounded to even
        return (uint16_t)(sign | (uint32_t)nearbyintf(bits_f32(a) * F16_SUBNORMAL_SCALE));
    uint32_t r = a - F16_REBIAS;
    r += ((1u << (F16_SHIFT - 1)) - 1u) + ((r >> F16_SHIFT) & 1u);
    return (uint16_t)(sign | (r >> F16_SHIFT));
}

float dsv3_dtype_e4m3_to_f32(uint8_t b) {
    int e = (b >> E4M3_MANTISSA_BITS) & 0xf, m = b & 0x7;
    float magnitude;
    if ((b & 0x7f) == E4M3_NAN_BITS)
        magnitude = NAN;
    else if (e == 0)
        magnitude = ldexpf((float)m, E4M3_SUBNORMAL_EXP);
    else
        magnitude = ldexpf((float)(8 + m), e - E4M3_BIAS - E4M3_MANTISSA_BITS);
    return (b & 0x80) ? -magnitude : magnitude;
}

Dsv3Err dsv3_dtype_to_f32(float *out, const void *in, int64_t n, Dsv3Dtype d) {
    const uint8_t *p = in;
    switch (d) {
    case DSV3_DTYPE_F32: memcpy(out, in, (size_t)n * sizeof(float)); break;
    case DSV3_DTYPE_F64:
        for (int64_t i = 0; i < n; i++) {
            double x;
            memcpy(&x, p + 8 * i, sizeof x);
            out[i] = (float)x;
        }
        break;
    case DSV3_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            out[i] = dsv3_dtype_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    case DSV3_DTYPE_F16:
        for (int64_t i = 0; i < n; i++)
            out[i] = dsv3_dtype_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    case DSV3_DTYPE_F8_E4M3:
        for (int64_t i = 0; i < n; i++)
            out[i] = dsv3_dtype_e4m3_to_f32(p[i]);
        break;
    default:
        DSV3_RAISE(DSV3_ERR_USAGE,
                   "cannot convert %s to float32 (only F64, F32, F16, BF16, F8_E4M3)",
                   dsv3_dtype_name(d));
    }
    return DSV3_OK;
}

Dsv3Err dsv3_dtype_from_f32(void *out, const float *in, int64_t n, Dsv3Dtype d) {
    uint8_t *p = out;
    switch (d) {
    case DSV3_DTYPE_F32: memcpy(out, in, (size_t)n * sizeof(float)); break;
    case DSV3_DTYPE_BF16:
    case DSV3_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h =
                d == DSV3_DTYPE_BF16 ? dsv3_dtype_f32_to_bf16(in[i]) : dsv3_dtype_f32_to_f16(in[i]);
            p[2 * i] = (uint8_t)h, p[2 * i + 1] = (uint8_t)(h >> 8);
        }
        break;
    default:
        DSV3_RAISE(DSV3_ERR_USAGE, "cannot write %s from float32 (only F32, F16, BF16)",
                   dsv3_dtype_name(d));
    }
    return DSV3_OK;
}

int64_t dsv3_count_nonfinite(const float *x, int64_t n) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += !isfinite(x[i]);
    return bad;
}
