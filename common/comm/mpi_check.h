// mpi_check: turns a failed MPI call into a dsv3 error.
//
// DSV3_MPI_CALL(MPI_Comm_split(...)) raises DSV3_ERR_MPI with the call's text and
// MPI_Error_string's description when the call does not return MPI_SUCCESS.
//
// An MPI call only returns a failure code when the error handler of the object it works on
// (for calls on no object: MPI_COMM_WORLD's) is MPI_ERRORS_RETURN. The default,
// MPI_ERRORS_ARE_FATAL, ends the job inside the call, before any code here runs. So a module
// that wants its MPI errors reported this way duplicates its communicator and sets
// MPI_ERRORS_RETURN on the duplicate (communicators split from it inherit the handler), as
// comm/topology.c does. It does not help against a peer that died: OpenMPI 4.1 tears the job
// down (or, across joined jobs, blocks) instead of returning an error.
#ifndef DSV3_COMM_MPI_CHECK_H
#define DSV3_COMM_MPI_CHECK_H

#include <mpi.h>

#include "common/core/error.h"

// Records a failed MPI call (`rc` ≠ MPI_SUCCESS) and returns DSV3_ERR_MPI.
static inline Dsv3Err dsv3_mpi_raise(int rc, const char *call, const char *file, int line,
                                     const char *func) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS) length = 0;
    text[length < MPI_MAX_ERROR_STRING ? length : MPI_MAX_ERROR_STRING - 1] = '\0';
    return dsv3_error_raise(DSV3_ERR_MPI, file, line, func, "%s failed: %s (MPI error code %d)",
                            call, length ? text : "no description", rc);
}

// Returns DSV3_ERR_MPI from the enclosing function when `expr` (an MPI call) fails.
#define DSV3_MPI_CALL(expr)                                                                        \
    do {                                                                                           \
        int dsv3_mpi_rc_ = (expr);                                                                 \
        if (dsv3_mpi_rc_ != MPI_SUCCESS)                                                           \
            return dsv3_mpi_raise(dsv3_mpi_rc_, #expr, __FILE__, __LINE__, __func__);              \
    } while (0)

// Like DSV3_MPI_CALL, but jumps to `label` (for clean-up) with `err` set instead of returning.
#define DSV3_MPI_CALL_GOTO(err, label, expr)                                                       \
    do {                                                                                           \
        int dsv3_mpi_rc_ = (expr);                                                                 \
        if (dsv3_mpi_rc_ != MPI_SUCCESS) {                                                         \
            (err) = dsv3_mpi_raise(dsv3_mpi_rc_, #expr, __FILE__, __LINE__, __func__);             \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

#endif
