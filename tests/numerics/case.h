// case: what every numerics test does around its ops — read the arrays of a case written by a
// reference script (tests/reference/), allocate the buffers the ops write into, compare the
// results with the float64 expectations, print one line per check and count the failures.
//
// A case directory (CASE_DIR) holds its arrays at the top or in one folder per sub-case
// (CASE_DIR/rmsnorm/x.npy). Every array read and every buffer made belongs to the current
// sub-case and is freed by dsv3_case_end. It neither runs the reference scripts (run_case.sh
// does) nor knows any op.
//
// A check line has one of two layouts, chosen per test:
//   table:   "<impl> <sub-case> <what> rel err 1.234e-05  ok"    (impl padded to 9 columns)
//   verdict: "ok   <what> rel error 1.234e-05 (tolerance 1e-04)"
// The columns are padded to name_width / what_width; FAIL replaces ok above the tolerance.
#ifndef DSV3_TESTS_NUMERICS_CASE_H
#define DSV3_TESTS_NUMERICS_CASE_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/arena.h"
#include "common/core/error.h"
#include "tests/numerics/npy.h"

typedef enum { DSV3_CASE_LINE_TABLE, DSV3_CASE_LINE_VERDICT } Dsv3CaseLine;

// Set up by dsv3_case_init; the fields below `what_width` change with each sub-case.
typedef struct {
    const char *root;           // CASE_DIR
    double tolerance;           // relative-error bound of dsv3_case_check and _check_scalar
    Dsv3CaseLine line;          // layout of the check lines
    int name_width, what_width; // columns of the sub-case name and of the check's name
    const char *impl;           // first column of table lines ("reference", "fast")
    const char *name;           // current sub-case: a folder of root, or NULL for root itself
    int failures;               // checks above their tolerance, and sub-cases that failed
    Dsv3Arena arena;            // the current sub-case's arrays and buffers
} Dsv3Case;

// A case reading from root, checking against `tolerance`, printing lines of layout `line` with
// columns of name_width (table lines only) and what_width characters. Allocates nothing.
void dsv3_case_init(Dsv3Case *c, const char *root, double tolerance, Dsv3CaseLine line,
                    int name_width, int what_width);

// Starts sub-case `name` (NULL: the arrays at the top of root) run by `impl` (table lines).
void dsv3_case_begin(Dsv3Case *c, const char *impl, const char *name);

// Ends the sub-case: frees its arrays and buffers. An error (a missing file, an op refusing
// its input) counts as a failure and is printed after "<impl> <sub-case> ERROR"; it is
// cleared, and returned.
Dsv3Err dsv3_case_end(Dsv3Case *c, Dsv3Err err);

// Runs one sub-case: begin, `call` (an expression giving the test's Dsv3Err), end.
#define DSV3_CASE_RUN(c, impl, name, call)                                                         \
    (dsv3_case_begin((c), (impl), (name)), (void)dsv3_case_end((c), (call)))

// Reads <root>/<sub-case>/<array>.npy as float32 (from f32 or f64), float64 (from any type)
// or int32 (from i32 or i64); *count (when not NULL) gets its element count.
Dsv3Err dsv3_case_read_f32(Dsv3Case *c, float **out, int64_t *count, const char *array);
Dsv3Err dsv3_case_read_f64(Dsv3Case *c, double **out, int64_t *count, const char *array);
Dsv3Err dsv3_case_read_i32(Dsv3Case *c, int32_t **out, int64_t *count, const char *array);

// Reads <root>/<sub-case>/<array>.npy as it is stored (type and shape); out->data belongs to
// the sub-case, do not free it.
Dsv3Err dsv3_case_read(Dsv3Case *c, Dsv3Npy *out, const char *array);

// *out = `count` elements of `size` bytes: a copy of `init` when given, else zeros.
Dsv3Err dsv3_case_buffer(Dsv3Case *c, void **out, int64_t count, size_t size, const void *init);
#define DSV3_CASE_BUFFER(c, ptr, count, init)                                                      \
    dsv3_case_buffer((c), (void **)&(ptr), (count), sizeof *(ptr), (init))

// Compares got (count) with the float64 array `expected` by ‖got − expected‖ / ‖expected‖;
// prints one line and counts a failure above the case's tolerance (or `tolerance`). A count
// that differs from the array's is an error, not a failed check.
Dsv3Err dsv3_case_check(Dsv3Case *c, const char *what, const float *got, int64_t count,
                        const char *expected);
Dsv3Err dsv3_case_check_within(Dsv3Case *c, const char *what, const float *got, int64_t count,
                               const char *expected, double tolerance);

// One number: |got − expected| / |expected| (|got| when expected is 0).
void dsv3_case_check_scalar(Dsv3Case *c, const char *what, double got, double expected);

// Integers must equal the array `expected` exactly; the line says how many differ.
Dsv3Err dsv3_case_check_exact(Dsv3Case *c, const char *what, const int64_t *got, int64_t count,
                              const char *expected);

// Prints the line of a relative error the test computed itself, and counts a failure above
// `tolerance` (NaN fails).
void dsv3_case_report(Dsv3Case *c, const char *what, double error, double tolerance);

#endif
