// CUDA device discovery: on a machine without a GPU the suite is skipped (exit 77); with one,
// every device describes itself, can be selected, and reports consistent memory figures.
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/cuda_device.h"

enum { EXIT_SKIP = 77 };

static int fail(Dsv3Err err) {
    fprintf(stderr, "%s", dsv3_error_text());
    return (int)err;
}

int main(void) {
    int count = -1;
    Dsv3Err err = dsv3_cuda_device_count(&count);
    if (err != DSV3_OK) return fail(err);
    if (count == 0) {
        printf("no CUDA device: skipped\n");
        return EXIT_SKIP;
    }
    for (int d = 0; d < count; d++) {
        char line[256];
        if ((err = dsv3_cuda_device_describe(d, line, sizeof line)) != DSV3_OK) return fail(err);
        if ((err = dsv3_cuda_device_select(d)) != DSV3_OK) return fail(err);
        size_t free_bytes = 0, total_bytes = 0;
        if ((err = dsv3_cuda_device_memory(&free_bytes, &total_bytes)) != DSV3_OK) return fail(err);
        printf("%s; %zu of %zu bytes free\n", line, free_bytes, total_bytes);
        if (total_bytes == 0 || free_bytes > total_bytes || !strstr(line, "cuda:")) return 1;
    }
    if (dsv3_cuda_device_select(count) == DSV3_OK) return 1; // out of range must fail
    dsv3_error_clear();
    return 0;
}
