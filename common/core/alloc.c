// alloc: a header in front of every buffer records its size for the counters.
#include "alloc.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// The header occupies one alignment unit so the user pointer stays aligned.
typedef struct {
    size_t bytes;
} AllocHeader;

_Static_assert(sizeof(AllocHeader) <= DSV3_ALLOC_ALIGNMENT, "header must fit one alignment unit");

static atomic_size_t alloc_current;
static atomic_size_t alloc_peak;

static void alloc_count(size_t bytes) {
    size_t now = atomic_fetch_add(&alloc_current, bytes) + bytes;
    size_t peak = atomic_load(&alloc_peak);
    while (now > peak && !atomic_compare_exchange_weak(&alloc_peak, &peak, now)) {
    }
}

Dsv3Err dsv3_alloc(void **out, size_t bytes, const char *what) {
    *out = NULL;
    DSV3_CHECK(bytes <= SIZE_MAX - 2 * DSV3_ALLOC_ALIGNMENT, DSV3_ERR_MEMORY,
               "cannot allocate %zu bytes for %s: size overflows", bytes, what);
    size_t total =
        (bytes + 2 * DSV3_ALLOC_ALIGNMENT - 1) / DSV3_ALLOC_ALIGNMENT * DSV3_ALLOC_ALIGNMENT;
    unsigned char *base = aligned_alloc(DSV3_ALLOC_ALIGNMENT, total);
    DSV3_CHECK(base, DSV3_ERR_MEMORY, "cannot allocate %zu bytes for %s (%zu bytes already in use)",
               bytes, what, dsv3_alloc_current_bytes());
    ((AllocHeader *)base)->bytes = bytes;
    alloc_count(bytes);
    *out = base + DSV3_ALLOC_ALIGNMENT;
    return DSV3_OK;
}

Dsv3Err dsv3_calloc(void **out, size_t count, size_t size, const char *what) {
    *out = NULL;
    DSV3_CHECK(size == 0 || count <= SIZE_MAX / size, DSV3_ERR_MEMORY,
               "cannot allocate %zu × %zu bytes for %s: size overflows", count, size, what);
    DSV3_CALL(dsv3_alloc(out, count * size, what));
    memset(*out, 0, count * size);
    return DSV3_OK;
}

void dsv3_free(void *ptr) {
    if (!ptr) return;
    unsigned char *base = (unsigned char *)ptr - DSV3_ALLOC_ALIGNMENT;
    atomic_fetch_sub(&alloc_current, ((AllocHeader *)base)->bytes);
    free(base);
}

Dsv3Err dsv3_strdup(char **out, const char *text, const char *what) {
    size_t n = strlen(text) + 1;
    DSV3_CALL(dsv3_alloc((void **)out, n, what));
    memcpy(*out, text, n);
    return DSV3_OK;
}

size_t dsv3_alloc_current_bytes(void) { return atomic_load(&alloc_current); }

size_t dsv3_alloc_peak_bytes(void) { return atomic_load(&alloc_peak); }

void dsv3_alloc_reset_peak(void) { atomic_store(&alloc_peak, atomic_load(&alloc_current)); }
