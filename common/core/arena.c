// arena: a growable list of buffers, each freed by the allocator it came from.
#include "arena.h"

#include <stdint.h>
#include <string.h>

#include "common/core/alloc.h"

enum { ARENA_INITIAL_CAPACITY = 64 };

// Room for one more buffer in the index.
static Dsv3Err arena_reserve(Dsv3Arena *arena) {
    if (arena->count < arena->capacity) return DSV3_OK;
    size_t capacity = arena->capacity ? 2 * arena->capacity : ARENA_INITIAL_CAPACITY;
    Dsv3ArenaBuffer *grown = NULL;
    DSV3_CALL(dsv3_alloc((void **)&grown, capacity * sizeof *grown, "arena index"));
    if (arena->count) memcpy(grown, arena->buffers, arena->count * sizeof *grown);
    dsv3_free(arena->buffers);
    arena->buffers = grown;
    arena->capacity = capacity;
    return DSV3_OK;
}

// Zero-sized requests still get a distinct buffer, so callers need no special case.
static Dsv3Err arena_add(Dsv3Arena *arena, void **out, size_t count, size_t size, const char *what,
                         int from_memory) {
    *out = NULL;
    DSV3_CHECK(size == 0 || count <= SIZE_MAX / size, DSV3_ERR_MEMORY,
               "%s: %zu elements of %zu bytes overflow a size", what, count, size);
    DSV3_CALL(arena_reserve(arena));
    if (from_memory) {
        const Dsv3ArenaMemory *m = arena->memory;
        DSV3_CALL(m->alloc_zeroed(m->ctx, out, count && size ? count * size : 1, what));
    } else {
        DSV3_CALL(dsv3_calloc(out, count ? count : 1, size ? size : 1, what));
    }
    arena->buffers[arena->count++] = (Dsv3ArenaBuffer){*out, from_memory};
    arena->bytes += count * size;
    return DSV3_OK;
}

Dsv3Err dsv3_arena_table(Dsv3Arena *arena, void **out, size_t count, size_t size,
                         const char *what) {
    return arena_add(arena, out, count, size, what, 0);
}

Dsv3Err dsv3_arena_calloc(Dsv3Arena *arena, void **out, size_t count, size_t size,
                          const char *what) {
    if (!arena->measure) return arena_add(arena, out, count, size, what, arena->memory != NULL);
    *out = NULL;
    arena->bytes += count * size;
    return DSV3_OK;
}

void dsv3_arena_destroy(Dsv3Arena *arena) {
    for (size_t i = 0; i < arena->count; i++) {
        const Dsv3ArenaBuffer *b = &arena->buffers[i];
        if (b->from_memory)
            arena->memory->release(arena->memory->ctx, b->ptr);
        else
            dsv3_free(b->ptr);
    }
    dsv3_free(arena->buffers);
    const Dsv3ArenaMemory *memory = arena->memory;
    memset(arena, 0, sizeof *arena);
    arena->memory = memory;
}
