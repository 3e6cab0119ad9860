// arena: buffers that live and die together (a model's activations, a test's tensors).
//
// Each buffer is a counted allocation (alloc.h) recorded in the arena; destroying the arena
// frees them all, so code that builds many buffers has one clean-up path. An arena with
// `measure` set allocates nothing: it only adds up the bytes its buffers would take (memory
// plans), and hands out NULL — except for tables (dsv3_arena_table: arrays of structs or
// pointers that lay out the rest), which it allocates and counts as usual.
#ifndef DSV3_CORE_ARENA_H
#define DSV3_CORE_ARENA_H

#include <stddef.h>

#include "common/core/error.h"

typedef struct {
    void **buffers;
    size_t count, capacity;
    size_t bytes; // total handed out
    int measure;  // count the bytes only; every buffer is NULL
} Dsv3Arena;

// *out = `count` zeroed elements of `size` bytes, owned by the arena.
Dsv3Err dsv3_arena_calloc(Dsv3Arena *arena, void **out, size_t count, size_t size,
                          const char *what);

// As dsv3_arena_calloc, for a table: allocated even by a measuring arena.
Dsv3Err dsv3_arena_table(Dsv3Arena *arena, void **out, size_t count, size_t size, const char *what);

// Frees every buffer and empties the arena (which may be reused).
void dsv3_arena_destroy(Dsv3Arena *arena);

// Typed shorthand: DSV3_ARENA_ARRAY(arena, ptr, count, what) allocates count × sizeof *ptr.
#define DSV3_ARENA_ARRAY(arena, ptr, count, what)                                                  \
    dsv3_arena_calloc((arena), (void **)&(ptr), (size_t)(count), sizeof *(ptr), (what))

#define DSV3_ARENA_TABLE(arena, ptr, count, what)                                                  \
    dsv3_arena_table((arena), (void **)&(ptr), (size_t)(count), sizeof *(ptr), (what))

#endif
