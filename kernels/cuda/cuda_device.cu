// cuda_device: device discovery and selection through the CUDA runtime.
#include "cuda_device.h"

#include <stdio.h>

#include "kernels/cuda/cuda_kernels.cuh"

extern "C" Dsv3Err dsv3_cuda_device_count(int *count) {
    *count = 0;
    cudaError_t rc = cudaGetDeviceCount(count);
    // No driver or no device is an answer (zero devices), not a failure.
    if (rc == cudaErrorNoDevice || rc == cudaErrorInsufficientDriver) {
        (void)cudaGetLastError(); // clear the sticky error
        *count = 0;
        return DSV3_OK;
    }
    CUDA_CALL(rc);
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_device_select(int device) {
    int count = 0;
    Dsv3Err err = dsv3_cuda_device_count(&count);
    if (err != DSV3_OK) return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    DSV3_CHECK(device >= 0 && device < count, DSV3_ERR_USAGE,
               "CUDA device %d does not exist: this process sees %d device(s)", device, count);
    CUDA_CALL(cudaSetDevice(device));
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_device_describe(int device, char *out, size_t capacity) {
    cudaDeviceProp prop;
    CUDA_CALL(cudaGetDeviceProperties(&prop, device));
    const double gib = 1024.0 * 1024.0 * 1024.0;
    snprintf(out, capacity, "cuda:%d %s, compute capability %d.%d, %.1f GiB, %d SMs", device,
             prop.name, prop.major, prop.minor, (double)prop.totalGlobalMem / gib,
             prop.multiProcessorCount);
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_device_memory(size_t *free_bytes, size_t *total_bytes) {
    CUDA_CALL(cudaMemGetInfo(free_bytes, total_bytes));
    return DSV3_OK;
}
