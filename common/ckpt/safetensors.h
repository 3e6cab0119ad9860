// safetensors: reading and writing the safetensors format (Hugging Face's tensor files).
//
// A file is an 8-byte little-endian header length L, a JSON header of L bytes, then the data:
// the header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end)}, offsets
// into the data that follows, plus an optional "__metadata__" map of strings. The reader
// parses the header with json-c and rejects, naming the file and the tensor, anything that
// does not describe the data exactly: a length beyond the file or above 100 MB, JSON that is
// not an object, an unknown dtype, a shape whose size disagrees with its offsets, offsets
// outside the data, overlapping tensors, or bytes no tensor covers. Tensor data is read on
// demand (pread) in any byte range, so a caller never holds more than it asks for.
//
// The writer takes every tensor's name, dtype and shape up front (the header comes first),
// then the data of each tensor in header order, in as many pieces as the caller likes.
// Neither side knows about models or names (hf_names.h does).
#ifndef DSV3_CKPT_SAFETENSORS_H
#define DSV3_CKPT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/ckpt/dtype.h"
#include "common/core/error.h"

enum {
    DSV3_SAFETENSORS_MAX_DIMS = 8,
    DSV3_SAFETENSORS_PREFIX_BYTES = 8, // the header length
};
// Largest header accepted: safetensors' own limit.
#define DSV3_SAFETENSORS_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

typedef struct {
    char *name;
    Dsv3Dtype dtype;
    int ndim;
    int64_t shape[DSV3_SAFETENSORS_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end; // byte range within the data section
} Dsv3SafetensorsTensor;

typedef struct Dsv3Safetensors Dsv3Safetensors;

// Opens and validates a file. Errors name `path`.
Dsv3Err dsv3_safetensors_open(Dsv3Safetensors **out, const char *path);

// Validates a whole file held in memory (`size` bytes, kept by the caller while in use);
// `source` names it in errors. For tests and the fuzz harness.
Dsv3Err dsv3_safetensors_open_memory(Dsv3Safetensors **out, const void *data, size_t size,
                                     const char *source);

void dsv3_safetensors_close(Dsv3Safetensors *f);

// Tensors in header order (as json-c iterates the object); count via *count.
const Dsv3SafetensorsTensor *dsv3_safetensors_tensors(const Dsv3Safetensors *f, size_t *count);

// The tensor of this name, or NULL.
const Dsv3SafetensorsTensor *dsv3_safetensors_find(const Dsv3Safetensors *f, const char *name);

// The value of "__metadata__"[key], or NULL.
const char *dsv3_safetensors_metadata(const Dsv3Safetensors *f, const char *key);

// Where the file came from (its path or source name).
const char *dsv3_safetensors_source(const Dsv3Safetensors *f);

// Copies bytes [offset, offset + bytes) of a tensor's data into dst.
Dsv3Err dsv3_safetensors_read(const Dsv3Safetensors *f, const Dsv3SafetensorsTensor *t, void *dst,
                              uint64_t offset, uint64_t bytes);

// Elements [first, first + n) of a floating tensor as float32 (F64, F32, F16, BF16, F8_E4M3).
Dsv3Err dsv3_safetensors_read_f32(const Dsv3Safetensors *f, const Dsv3SafetensorsTensor *t,
                                  float *dst, int64_t first, int64_t n);

// ---- writing ----

typedef struct {
    const char *name;
    Dsv3Dtype dtype;
    int ndim;
    int64_t shape[DSV3_SAFETENSORS_MAX_DIMS];
} Dsv3SafetensorsSpec;

typedef struct Dsv3SafetensorsWriter Dsv3SafetensorsWriter;

// Creates `path` and writes the header for `count` tensors (data in this order), with
// "__metadata__": {"format": "pt"}.
Dsv3Err dsv3_safetensors_writer_open(Dsv3SafetensorsWriter **out, const char *path,
                                     const Dsv3SafetensorsSpec *specs, size_t count);

// Appends `bytes` bytes of data; tensors follow each other in spec order.
Dsv3Err dsv3_safetensors_writer_append(Dsv3SafetensorsWriter *w, const void *data, size_t bytes);

// Checks that every tensor's data was written, flushes to disk (fsync) and closes; frees w
// either way. A NULL w is ignored.
Dsv3Err dsv3_safetensors_writer_close(Dsv3SafetensorsWriter *w);

// Frees w and removes its unfinished file (after an error).
void dsv3_safetensors_writer_abandon(Dsv3SafetensorsWriter *w);

#endif
