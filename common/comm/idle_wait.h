// idle_wait: waiting for MPI requests without burning a core.
//
// OpenMPI's blocking calls spin on the CPU while they wait. A rank that waits long for others
// — the coordinator during a training step — would then take a core away from the ranks that
// compute, which on a laptop is half the machine. These waits poll with a short sleep instead.
#ifndef DSV3_COMM_IDLE_WAIT_H
#define DSV3_COMM_IDLE_WAIT_H

#include <mpi.h>

#include "common/core/error.h"

// Waits for all `count` requests like MPI_Waitall, sleeping between polls.
Dsv3Err dsv3_idle_waitall(int count, MPI_Request *requests);

#endif
