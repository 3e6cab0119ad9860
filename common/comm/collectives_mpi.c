// collectives_mpi: chunked non-blocking collectives on the duplicated group communicators.
//
// Legend: P ranks in the group, n elements of the chunk, count elements per rank's block.
#include "collectives_mpi.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "common/comm/mpi_check.h"

enum { CONTEXT_CAPACITY = 96 };

typedef struct {
    MPI_Comm comm; // duplicate of the topology's communicator
    int size, rank;
    int *peers;     // (size − 1) job ranks of the other members, for the watch
    double seconds; // waited in operations on the group since the last take
} Group;

struct Dsv3CollectivesMpi {
    Dsv3Collectives base; // first: the interface's functions get &base
    Dsv3Watch *watch;
    int64_t chunk; // elements per MPI call
    Group groups[DSV3_COMM_GROUP_COUNT];
    char context[CONTEXT_CAPACITY];
};

static Dsv3CollectivesMpi *of(Dsv3Collectives *self) { return (Dsv3CollectivesMpi *)self; }

static MPI_Comm topology_comm(const Dsv3Topology *topo, Dsv3CommGroup g) {
    switch (g) {
    case DSV3_GROUP_TP: return topo->tp;
    case DSV3_GROUP_CP: return topo->cp;
    case DSV3_GROUP_FSDP: return topo->dp_shard_cp;
    case DSV3_GROUP_DP_REPLICATE: return topo->dp_replicate;
    case DSV3_GROUP_DP: return topo->dp;
    case DSV3_GROUP_PP: return topo->pp;
    }
    return MPI_COMM_NULL;
}

// Duplicates the group's communicator and lists the job ranks of its other members.
static Dsv3Err group_open(Group *grp, MPI_Comm from, MPI_Comm job) {
    DSV3_MPI_CALL(MPI_Comm_dup(from, &grp->comm));
    DSV3_MPI_CALL(MPI_Comm_size(grp->comm, &grp->size));
    DSV3_MPI_CALL(MPI_Comm_rank(grp->comm, &grp->rank));
    int *mine = NULL, *theirs = NULL;
    size_t n = (size_t)grp->size;
    DSV3_CALL(dsv3_calloc((void **)&mine, n, sizeof *mine, "group ranks"));
    Dsv3Err err = DSV3_OK;
    DSV3_CALL_GOTO(err, done, dsv3_calloc((void **)&theirs, n, sizeof *theirs, "job ranks"));
    DSV3_CALL_GOTO(err, done, dsv3_calloc((void **)&grp->peers, n, sizeof *grp->peers, "peers"));
    MPI_Group group_of_comm = MPI_GROUP_NULL, group_of_job = MPI_GROUP_NULL;
    DSV3_MPI_CALL_GOTO(err, groups, MPI_Comm_group(grp->comm, &group_of_comm));
    DSV3_MPI_CALL_GOTO(err, groups, MPI_Comm_group(job, &group_of_job));
    for (int r = 0; r < grp->size; r++)
        mine[r] = r;
    DSV3_MPI_CALL_GOTO(
        err, groups,
        MPI_Group_translate_ranks(group_of_comm, grp->size, mine, group_of_job, theirs));
    for (int r = 0, k = 0; r < grp->size; r++)
        if (r != grp->rank) grp->peers[k++] = theirs[r];
groups:
    if (group_of_comm != MPI_GROUP_NULL) MPI_Group_free(&group_of_comm);
    if (group_of_job != MPI_GROUP_NULL) MPI_Group_free(&group_of_job);
done:
    dsv3_free(mine);
    dsv3_free(theirs);
    return err;
}

static Dsv3Err mpi_group(const Dsv3Collectives *self, Dsv3CommGroup g, int64_t *size,
                         int64_t *rank) {
    DSV3_CHECK((unsigned)g < DSV3_COMM_GROUP_COUNT, DSV3_ERR_USAGE, "collectives: group %d unknown",
               (int)g);
    const Group *grp = &((const Dsv3CollectivesMpi *)self)->groups[g];
    *size = grp->size;
    *rank = grp->rank;
    return DSV3_OK;
}

static Dsv3Err mpi_type(Dsv3ElemType type, MPI_Datatype *out) {
    switch (type) {
    case DSV3_ELEM_F32: *out = MPI_FLOAT; return DSV3_OK;
    case DSV3_ELEM_F64: *out = MPI_DOUBLE; return DSV3_OK;
    case DSV3_ELEM_I64: *out = MPI_INT64_T; return DSV3_OK;
    }
    DSV3_RAISE(DSV3_ERR_USAGE, "collectives: element type %d unknown", (int)type);
}

