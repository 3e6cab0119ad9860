// cuda_device: which CUDA devices a process can use, behind a plain-C header.
//
// Device discovery and binding, so that a stage rank can pick its GPU and report what it runs
// on, and the device memory the backend holds. Built only when nvcc is found (DSV3_HAVE_CUDA);
// nothing here needs a GPU to compile or link. Every CUDA runtime return code is checked.
#ifndef DSV3_KERNELS_CUDA_DEVICE_H
#define DSV3_KERNELS_CUDA_DEVICE_H

#include <stddef.h>

#include "common/core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

// Number of usable CUDA devices; 0 (not an error) when there is no driver or no device.
Dsv3Err dsv3_cuda_device_count(int *count);

// Makes `device` current for the calling thread.
Dsv3Err dsv3_cuda_device_select(int device);

// One line about `device`: name, compute capability, memory, multiprocessors.
Dsv3Err dsv3_cuda_device_describe(int device, char *out, size_t capacity);

// Total and free bytes of the current device.
Dsv3Err dsv3_cuda_device_memory(size_t *free_bytes, size_t *total_bytes);

// Device bytes this process holds from dsv3_memory_alloc on CUDA contexts (kernels/cuda/
// memory.cu counts them), their peak, and a restart of the peak from the current value (per
// step), as common/core/alloc.h counts host memory.
size_t dsv3_cuda_allocated_bytes(void);
size_t dsv3_cuda_allocated_peak_bytes(void);
void dsv3_cuda_allocated_reset_peak(void);

#ifdef __cplusplus
}
#endif

#endif
