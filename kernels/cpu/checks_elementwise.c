// checks_elementwise: the CPU's check of convert — the pairs of dtypes it converts —, before the
// shared checks (kernels/checks.h).
#include <stdint.h>

#include "kernels/cpu/checks.h"

Dsv3Err dsv3_cpu_check_convert(const void *dst, Dsv3TensorDtype dst_dtype, const void *src,
                               Dsv3TensorDtype src_dtype, int64_t n) {
    const int f32_dst = dst_dtype == DSV3_TENSOR_F32, f32_src = src_dtype == DSV3_TENSOR_F32;
    const int bf16_dst = dst_dtype == DSV3_TENSOR_BF16, bf16_src = src_dtype == DSV3_TENSOR_BF16;
    DSV3_CHECK((f32_dst || bf16_dst) && (f32_src || bf16_src) && (f32_dst || f32_src),
               DSV3_ERR_USAGE,
               "convert: from dtype %d to dtype %d: the CPU converts f32 to f32, f32 to bf16 and "
               "bf16 to f32",
               (int)src_dtype, (int)dst_dtype);
    return dsv3_check_convert(dst, dst_dtype, src, src_dtype, n);
}