static Dsv3Err mpi_op(Dsv3ReduceOp op, MPI_Op *out) {
    switch (op) {
    case DSV3_REDUCE_SUM: *out = MPI_SUM; return DSV3_OK;
    case DSV3_REDUCE_MAX: *out = MPI_MAX; return DSV3_OK;
    }
    DSV3_RAISE(DSV3_ERR_USAGE, "collectives: reduction %d unknown", (int)op);
}

// The checks every operation shares; *grp is the group, *t its MPI type, *bytes its size.
static Dsv3Err prepare(Dsv3CollectivesMpi *c, Dsv3CommGroup g, int64_t count, Dsv3ElemType type,
                       Group **grp, MPI_Datatype *t, int64_t *bytes) {
    DSV3_CHECK((unsigned)g < DSV3_COMM_GROUP_COUNT, DSV3_ERR_USAGE, "collectives: group %d unknown",
               (int)g);
    DSV3_CHECK(count >= 0, DSV3_ERR_USAGE, "collectives: count %lld on group %s", (long long)count,
               dsv3_comm_group_name(g));
    DSV3_CALL(mpi_type(type, t));
    *grp = &c->groups[g];
    *bytes = dsv3_elem_size(type);
    return DSV3_OK;
}

// Waits for `n` requests of an operation on group g.
static Dsv3Err wait(Dsv3CollectivesMpi *c, Dsv3CommGroup g, int n, MPI_Request *requests,
                    const char *operation) {
    Group *grp = &c->groups[g];
    double start = dsv3_log_seconds();
    Dsv3Err err = dsv3_watch_wait(
        c->watch, n, requests, grp->peers, grp->size - 1, "waits in the %s over %s (%d ranks)%s%s",
        operation, dsv3_comm_group_name(g), grp->size, c->context[0] ? " of " : "", c->context);
    grp->seconds += dsv3_log_seconds() - start;
    return err;
}

// Whether [a, a + a_bytes) and [b, b + b_bytes) overlap.
static int overlap(const void *a, int64_t a_bytes, const void *b, int64_t b_bytes) {
    const char *x = a, *y = b;
    return a_bytes > 0 && b_bytes > 0 && x < y + b_bytes && y < x + a_bytes;
}

static Dsv3Err mpi_all_reduce(Dsv3Collectives *self, Dsv3CommGroup g, void *buf, int64_t count,
                              Dsv3ElemType type, Dsv3ReduceOp op) {
    Dsv3CollectivesMpi *c = of(self);
    Group *grp = NULL;
    MPI_Datatype t = MPI_DATATYPE_NULL;
    MPI_Op mop = MPI_OP_NULL;
    int64_t bytes = 0;
    DSV3_CALL(prepare(c, g, count, type, &grp, &t, &bytes));
    DSV3_CALL(mpi_op(op, &mop));
    if (grp->size == 1) return DSV3_OK;
    for (int64_t at = 0; at < count; at += c->chunk) {
        int n = (int)(count - at < c->chunk ? count - at : c->chunk);
        MPI_Request req;
        DSV3_MPI_CALL(
            MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + at * bytes, n, t, mop, grp->comm, &req));
        DSV3_CALL(wait(c, g, 1, &req, "all-reduce"));
    }
    return DSV3_OK;
}

static Dsv3Err mpi_all_gather(Dsv3Collectives *self, Dsv3CommGroup g, void *recv, const void *send,
                              int64_t count, Dsv3ElemType type) {
    Dsv3CollectivesMpi *c = of(self);
    Group *grp = NULL;
    MPI_Datatype t = MPI_DATATYPE_NULL;
    int64_t bytes = 0;
    DSV3_CALL(prepare(c, g, count, type, &grp, &t, &bytes));
    int64_t block = count * bytes; // one rank's block of recv, in bytes
    char *out = recv;
    const char *in = send;
    int in_place = in == out + grp->rank * block;
    DSV3_CHECK(in_place || !overlap(in, block, out, grp->size * block), DSV3_ERR_USAGE,
               "all_gather on %s: send overlaps recv without being this rank's block of it",
               dsv3_comm_group_name(g));
    if (grp->size == 1) {
        if (!in_place && count > 0) memcpy(out, in, (size_t)block);
        return DSV3_OK;
    }
    for (int64_t at = 0; at < count; at += c->chunk) {
        int n = (int)(count - at < c->chunk ? count - at : c->chunk);
        // (n) elements of one rank, its block a whole `count` apart from the next rank's.
        MPI_Datatype piece = MPI_DATATYPE_NULL, strided = MPI_DATATYPE_NULL;
        DSV3_MPI_CALL(MPI_Type_contiguous(n, t, &piece));
        int rc = MPI_Type_create_resized(piece, 0, (MPI_Aint)block, &strided);
        MPI_Type_free(&piece);
        DSV3_MPI_CALL(rc);
        rc = MPI_Type_commit(&strided);
        MPI_Request req = MPI_REQUEST_NULL;
        if (rc == MPI_SUCCESS)
            rc = MPI_Iallgather(in_place ? MPI_IN_PLACE : in + at * bytes, n, t, out + at * bytes,
                                1, strided, grp->comm, &req);
        // Freeing a type in use is allowed: MPI keeps it until the operation completes.
        MPI_Type_free(&strided);
        DSV3_MPI_CALL(rc);
        DSV3_CALL(wait(c, g, 1, &req, "all-gather"));
    }
    return DSV3_OK;
}

