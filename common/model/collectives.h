// collectives: the communication the model and its services need, on named groups of ranks.
//
// common/model has no MPI: whatever moves data between ranks is reached through this
// interface. common/comm implements it over the job's MPI communicators (comm/collectives_mpi.h:
// every count in 64 bits, split into chunks MPI's int counts can hold, every wait bounded by a
// deadline); dsv3_collectives_local below is the implementation for a rank that is alone in
// every group (one process, or a test), where each operation is a copy or nothing.
//
// Every operation is collective on its group: all ranks of the group call it, in the same
// order, with the same count, type and operation. Buffers are in the memory space of the
// caller's kernel context (host memory on the CPU backends). An error is returned on the
// calling rank only; the others may then wait until their deadline, so a caller that fails
// ends the job (DESIGN.md §11).
#ifndef DSV3_MODEL_COLLECTIVES_H
#define DSV3_MODEL_COLLECTIVES_H

#include <stdint.h>

#include "common/core/error.h"

// The groups of a stage rank (comm/topology.h names the communicators behind them).
typedef enum {
    DSV3_GROUP_TP,           // tensor parallel: [tp]
    DSV3_GROUP_CP,           // context parallel: [cp]
    DSV3_GROUP_FSDP,         // the FSDP shard group: [dp_shard][cp]
    DSV3_GROUP_DP_REPLICATE, // HSDP replicas: [dp_replicate]
    DSV3_GROUP_DP,           // every data-parallel rank: [dp_replicate][dp_shard]
    DSV3_GROUP_PP,           // the pipeline stages: [pp]
} Dsv3CommGroup;

enum { DSV3_COMM_GROUP_COUNT = 6 };

typedef enum { DSV3_ELEM_F32, DSV3_ELEM_F64, DSV3_ELEM_I64 } Dsv3ElemType;

typedef enum { DSV3_REDUCE_SUM, DSV3_REDUCE_MAX } Dsv3ReduceOp;

typedef struct Dsv3Collectives Dsv3Collectives;
struct Dsv3Collectives {
    // *size = the ranks of group g, *rank = the caller's place in it. Not collective.
    Dsv3Err (*group)(const Dsv3Collectives *self, Dsv3CommGroup g, int64_t *size, int64_t *rank);
    // Collective on g: recv (size × count) = every rank's send (count), in rank order. send may
    // be recv + rank × count (in place).
    Dsv3Err (*all_gather)(Dsv3Collectives *self, Dsv3CommGroup g, void *recv, const void *send,
                          int64_t count, Dsv3ElemType type);
    // Collective on g: recv (count) = the reduction over the ranks of block `rank` of their
    // send (size × count).
    Dsv3Err (*reduce_scatter)(Dsv3Collectives *self, Dsv3CommGroup g, void *recv, const void *send,
                              int64_t count, Dsv3ElemType type, Dsv3ReduceOp op);
    // Collective on g: buf (count) = the reduction of every rank's buf, in place.
    Dsv3Err (*all_reduce)(Dsv3Collectives *self, Dsv3CommGroup g, void *buf, int64_t count,
                          Dsv3ElemType type, Dsv3ReduceOp op);
    // Collective on g, one step of a ring: recv (count) = the send (count) of the previous rank
    // (rank − 1, mod size), while this rank's send goes to the next. send and recv may not
    // overlap.
    Dsv3Err (*shift)(Dsv3Collectives *self, Dsv3CommGroup g, void *recv, const void *send,
                     int64_t count, Dsv3ElemType type);
};

// Bytes of one element of `type`.
int64_t dsv3_elem_size(Dsv3ElemType type);

// "tp", "cp", "fsdp", "dp_replicate", "dp": for messages.
const char *dsv3_comm_group_name(Dsv3CommGroup g);

// Every group holds the caller alone: all_gather, reduce_scatter and shift copy send to recv
// (unless in place), all_reduce does nothing. Host memory only.
extern Dsv3Collectives dsv3_collectives_local;

#endif
