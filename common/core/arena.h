// arena: buffers that live and die together (a model's activations, a test's tensors).
//
// Each buffer is recorded in the arena; destroying the arena frees them all, so code that
// builds many buffers has one clean-up path. Arrays (dsv3_arena_calloc) come from the arena's
// memory: counted host memory (alloc.h), or, when `memory` is set, that allocator's (a kernel
// context's device memory). Tables (dsv3_arena_table: arrays of structs or pointers that lay
// out the rest, read by the host) are always counted host memory. An arena with `measure` set
// allocates no arrays: it only adds up the bytes they would take (memory plans), and hands out
// NULL — tables it allocates and counts as usual.
#ifndef DSV3_CORE_ARENA_H
#define DSV3_CORE_ARENA_H

#include <stddef.h>

#include "common/core/error.h"

// Where an arena's arrays live: alloc_zeroed gives `bytes` zeroed bytes (`what` names them in
// errors), release frees them; ctx is the allocator's own.
typedef struct {
    void *ctx;
    Dsv3Err (*alloc_zeroed)(void *ctx, void **out, size_t bytes, const char *what);
    void (*release)(void *ctx, void *ptr);
} Dsv3ArenaMemory;

typedef struct {
    void *ptr;
    int from_memory; // 1: an array of the arena's memory; 0: counted host memory
} Dsv3ArenaBuffer;

typedef struct {
    Dsv3ArenaBuffer *buffers;
    size_t count, capacity;
    size_t bytes;                  // total handed out
    int measure;                   // count the bytes only; every array is NULL
    const Dsv3ArenaMemory *memory; // the arrays' memory; NULL: counted host memory
} Dsv3Arena;

// *out = `count` zeroed elements of `size` bytes, owned by the arena.
Dsv3Err dsv3_arena_calloc(Dsv3Arena *arena, void **out, size_t count, size_t size,
                          const char *what);

// As dsv3_arena_calloc, for a table: allocated even by a measuring arena.
Dsv3Err dsv3_arena_table(Dsv3Arena *arena, void **out, size_t count, size_t size, const char *what);

// Frees every buffer and empties the arena (which may be reused; its memory stays).
void dsv3_arena_destroy(Dsv3Arena *arena);

// Typed shorthand: DSV3_ARENA_ARRAY(arena, ptr, count, what) allocates count × sizeof *ptr.
#define DSV3_ARENA_ARRAY(arena, ptr, count, what)                                                  \
    dsv3_arena_calloc((arena), (void **)&(ptr), (size_t)(count), sizeof *(ptr), (what))

#define DSV3_ARENA_TABLE(arena, ptr, count, what)                                                  \
    dsv3_arena_table((arena), (void **)&(ptr), (size_t)(count), sizeof *(ptr), (what))

#endif
