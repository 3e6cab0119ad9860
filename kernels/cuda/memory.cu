// memory: the memory ops of the CUDA backend — counted device allocations, copies and zeroing
// on the context's stream, synchronisation (which reports the kernels' data faults), and dtype
// conversion.
//
// Device memory comes from cudaMalloc (256-byte aligned, more than the 64 bytes kernels.h
// promises). Each allocation's size is kept in a host table, so that the process's current and
// peak device bytes are known (cuda_device.h) for the step line, as common/core/alloc.h counts
// host memory. Copies with host memory accept the caller's ordinary (pageable) memory: CUDA
// stages such copies, so the host buffer may be reused once memory_copy returns.
#include <pthread.h>
#include <stdint.h>

#include "common/core/alloc.h"
#include "kernels/checks.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/cuda_kernels.cuh"

// ---- the allocation table: open addressing on the pointer, grown by doubling ----

typedef struct {
    void *ptr; // NULL: empty slot; MEMORY_TOMBSTONE: freed
    size_t bytes;
} MemorySlot;

static MemorySlot *memory_slots;
static size_t memory_capacity, memory_used; // slots, and slots that are not empty
static size_t memory_current, memory_peak;  // device bytes
static pthread_mutex_t memory_lock = PTHREAD_MUTEX_INITIALIZER;

enum { MEMORY_INITIAL_SLOTS = 1024 };
static void *const MEMORY_TOMBSTONE = (void *)(uintptr_t)1;

static size_t memory_hash(const void *p, size_t capacity) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33; // cudaMalloc's pointers share their low bits: mix the high ones in
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)(x & (capacity - 1));
}

static void memory_insert_slot(MemorySlot *slots, size_t capacity, void *p, size_t bytes) {
    size_t i = memory_hash(p, capacity);
    while (slots[i].ptr != NULL && slots[i].ptr != MEMORY_TOMBSTONE)
        i = (i + 1) & (capacity - 1);
    slots[i].ptr = p;
    slots[i].bytes = bytes;
}

// Room for one more entry (called with the lock held): rehashes at 3/4 full, dropping
// tombstones.
static Dsv3Err memory_reserve(void) {
    if (memory_slots != NULL && (memory_used + 1) * 4 <= memory_capacity * 3) return DSV3_OK;
    size_t capacity = memory_capacity ? memory_capacity * 2 : (size_t)MEMORY_INITIAL_SLOTS;
    MemorySlot *slots = NULL;
    DSV3_CALL(dsv3_calloc((void **)&slots, capacity, sizeof *slots, "CUDA allocation table"));
    size_t used = 0;
    for (size_t i = 0; i < memory_capacity; i++)
        if (memory_slots[i].ptr != NULL && memory_slots[i].ptr != MEMORY_TOMBSTONE) {
            memory_insert_slot(slots, capacity, memory_slots[i].ptr, memory_slots[i].bytes);
            used++;
        }
    dsv3_free(memory_slots);
    memory_slots = slots;
    memory_capacity = capacity;
    memory_used = used;
    return DSV3_OK;
}

// The slot of p, or NULL (lock held).
static MemorySlot *memory_find(const void *p) {
    if (memory_slots == NULL) return NULL;
    size_t i = memory_hash(p, memory_capacity);
    while (memory_slots[i].ptr != NULL) {
        if (memory_slots[i].ptr == p) return &memory_slots[i];
        i = (i + 1) & (memory_capacity - 1);
    }
    return NULL;
}

extern "C" size_t dsv3_cuda_allocated_bytes(void) {
    pthread_mutex_lock(&memory_lock);
    const size_t bytes = memory_current;
    pthread_mutex_unlock(&memory_lock);
    return bytes;
}

extern "C" size_t dsv3_cuda_allocated_peak_bytes(void) {
    pthread_mutex_lock(&memory_lock);
    const size_t bytes = memory_peak;
    pthread_mutex_unlock(&memory_lock);
    return bytes;
}

extern "C" void dsv3_cuda_allocated_reset_peak(void) {
    pthread_mutex_lock(&memory_lock);
    memory_peak = memory_current;
    pthread_mutex_unlock(&memory_lock);
}

// ---- the ops ----

