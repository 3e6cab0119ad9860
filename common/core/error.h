// error: error codes that carry a traceback up the call chain.
//
// A function that can fail returns Dsv3Err. The first failure records a message with its
// file:line:function (DSV3_CHECK for a caller's mistake, DSV3_ASSERT for our own invariant,
// DSV3_RAISE for anything else); every DSV3_CALL that passes the code upwards appends one
// frame. Only a role's main() ends the job; it prints dsv3_error_text() and calls MPI_Abort.
//
// The record is per thread. This module knows nothing of MPI (see comm/mpi_check.h).
#ifndef DSV3_CORE_ERROR_H
#define DSV3_CORE_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" { // the CUDA backend (C++) raises errors too
#endif

typedef enum {
    DSV3_OK = 0,
    DSV3_ERR_USAGE,    // the caller (or the user's input) asked for something impossible
    DSV3_ERR_CONFIG,   // a config file, key or value is wrong
    DSV3_ERR_INTERNAL, // one of our own invariants broke: a bug
    DSV3_ERR_IO,       // a file could not be read or written
    DSV3_ERR_MEMORY,   // an allocation failed
    DSV3_ERR_MPI,      // an MPI call failed
    DSV3_ERR_TIMEOUT,  // a peer did not answer in time
    DSV3_ERR_BACKEND,  // CUDA, cuBLAS, NCCL, BLAS or HDF5 reported an error
    DSV3_ERR_LAUNCH,   // the processes launched do not match the config's layout
    DSV3_ERR_NUMERIC,  // training produced NaN or infinite values
} Dsv3Err;

// Name of a code, e.g. "config error".
const char *dsv3_error_name(Dsv3Err code);

// Records the first failure (clearing any earlier record) and returns `code`.
Dsv3Err dsv3_error_raise(Dsv3Err code, const char *file, int line, const char *func,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));

// Appends one traceback frame to the current record and returns `code`.
Dsv3Err dsv3_error_trace(Dsv3Err code, const char *file, int line, const char *func);

// The whole record: "<name>: <message>\n  at file:line in func\n  ...". Empty when clear.
const char *dsv3_error_text(void);

// Only the message of the current record, without the traceback.
const char *dsv3_error_message(void);

// Forgets the current record (after a caller handled the error).
void dsv3_error_clear(void);

#ifdef __cplusplus
}
#endif

// Propagates a failure of `expr` to the caller, adding this frame.
#define DSV3_CALL(expr)                                                                            \
    do {                                                                                           \
        Dsv3Err dsv3_call_err_ = (expr);                                                           \
        if (dsv3_call_err_ != DSV3_OK)                                                             \
            return dsv3_error_trace(dsv3_call_err_, __FILE__, __LINE__, __func__);                 \
    } while (0)

// Like DSV3_CALL, but jumps to `label` (for clean-up) with `err` set instead of returning.
#define DSV3_CALL_GOTO(err, label, expr)                                                           \
    do {                                                                                           \
        (err) = (expr);                                                                            \
        if ((err) != DSV3_OK) {                                                                    \
            dsv3_error_trace((err), __FILE__, __LINE__, __func__);                                 \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

// Fails with `code` and a message that tells the caller how to fix their input.
#define DSV3_CHECK(cond, code, ...)                                                                \
    do {                                                                                           \
        if (!(cond)) return dsv3_error_raise((code), __FILE__, __LINE__, __func__, __VA_ARGS__);   \
    } while (0)

// Like DSV3_CHECK, but jumps to `label` with `err` set instead of returning.
#define DSV3_CHECK_GOTO(err, label, cond, code, ...)                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            (err) = dsv3_error_raise((code), __FILE__, __LINE__, __func__, __VA_ARGS__);           \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

// Fails unconditionally with `code` and a message.
#define DSV3_RAISE(code, ...)                                                                      \
    return dsv3_error_raise((code), __FILE__, __LINE__, __func__, __VA_ARGS__)

// Guards one of our own invariants; a failure is a bug in dsv3, not in the input.
#define DSV3_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return dsv3_error_raise(DSV3_ERR_INTERNAL, __FILE__, __LINE__, __func__,               \
                                    "assertion '%s' failed", #cond);                               \
    } while (0)

#endif