static Dsv3Err mpi_reduce_scatter(Dsv3Collectives *self, Dsv3CommGroup g, void *recv,
                                  const void *send, int64_t count, Dsv3ElemType type,
                                  Dsv3ReduceOp op) {
    Dsv3CollectivesMpi *c = of(self);
    Group *grp = NULL;
    MPI_Datatype t = MPI_DATATYPE_NULL;
    MPI_Op mop = MPI_OP_NULL;
    int64_t bytes = 0;
    DSV3_CALL(prepare(c, g, count, type, &grp, &t, &bytes));
    DSV3_CALL(mpi_op(op, &mop));
    int64_t block = count * bytes;
    const char *in = send;
    char *out = recv;
    if (grp->size == 1) {
        if (out != in && count > 0) memmove(out, in, (size_t)block);
        return DSV3_OK;
    }
    DSV3_CHECK(!overlap(in, grp->size * block, out, block), DSV3_ERR_USAGE,
               "reduce_scatter on %s: recv overlaps send; use separate buffers",
               dsv3_comm_group_name(g));
    if (count == 0) return DSV3_OK;
    if (count <= c->chunk / grp->size) { // the whole send buffer fits one call's counts
        MPI_Request req;
        DSV3_MPI_CALL(MPI_Ireduce_scatter_block(in, out, (int)count, t, mop, grp->comm, &req));
        return wait(c, g, 1, &req, "reduce-scatter");
    }
    MPI_Request *reqs = NULL; // (P) one reduce to each rank per chunk
    DSV3_CALL(dsv3_alloc((void **)&reqs, (size_t)grp->size * sizeof *reqs, "reduce requests"));
    Dsv3Err err = DSV3_OK;
    for (int64_t at = 0; at < count && err == DSV3_OK; at += c->chunk) {
        int n = (int)(count - at < c->chunk ? count - at : c->chunk);
        for (int r = 0; r < grp->size; r++)
            DSV3_MPI_CALL_GOTO(err, done,
                               MPI_Ireduce(in + (r * count + at) * bytes,
                                           r == grp->rank ? out + at * bytes : NULL, n, t, mop, r,
                                           grp->comm, &reqs[r]));
        err = wait(c, g, grp->size, reqs, "reduce-scatter");
    }
done:
    dsv3_free(reqs);
    return err;
}

// Tag of a ring step's messages: the group's communicator carries nothing else point to point.
enum { SHIFT_TAG = 1 };

static Dsv3Err mpi_shift(Dsv3Collectives *self, Dsv3CommGroup g, void *recv, const void *send,
                         int64_t count, Dsv3ElemType type) {
    Dsv3CollectivesMpi *c = of(self);
    Group *grp = NULL;
    MPI_Datatype t = MPI_DATATYPE_NULL;
    int64_t bytes = 0;
    DSV3_CALL(prepare(c, g, count, type, &grp, &t, &bytes));
    DSV3_CHECK(!overlap(send, count * bytes, recv, count * bytes), DSV3_ERR_USAGE,
               "shift on %s: send and recv overlap", dsv3_comm_group_name(g));
    if (grp->size == 1) {
        if (count > 0) memcpy(recv, send, (size_t)(count * bytes));
        return DSV3_OK;
    }
    const int next = (grp->rank + 1) % grp->size,
              previous = (grp->rank + grp->size - 1) % grp->size;
    for (int64_t at = 0; at < count; at += c->chunk) {
        int n = (int)(count - at < c->chunk ? count - at : c->chunk);
        MPI_Request reqs[2];
        DSV3_MPI_CALL(
            MPI_Irecv((char *)recv + at * bytes, n, t, previous, SHIFT_TAG, grp->comm, &reqs[0]));
        DSV3_MPI_CALL(
            MPI_Isend((const char *)send + at * bytes, n, t, next, SHIFT_TAG, grp->comm, &reqs[1]));
        DSV3_CALL(wait(c, g, 2, reqs, "ring shift"));
    }
    return DSV3_OK;
}

