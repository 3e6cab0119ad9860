// job_comm: the job communicator, the one communicator every later one is built from.
//
// An MPMD launch (`mpiexec -n 1 dsv3-coordinator : -n S dsv3-stage [: -n E dsv3-expert]`) puts
// every role in one MPI_COMM_WORLD, and the job communicator is a duplicate of it.
//
// Expert servers can also run as their own mpiexec job and join a running training job
// through an MPI port, with an ompi-server that both jobs name (`mpiexec --ompi-server
// file:<uri> …`). The training job (coordinator and stages) opens a port, publishes it under a
// service name and accepts; the expert job looks the name up and connects; both merge the
// intercommunicator with the training side low. The merged communicator then has the rank
// order of the MPMD launch (coordinator 0, stages 1 … S, expert servers S+1 … S+E), so nothing
// after start-up can tell the two launches apart.
//
// A peer that never comes ends in a clear error within the timeout, never a hang. The expert
// side polls MPI_Lookup_name and returns DSV3_ERR_TIMEOUT on every rank when the name does not
// appear in time. MPI_Comm_accept and MPI_Comm_connect cannot time out in OpenMPI 4.1, so a
// watchdog thread guards them: if the call has not returned by the deadline, rank 0 of the job
// prints one line (service, timeout, how to start the other side) and every rank of the job
// ends with exit code DSV3_JOB_COMM_EXIT_TIMEOUT, after which mpiexec tears the job down.
// (A cleaner end, unblocking MPI_Comm_accept by connecting to one's own port from the watchdog,
// hangs in OpenMPI 4.1.4.) The watchdog makes no MPI call unless MPI was initialised with
// MPI_THREAD_MULTIPLE; then the training side's watchdog also unpublishes the service name,
// because ompi-server keeps the names of jobs that ended and expert servers started later would
// otherwise find the dead port and wait for their own watchdog. MPI_THREAD_FUNNELED is enough
// otherwise.
//
// Every *job returned has the error handler MPI_COMM_WORLD had on entry (normally
// MPI_ERRORS_ARE_FATAL), whichever way it was built.
//
// After a join the rest of start-up (the config, the role communicators) is collective over both
// jobs, and a peer job lost there would block it: dsv3_job_comm_watch_join guards it with the same
// kind of watchdog until dsv3_job_comm_joined_ready. This module does not build the role
// communicators (comm/topology.h) and does not watch the link after start-up (training's waits
// have deadlines of their own, comm/watch.h).
//
// Fault injection for tests: with DSV3_JOB_COMM_TEST_EXIT set, an expert server exits right
// after it joined.
#ifndef DSV3_COMM_JOB_COMM_H
#define DSV3_COMM_JOB_COMM_H

#include <mpi.h>

#include "common/core/error.h"

// Exit code of a process whose join timed out inside MPI_Comm_accept / MPI_Comm_connect.
enum { DSV3_JOB_COMM_EXIT_TIMEOUT = 3 };

#define DSV3_JOB_COMM_TEST_EXIT "DSV3_JOB_COMM_TEST_EXIT"

// Collective over MPI_COMM_WORLD (an MPMD launch): *job = a duplicate of MPI_COMM_WORLD.
Dsv3Err dsv3_job_comm_world(MPI_Comm *job);

// Collective over the training job's MPI_COMM_WORLD (coordinator and stage ranks): opens a
// port, publishes it as `service`, waits at most `timeout_s` seconds for an expert job to
// connect, then unpublishes the name and closes the port. *job = the merged communicator, this
// job's ranks first, in MPI_COMM_WORLD order. A failure to publish is DSV3_ERR_MPI on every
// rank; no expert job by the deadline ends the process (see above).
Dsv3Err dsv3_job_comm_accept(const char *service, double timeout_s, MPI_Comm *job);

// Collective over the expert job's MPI_COMM_WORLD: looks `service` up until it appears, at most
// `timeout_s` seconds (then DSV3_ERR_TIMEOUT on every rank), and connects. *job = the merged
// communicator, the training job's ranks first, then this job's in MPI_COMM_WORLD order.
Dsv3Err dsv3_job_comm_connect(const char *service, double timeout_s, MPI_Comm *job);

// Not collective: ends this process (rank 0 of MPI_COMM_WORLD first saying that `peer`, e.g.
// "the expert server job", stopped answering) unless dsv3_job_comm_joined_ready is called within
// timeout_s seconds. Call right after a join; at most one watch at a time.
Dsv3Err dsv3_job_comm_watch_join(double timeout_s, const char *peer);
void dsv3_job_comm_joined_ready(void);

#endif
