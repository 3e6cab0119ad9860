// alloc: counted, aligned heap allocation.
//
// Every buffer dsv3 owns comes from here, so the step log can print current and peak bytes.
// Buffers are aligned to DSV3_ALLOC_ALIGNMENT for vector loads. A failed allocation is an error
// that names what was being allocated and its size. Counters are process-wide and thread-safe.
#ifndef DSV3_CORE_ALLOC_H
#define DSV3_CORE_ALLOC_H

#include <stddef.h>

#include "error.h"

#ifdef __cplusplus
extern "C" { // the CUDA backend (C++) allocates too
#endif

enum { DSV3_ALLOC_ALIGNMENT = 64 };

// *out = `bytes` uninitialised bytes; `what` names the buffer in the error message.
Dsv3Err dsv3_alloc(void **out, size_t bytes, const char *what);

// *out = `count` × `size` zeroed bytes; overflow of the product is an error.
Dsv3Err dsv3_calloc(void **out, size_t count, size_t size, const char *what);

// Frees a buffer from dsv3_alloc / dsv3_calloc; NULL is ignored.
void dsv3_free(void *ptr);

// Copies `text` into a counted buffer.
Dsv3Err dsv3_strdup(char **out, const char *text, const char *what);

size_t dsv3_alloc_current_bytes(void);
size_t dsv3_alloc_peak_bytes(void);

// Restarts the peak from the current value (e.g. per step).
void dsv3_alloc_reset_peak(void);

#ifdef __cplusplus
}
#endif

#endif
