// roles: which program runs on which rank of a job, agreed by every rank.
//
// Each executable knows its own role (dsv3-coordinator, dsv3-stage, dsv3-expert); MPI_APPNUM is
// not used, because `srun --multi-prog` and jobs joined through a port do not set it. The roles
// are gathered over the job communicator and checked against the launch order of
// comm/layout.h. It builds no communicators (comm/topology.h does).
#ifndef DSV3_COMM_ROLES_H
#define DSV3_COMM_ROLES_H

#include <mpi.h>
#include <stdint.h>

#include "common/core/error.h"
#include "layout.h"

// Collective over `job`: every rank passes its own role; on return every rank knows the number
// of stage ranks (`*n_stage`) and expert servers (`*n_expert`) of the job. A launch in the wrong
// order (no coordinator or several, coordinator not at job rank 0, no stage, a stage after an
// expert server) is DSV3_ERR_MPI with a message naming what runs where and how to launch. Every
// rank returns the same code and message, so the caller may let just one rank print it.
Dsv3Err dsv3_roles_gather(MPI_Comm job, Dsv3Role mine, int64_t *n_stage, int64_t *n_expert);

#endif
