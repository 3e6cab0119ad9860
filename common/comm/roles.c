// roles: gathers and checks every rank's role; see roles.h.
#include "roles.h"

#include "common/core/alloc.h"
#include "mpi_check.h"

Dsv3Err dsv3_roles_gather(MPI_Comm job, Dsv3Role mine, int64_t *n_stage, int64_t *n_expert) {
    DSV3_CHECK(job != MPI_COMM_NULL, DSV3_ERR_USAGE, "dsv3_roles_gather: the job comm is null");
    int size = 0;
    DSV3_MPI_CALL(MPI_Comm_size(job, &size));
    int *roles = NULL;
    DSV3_CALL(dsv3_calloc((void **)&roles, (size_t)size, sizeof *roles, "roles of the job ranks"));
    int role = (int)mine;
    Dsv3Err err = DSV3_OK;
    DSV3_MPI_CALL_GOTO(err, done, MPI_Allgather(&role, 1, MPI_INT, roles, 1, MPI_INT, job));
    // Every rank checks the same gathered list, so all of them agree without another exchange.
    DSV3_CALL_GOTO(err, done, dsv3_layout_check_roles(roles, size, n_stage, n_expert));
done:
    dsv3_free(roles);
    return err;
}
