// collectives_mpi: the model's collectives (model/collectives.h) over a stage rank's MPI
// communicators.
//
// The named groups map to the topology's communicators (comm/topology.h): DSV3_GROUP_TP → tp,
// DSV3_GROUP_CP → cp, DSV3_GROUP_FSDP → dp_shard_cp, DSV3_GROUP_DP_REPLICATE → dp_replicate,
// DSV3_GROUP_DP → dp; each is duplicated for this subsystem, so its traffic never meets
// another's. Ranks within a group are in mesh order, as in the topology.
//
// Counts are 64-bit; MPI's are int. Every operation is split into chunks of at most INT_MAX
// elements per MPI call, so no count above 2^31 − 1 ever reaches MPI:
//   all_reduce       one MPI_Iallreduce per chunk, in place
//   all_gather       one MPI_Iallgather per chunk of every rank's block; the chunk lands in
//                    each rank's block of recv through a receive type whose extent is a whole
//                    block (MPI_Type_create_resized), so nothing is copied
//   reduce_scatter   one MPI_Ireduce_scatter_block when size × count fits one call; otherwise,
//                    per chunk, one MPI_Ireduce to each rank of its block (the send blocks of a
//                    chunk are not contiguous, and a reduction over a derived type is not
//                    portable), which moves the same bytes without a temporary copy
// Each call is collective on its group, non-blocking, and waited for under the protocol's
// watch (comm/watch.h): a deadline, pings answered while waiting, and DSV3_ERR_TIMEOUT naming
// a silent rank. A group of one rank makes no MPI call.
//
// In place: all_reduce always; all_gather when send is recv + rank × count. reduce_scatter's
// recv must not overlap send (DSV3_ERR_USAGE). Host memory only (Debian's OpenMPI is not
// CUDA-aware); device buffers are staged by the caller.
#ifndef DSV3_COMM_COLLECTIVES_MPI_H
#define DSV3_COMM_COLLECTIVES_MPI_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/comm/topology.h"
#include "common/comm/watch.h"
#include "common/model/collectives.h"

typedef struct Dsv3CollectivesMpi Dsv3CollectivesMpi;

// Collective on the stage ranks (each duplicates its five group communicators; other roles must
// not call it). `watch` (the protocol's, dsv3_protocol_watch) must outlive the result.
Dsv3Err dsv3_collectives_mpi_create(Dsv3CollectivesMpi **out, const Dsv3Topology *topo,
                                    Dsv3Watch *watch);

// As dsv3_collectives_mpi_create, with at most `chunk_elems` (≥ 1, ≤ INT_MAX) elements per MPI
// call: tests use tiny limits to exercise the chunking. Every rank must pass the same limit.
Dsv3Err dsv3_collectives_mpi_create_chunked(Dsv3CollectivesMpi **out, const Dsv3Topology *topo,
                                            Dsv3Watch *watch, int64_t chunk_elems);

// Collective on the stage ranks: frees the communicators. NULL is a no-op.
void dsv3_collectives_mpi_destroy(Dsv3CollectivesMpi *c);

// The interface the model calls.
Dsv3Collectives *dsv3_collectives_mpi_interface(Dsv3CollectivesMpi *c);

// The duplicated communicator of group g, for a service that starts non-blocking operations of
// its own on it (the FSDP store, comm/param_store_fsdp.h). Every rank must start them in the
// same order; this module's own operations complete before they return, so they never
// interleave with them as long as both run on one thread.
MPI_Comm dsv3_collectives_mpi_comm(const Dsv3CollectivesMpi *c, Dsv3CommGroup g);

// Waits for `n` requests of `operation` ("all-gather") on group g under the watch, as this
// module's own operations wait (deadline, pings answered, the silent rank named).
Dsv3Err dsv3_collectives_mpi_wait(Dsv3CollectivesMpi *c, Dsv3CommGroup g, int n,
                                  MPI_Request *requests, const char *operation);

// Not collective: the seconds spent waiting in operations on group g (this module's and those
// waited through dsv3_collectives_mpi_wait) since the last call; the count restarts at 0.
double dsv3_collectives_mpi_take_seconds(Dsv3CollectivesMpi *c, Dsv3CommGroup g);

// Not collective: what the next operations are for, in the answer to pings and in timeout
// messages ("the gradients of step 7"); NULL or "" clears it.
void dsv3_collectives_mpi_set_context(Dsv3CollectivesMpi *c, const char *context);

#endif
