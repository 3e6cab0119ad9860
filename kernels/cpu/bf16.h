// bf16: rounding fp32 to bf16 and widening it back, for the CPU kernels that store or compute in
// bf16 (convert.c, gemm_bf16.c).
//
// bf16 is the upper half of an f32, stored as uint16_t bits. Rounding to nearest even adds
// 0x7FFF plus the lowest kept bit to the f32 bits and drops the lower half: the carry reaches
// the kept bits exactly when the dropped half is above one half of the last kept place, or
// equal to it with that place odd. Finite values beyond bf16's largest round to infinity, as
// IEEE rounding does. NaN becomes torch's canonical quiet NaN (0x7FC0), so that no NaN rounds
// into an infinity. Branch-free, so that loops over them vectorise.
#ifndef DSV3_KERNELS_CPU_BF16_H
#define DSV3_KERNELS_CPU_BF16_H

#include <stdint.h>
#include <string.h>

enum {
    DSV3_BF16_SHIFT = 16,                    // bf16 bits are the upper 16 of the f32 bits
    DSV3_BF16_ROUND_HALF_MINUS_ONE = 0x7FFF, // one half of the last kept place, minus one
    DSV3_BF16_QUIET_NAN = 0x7FC0,
};

static inline uint16_t dsv3_bf16_from_f32(float x) {
    const uint32_t abs_mask = 0x7FFFFFFFu, infinity_bits = 0x7F800000u;
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    const uint32_t odd = (bits >> DSV3_BF16_SHIFT) & 1u;
    const uint16_t rounded =
        (uint16_t)((bits + DSV3_BF16_ROUND_HALF_MINUS_ONE + odd) >> DSV3_BF16_SHIFT);
    return (bits & abs_mask) > infinity_bits ? (uint16_t)DSV3_BF16_QUIET_NAN : rounded;
}

static inline float dsv3_f32_from_bf16(uint16_t h) {
    const uint32_t bits = (uint32_t)h << DSV3_BF16_SHIFT;
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

#endif
