// fuzz_support: what every fuzz harness (and its corpus replay in the unit suite) needs: a
// failure that stops the run loudly, so that libFuzzer keeps the input, and writing an input
// to a file for readers that take paths.
#ifndef DSV3_TESTS_FUZZ_SUPPORT_H
#define DSV3_TESTS_FUZZ_SUPPORT_H

#include <stddef.h>

// Prints "<program>: <message>" to stderr and aborts.
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

// Writes `size` bytes to `path` (replacing it), or fails.
void fuzz_write_file(const char *path, const void *data, size_t size);

#endif
