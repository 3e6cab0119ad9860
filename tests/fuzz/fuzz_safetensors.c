// fuzz_safetensors: libFuzzer harness for common/ckpt/safetensors (the reader).
//
// Every input is opened as a whole safetensors file held in memory. A rejected input must
// leave no file object, a usage error whose message names the input, and no counted bytes.
// An accepted one must describe its data exactly — every tensor inside the data section,
// size = elements × dtype size, no two tensors overlapping, every byte covered — and every
// tensor must read back (as float32 too, for the floating types); then it is closed. Any
// broken expectation aborts, which libFuzzer reports. The same file also builds with gcc for
// tests/fuzz/replay_main.c.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ckpt/safetensors.h"
#include "common/core/alloc.h"
#include "common/core/error.h"
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SOURCE "fuzz.safetensors"
// Elements read back as float32 per tensor at most (bounds the work per input).
enum { FUZZ_MAX_CONVERT = 1 << 16 };

static void check_accepted(const Dsv3Safetensors *f, const uint8_t *data, size_t size) {
    size_t count = 0;
    const Dsv3SafetensorsTensor *t = dsv3_safetensors_tensors(f, &count);
    uint64_t header = 0;
    for (int i = 7; i >= 0; i--)
        header = header << 8 | data[i];
    uint64_t data_size = size - 8 - header, covered = 0;
    for (size_t i = 0; i < count; i++) {
        if (t[i].begin > t[i].end || t[i].end > data_size)
            fuzz_fail("tensor %zu outside the data", i);
        uint64_t bytes = t[i].end - t[i].begin;
        if ((uint64_t)t[i].numel * dsv3_dtype_size(t[i].dtype) != bytes)
            fuzz_fail("tensor %zu size mismatch", i);
        covered += bytes;
        for (size_t j = 0; j < i; j++)
            if (t[i].begin < t[j].end && t[j].begin < t[i].end && bytes && t[j].end > t[j].begin)
                fuzz_fail("tensors %zu and %zu overlap", j, i);
        if (dsv3_safetensors_find(f, t[i].name) == NULL)
            fuzz_fail("tensor %zu cannot be found by name", i);
        uint8_t *buf = malloc(bytes ? bytes : 1);
        if (!buf) fuzz_fail("out of memory");
        if (dsv3_safetensors_read(f, &t[i], buf, 0, bytes) != DSV3_OK)
            fuzz_fail("read: %s", dsv3_error_text());
        if (bytes && memcmp(buf, data + 8 + header + t[i].begin, bytes) != 0)
            fuzz_fail("read wrong bytes");
        free(buf);
        if (dsv3_dtype_converts_to_f32(t[i].dtype) && t[i].numel <= FUZZ_MAX_CONVERT) {
            float *out = malloc(sizeof(float) * (size_t)(t[i].numel ? t[i].numel : 1));
            if (!out) fuzz_fail("out of memory");
            if (dsv3_safetensors_read_f32(f, &t[i], out, 0, t[i].numel) != DSV3_OK)
                fuzz_fail("read_f32: %s", dsv3_error_text());
            free(out);
        }
    }
    if (covered != data_size)
        fuzz_fail("%llu of %llu data bytes covered", (unsigned long long)covered,
                  (unsigned long long)data_size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t before = dsv3_alloc_current_bytes();
    Dsv3Safetensors *f = NULL;
    Dsv3Err err = dsv3_safetensors_open_memory(&f, data, size, FUZZ_SOURCE);
    if (err == DSV3_OK) {
        if (!f) fuzz_fail("success without a file");
        check_accepted(f, data, size);
        dsv3_safetensors_close(f);
    } else {
        if (f) fuzz_fail("failure left a file behind");
        if (err != DSV3_ERR_USAGE) fuzz_fail("unexpected error: %s", dsv3_error_text());
        if (strncmp(dsv3_error_message(), FUZZ_SOURCE ":", strlen(FUZZ_SOURCE ":")) != 0)
            fuzz_fail("message does not name the input: %s", dsv3_error_message());
        dsv3_error_clear();
    }
    if (dsv3_alloc_current_bytes() != before)
        fuzz_fail("%zu counted bytes leaked", dsv3_alloc_current_bytes() - before);
    return 0;
}