Dsv3Err dsv3_collectives_mpi_create_chunked(Dsv3CollectivesMpi **out, const Dsv3Topology *topo,
                                            Dsv3Watch *watch, int64_t chunk_elems) {
    DSV3_CHECK(out && topo && watch, DSV3_ERR_USAGE,
               "dsv3_collectives_mpi_create: needs a topology and a watch");
    DSV3_CHECK(topo->role == DSV3_ROLE_STAGE, DSV3_ERR_USAGE,
               "the model's collectives run on stage ranks only");
    DSV3_CHECK(chunk_elems >= 1 && chunk_elems <= INT_MAX, DSV3_ERR_USAGE,
               "collectives: chunk limit %lld is outside [1, INT_MAX]", (long long)chunk_elems);
    *out = NULL;
    Dsv3CollectivesMpi *c = NULL;
    DSV3_CALL(dsv3_calloc((void **)&c, 1, sizeof *c, "MPI collectives"));
    c->base =
        (Dsv3Collectives){mpi_group, mpi_all_gather, mpi_reduce_scatter, mpi_all_reduce, mpi_shift};
    c->watch = watch;
    c->chunk = chunk_elems;
    for (int g = 0; g < DSV3_COMM_GROUP_COUNT; g++)
        c->groups[g].comm = MPI_COMM_NULL;
    Dsv3Err err = DSV3_OK;
    for (int g = 0; g < DSV3_COMM_GROUP_COUNT; g++) {
        MPI_Comm from = topology_comm(topo, (Dsv3CommGroup)g);
        DSV3_CHECK_GOTO(err, fail, from != MPI_COMM_NULL, DSV3_ERR_INTERNAL,
                        "collectives: the topology has no %s communicator",
                        dsv3_comm_group_name((Dsv3CommGroup)g));
        DSV3_CALL_GOTO(err, fail, group_open(&c->groups[g], from, topo->job));
    }
    *out = c;
    return DSV3_OK;
fail:
    dsv3_collectives_mpi_destroy(c);
    return err;
}

Dsv3Err dsv3_collectives_mpi_create(Dsv3CollectivesMpi **out, const Dsv3Topology *topo,
                                    Dsv3Watch *watch) {
    return dsv3_collectives_mpi_create_chunked(out, topo, watch, INT_MAX);
}

void dsv3_collectives_mpi_destroy(Dsv3CollectivesMpi *c) {
    if (!c) return;
    for (int g = 0; g < DSV3_COMM_GROUP_COUNT; g++) {
        // Shutdown cannot report a failed free; its code is not checked.
        if (c->groups[g].comm != MPI_COMM_NULL) MPI_Comm_free(&c->groups[g].comm);
        dsv3_free(c->groups[g].peers);
    }
    dsv3_free(c);
}

Dsv3Collectives *dsv3_collectives_mpi_interface(Dsv3CollectivesMpi *c) { return &c->base; }

void dsv3_collectives_mpi_set_context(Dsv3CollectivesMpi *c, const char *context) {
    snprintf(c->context, sizeof c->context, "%s", context ? context : "");
}

MPI_Comm dsv3_collectives_mpi_comm(const Dsv3CollectivesMpi *c, Dsv3CommGroup g) {
    return (unsigned)g < DSV3_COMM_GROUP_COUNT ? c->groups[g].comm : MPI_COMM_NULL;
}

Dsv3Err dsv3_collectives_mpi_wait(Dsv3CollectivesMpi *c, Dsv3CommGroup g, int n,
                                  MPI_Request *requests, const char *operation) {
    DSV3_CHECK((unsigned)g < DSV3_COMM_GROUP_COUNT, DSV3_ERR_USAGE, "collectives: group %d unknown",
               (int)g);
    return wait(c, g, n, requests, operation);
}

double dsv3_collectives_mpi_take_seconds(Dsv3CollectivesMpi *c, Dsv3CommGroup g) {
    if ((unsigned)g >= DSV3_COMM_GROUP_COUNT) return 0;
    double seconds = c->groups[g].seconds;
    c->groups[g].seconds = 0;
    return seconds;
}
