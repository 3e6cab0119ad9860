// arena: a growable list of counted allocations.
#include "arena.h"

#include <string.h>

#include "common/core/alloc.h"

enum { ARENA_INITIAL_CAPACITY = 64 };

Dsv3Err dsv3_arena_table(Dsv3Arena *arena, void **out, size_t count, size_t size,
                         const char *what) {
    *out = NULL;
    if (arena->count == arena->capacity) {
        size_t capacity = arena->capacity ? 2 * arena->capacity : ARENA_INITIAL_CAPACITY;
        void **grown = NULL;
        DSV3_CALL(dsv3_alloc((void **)&grown, capacity * sizeof *grown, "arena index"));
        if (arena->count) memcpy(grown, arena->buffers, arena->count * sizeof *grown);
        dsv3_free(arena->buffers);
        arena->buffers = grown;
        arena->capacity = capacity;
    }
    // Zero-sized requests still get a distinct buffer, so callers need no special case.
    DSV3_CALL(dsv3_calloc(out, count ? count : 1, size ? size : 1, what));
    arena->buffers[arena->count++] = *out;
    arena->bytes += count * size;
    return DSV3_OK;
}

Dsv3Err dsv3_arena_calloc(Dsv3Arena *arena, void **out, size_t count, size_t size,
                          const char *what) {
    if (!arena->measure) return dsv3_arena_table(arena, out, count, size, what);
    *out = NULL;
    arena->bytes += count * size;
    return DSV3_OK;
}

void dsv3_arena_destroy(Dsv3Arena *arena) {
    for (size_t i = 0; i < arena->count; i++)
        dsv3_free(arena->buffers[i]);
    dsv3_free(arena->buffers);
    memset(arena, 0, sizeof *arena);
}