extern "C" Dsv3Err dsv3_cuda_memory_alloc(const Dsv3KernelContext *ctx, void **out, size_t bytes,
                                          const char *what) {
    (void)ctx;
    DSV3_CHECK(out != NULL, DSV3_ERR_USAGE, "memory_alloc: out is NULL");
    *out = NULL;
    if (what == NULL) what = "device memory";
    void *p = NULL;
    const cudaError_t rc = cudaMalloc(&p, bytes > 0 ? bytes : 1);
    if (rc != cudaSuccess) {
        size_t free_bytes = 0, total_bytes = 0;
        (void)cudaGetLastError();
        (void)cudaMemGetInfo(&free_bytes, &total_bytes);
        DSV3_RAISE(DSV3_ERR_BACKEND,
                   "memory_alloc: %zu bytes of device memory for %s failed: %s (the device has "
                   "%zu of %zu bytes free; this process holds %zu)",
                   bytes, what, cudaGetErrorString(rc), free_bytes, total_bytes,
                   dsv3_cuda_allocated_bytes());
    }
    pthread_mutex_lock(&memory_lock);
    Dsv3Err err = memory_reserve();
    if (err == DSV3_OK) {
        memory_insert_slot(memory_slots, memory_capacity, p, bytes);
        memory_used++;
        memory_current += bytes;
        if (memory_current > memory_peak) memory_peak = memory_current;
    }
    pthread_mutex_unlock(&memory_lock);
    if (err != DSV3_OK) {
        (void)cudaFree(p);
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    *out = p;
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_memory_free(const Dsv3KernelContext *ctx, void *p) {
    (void)ctx;
    if (p == NULL) return DSV3_OK;
    pthread_mutex_lock(&memory_lock);
    MemorySlot *slot = memory_find(p);
    size_t bytes = 0;
    if (slot != NULL) {
        bytes = slot->bytes;
        slot->ptr = MEMORY_TOMBSTONE;
        memory_current -= bytes;
    }
    pthread_mutex_unlock(&memory_lock);
    DSV3_CHECK(slot != NULL, DSV3_ERR_USAGE,
               "memory_free: %p is not device memory from memory_alloc (or was freed already)", p);
    // cudaFree waits for the device to finish with the memory before releasing it.
    CUDA_CALL(cudaFree(p));
    return DSV3_OK;
}

static cudaMemcpyKind memory_kind(Dsv3CopyKind kind) {
    switch (kind) {
    case DSV3_COPY_HOST_TO_DEVICE: return cudaMemcpyHostToDevice;
    case DSV3_COPY_DEVICE_TO_HOST: return cudaMemcpyDeviceToHost;
    case DSV3_COPY_DEVICE_TO_DEVICE: break;
    }
    return cudaMemcpyDeviceToDevice;
}

extern "C" Dsv3Err dsv3_cuda_memory_copy(const Dsv3KernelContext *ctx, void *dst, const void *src,
                                         size_t bytes, Dsv3CopyKind kind) {
    DSV3_CALL(dsv3_check_memory_copy(dst, src, bytes, kind));
    if (bytes == 0) return DSV3_OK;
    CUDA_CALL(cudaMemcpyAsync(dst, src, bytes, memory_kind(kind), cuda_stream(ctx)));
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_memory_zero(const Dsv3KernelContext *ctx, void *dst, size_t bytes) {
    DSV3_CALL(dsv3_check_memory_zero(dst, bytes));
    if (bytes == 0) return DSV3_OK;
    CUDA_CALL(cudaMemsetAsync(dst, 0, bytes, cuda_stream(ctx)));
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_synchronize(const Dsv3KernelContext *ctx) {
    CUDA_CALL(cudaStreamSynchronize(cuda_stream(ctx)));
    CudaFault fault;
    CUDA_CALL(cudaMemcpy(&fault, cuda_fault_record(ctx), sizeof fault, cudaMemcpyDeviceToHost));
    if (fault.op == 0) return DSV3_OK;
    // Reported once: the record is cleared for the next op that meets bad data, on the context's
    // stream (cudaMemset's legacy default stream is not ordered with a non-blocking stream: the
    // clearing could land after the next op's kernels and erase their fault).
    CUDA_CALL(cudaMemsetAsync(cuda_fault_record(ctx), 0, sizeof fault, cuda_stream(ctx)));
    DSV3_RAISE(DSV3_ERR_USAGE,
               "%s: element %lld of its input holds %lld, outside what the op accepts (found on "
               "the device; the element was skipped, so the op's results are not valid)",
               dsv3_op_name((Dsv3Op)(fault.op - 1)), fault.index, fault.value);
}

// ---- convert ----

template <typename D, typename S>
__global__ void memory_convert_kernel(D *dst, const S *src, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        cuda_store(dst, i, cuda_load(src, i));
}

template <typename D, typename S>
static Dsv3Err memory_convert(const Dsv3KernelContext *ctx, void *dst, const void *src, int64_t n) {
    memory_convert_kernel<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, cuda_stream(ctx)>>>(
        (D *)dst, (const S *)src, n);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_convert(const Dsv3KernelContext *ctx, void *dst,
                                     Dsv3TensorDtype dst_dtype, const void *src,
                                     Dsv3TensorDtype src_dtype, int64_t n) {
    DSV3_CALL(dsv3_cuda_check_dtype(dst_dtype, "convert (dst)"));
    DSV3_CALL(dsv3_cuda_check_dtype(src_dtype, "convert (src)"));
    DSV3_CALL(dsv3_check_convert(dst, dst_dtype, src, src_dtype, n));
    if (n == 0) return DSV3_OK;
    if (dst_dtype == src_dtype) {
        const size_t dst_bytes = (size_t)n * (dst_dtype == DSV3_TENSOR_BF16 ? 2 : 4);
        CUDA_CALL(cudaMemcpyAsync(dst, src, dst_bytes, cudaMemcpyDeviceToDevice, cuda_stream(ctx)));
        return DSV3_OK;
    }
    if (dst_dtype == DSV3_TENSOR_BF16)
        return memory_convert<__nv_bfloat16, float>(ctx, dst, src, n);
    return memory_convert<float, __nv_bfloat16>(ctx, dst, src, n);
}
