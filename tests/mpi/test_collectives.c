// Multi-rank test of comm/collectives_mpi: every operation on every named group of the layout
// given on the command line, for F32, F64 and I64, sum and max, out of place and in place,
// with MPI's own chunk limit and with tiny ones (several chunks, an uneven last one), against
// values this file computes itself.
//
// The members of each group are found here by decomposing stage indices into mesh coordinates
// [pp][dp_replicate][dp_shard][cp][tp] (tp fastest) and keeping those that differ from the
// caller only in the group's dimensions, in stage-index order; nothing of comm/layout or
// comm/topology is used for the expected values. Element values are small integers (exact in
// float sums over a few ranks) plus, for I64, a multiple of 2^33 that only 64 bits hold.
//
// Usage (every rank gets the same arguments; job rank 0 is the coordinator, the rest stages):
//   test_collectives [--pp N] [--dp-replicate N] [--dp-shard N] [--cp N] [--tp N]
// Exits 0 when every check passed on every rank.
#include <limits.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "common/comm/collectives_mpi.h"
#include "common/comm/protocol.h"
#include "common/comm/topology.h"

enum { DIM_PP, DIM_DP_REPLICATE, DIM_DP_SHARD, DIM_CP, DIM_TP, N_DIMS };

// Counts per rank: none, one, fewer than a chunk, several chunks with an uneven last one.
static const int64_t COUNTS[] = {0, 1, 5, 37, 1000};
enum { N_COUNTS = sizeof COUNTS / sizeof COUNTS[0] };
// Chunk limits: MPI's own, then tiny ones.
static const int64_t CHUNKS[] = {INT_MAX, 7, 3};
enum { N_CHUNKS = sizeof CHUNKS / sizeof CHUNKS[0] };
enum { MAX_MEMBERS = 64, MAX_COUNT = 1000 };
// Deadlines of this test's waits: generous, the machine is shared.
static const double TIMEOUT_S = 60.0;

// The dimensions that vary inside each named group.
static unsigned group_dims(Dsv3CommGroup g) {
    switch (g) {
    case DSV3_GROUP_TP: return 1u << DIM_TP;
    case DSV3_GROUP_CP: return 1u << DIM_CP;
    case DSV3_GROUP_FSDP: return 1u << DIM_DP_SHARD | 1u << DIM_CP;
    case DSV3_GROUP_DP_REPLICATE: return 1u << DIM_DP_REPLICATE;
    case DSV3_GROUP_DP: return 1u << DIM_DP_REPLICATE | 1u << DIM_DP_SHARD;
    case DSV3_GROUP_PP: return 1u << DIM_PP;
    }
    return 0;
}

static void coords_of(const int64_t *degree, int64_t index, int64_t *at) {
    for (int d = N_DIMS - 1; d >= 0; d--) {
        at[d] = index % degree[d];
        index /= degree[d];
    }
}

// The stage indices of `me`'s group g, in order; *my_rank is me's place among them.
static int members_of(const int64_t *degree, int64_t n_stage, int64_t me, Dsv3CommGroup g,
                      int64_t *members, int64_t *my_rank) {
    int64_t mine[N_DIMS], other[N_DIMS];
    coords_of(degree, me, mine);
    unsigned vary = group_dims(g);
    int n = 0;
    for (int64_t s = 0; s < n_stage; s++) {
        coords_of(degree, s, other);
        int same = 1;
        for (int d = 0; d < N_DIMS; d++)
            if (!(vary & 1u << d) && other[d] != mine[d]) same = 0;
        if (!same) continue;
        if (s == me) *my_rank = n;
        members[n++] = s;
    }
    return n;
}

// The value stage index s contributes at position i (of its send buffer).
static int64_t value(int64_t s, int64_t i, Dsv3ElemType type) {
    int64_t small = (s * 131 + i * 17) % 97 - 48;
    return type == DSV3_ELEM_I64 ? small + (s + 1) * ((int64_t)1 << 33) : small;
}

static void store(void *buf, int64_t i, Dsv3ElemType type, int64_t v) {
    if (type == DSV3_ELEM_F32) ((float *)buf)[i] = (float)v;
    if (type == DSV3_ELEM_F64) ((double *)buf)[i] = (double)v;
    if (type == DSV3_ELEM_I64) ((int64_t *)buf)[i] = v;
}

static int64_t load(const void *buf, int64_t i, Dsv3ElemType type) {
    if (type == DSV3_ELEM_F32) return (int64_t)((const float *)buf)[i];
    if (type == DSV3_ELEM_F64) return (int64_t)((const double *)buf)[i];
    return ((const int64_t *)buf)[i];
}

static int64_t reduce(const int64_t *members, int n, int64_t i, Dsv3ElemType type,
                      Dsv3ReduceOp op) {
    int64_t out = value(members[0], i, type);
    for (int k = 1; k < n; k++) {
        int64_t v = value(members[k], i, type);
        out = op == DSV3_REDUCE_SUM ? out + v : (v > out ? v : out);
    }
    return out;
}

typedef struct {
    int job_rank;
    int failures;
    const char *what; // the case under test, for messages
} Report;

static void expect_value(Report *rep, const char *where, int64_t i, int64_t got, int64_t want) {
    if (got == want) return;
    if (rep->failures < 20)
        fprintf(stderr, "[job rank %d] %s, %s: element %lld is %lld, expected %lld\n",
                rep->job_rank, rep->what, where, (long long)i, (long long)got, (long long)want);
    rep->failures++;
}

static void expect_ok(Report *rep, Dsv3Err err, const char *where) {
    if (err == DSV3_OK) return;
    fprintf(stderr, "[job rank %d] %s, %s failed: %s\n", rep->job_rank, rep->what, where,
            dsv3_error_text());
    rep->failures++;
}

// One group, type, reduction and count: all_reduce, all_gather (out of place, in place),
// reduce_scatter and shift, each against the values computed here.
static void check_case(Dsv3Collectives *c, Report *rep, Dsv3CommGroup g, const int64_t *members,
                       int n, int64_t rank, int64_t me, Dsv3ElemType type, Dsv3ReduceOp op,
                       int64_t count, void *a, void *b) {
    // all_reduce: buf (count) in place.
    for (int64_t i = 0; i < count; i++)
        store(a, i, type, value(me, i, type));
    expect_ok(rep, c->all_reduce(c, g, a, count, type, op), "all_reduce");
    for (int64_t i = 0; i < count; i++)
        expect_value(rep, "all_reduce", i, load(a, i, type), reduce(members, n, i, type, op));

    // all_gather: recv (n × count) from send (count), out of place then in place.
    for (int64_t i = 0; i < count; i++)
        store(b, i, type, value(me, i, type));
    expect_ok(rep, c->all_gather(c, g, a, b, count, type), "all_gather");
    for (int k = 0; k < n; k++)
        for (int64_t i = 0; i < count; i++)
            expect_value(rep, "all_gather", k * count + i, load(a, k * count + i, type),
                         value(members[k], i, type));
    memset(a, 0, (size_t)(n * count * dsv3_elem_size(type)));
    char *own = (char *)a + rank * count * dsv3_elem_size(type);
    for (int64_t i = 0; i < count; i++)
        store(own, i, type, value(me, i, type));
    expect_ok(rep, c->all_gather(c, g, a, own, count, type), "all_gather in place");
    for (int k = 0; k < n; k++)
        for (int64_t i = 0; i < count; i++)
            expect_value(rep, "all_gather in place", k * count + i, load(a, k * count + i, type),
                         value(members[k], i, type));

    // reduce_scatter: recv (count) = the reduction of block `rank` of every send (n × count).
    for (int64_t i = 0; i < n * count; i++)
        store(a, i, type, value(me, i, type));
    expect_ok(rep, c->reduce_scatter(c, g, b, a, count, type, op), "reduce_scatter");
    for (int64_t i = 0; i < count; i++)
        expect_value(rep, "reduce_scatter", i, load(b, i, type),
                     reduce(members, n, rank * count + i, type, op));

    // shift: recv (count) = the send of the previous member of the ring.
    for (int64_t i = 0; i < count; i++)
        store(a, i, type, value(me, i, type));
    expect_ok(rep, c->shift(c, g, b, a, count, type), "shift");
    for (int64_t i = 0; i < count; i++)
        expect_value(rep, "shift", i, load(b, i, type),
                     value(members[(rank + n - 1) % n], i, type));
}

// Every group, type, reduction and count with one chunk limit.
static void check_all(Dsv3CollectivesMpi *mpi, Report *rep, const int64_t *degree, int64_t n_stage,
                      int64_t me, int64_t chunk, void *a, void *b) {
    Dsv3Collectives *c = dsv3_collectives_mpi_interface(mpi);
    static const Dsv3ElemType types[] = {DSV3_ELEM_F32, DSV3_ELEM_F64, DSV3_ELEM_I64};
    static const char *const type_names[] = {"f32", "f64", "i64"};
    static const Dsv3ReduceOp ops[] = {DSV3_REDUCE_SUM, DSV3_REDUCE_MAX};
    static const char *const op_names[] = {"sum", "max"};
    for (int g = 0; g < DSV3_COMM_GROUP_COUNT; g++) {
        int64_t members[MAX_MEMBERS], rank = -1, size = 0, got_rank = -1;
        int n = members_of(degree, n_stage, me, (Dsv3CommGroup)g, members, &rank);
        char what[160];
        snprintf(what, sizeof what, "group %s (%d ranks), chunk %lld",
                 dsv3_comm_group_name((Dsv3CommGroup)g), n, (long long)chunk);
        rep->what = what;
        expect_ok(rep, c->group(c, (Dsv3CommGroup)g, &size, &got_rank), "group");
        expect_value(rep, "group size", 0, size, n);
        expect_value(rep, "group rank", 0, got_rank, rank);
        for (int t = 0; t < 3; t++)
            for (int o = 0; o < 2; o++)
                for (int k = 0; k < N_COUNTS; k++) {
                    snprintf(what, sizeof what,
                             "group %s (%d ranks), %s %s, count %lld, chunk %lld",
                             dsv3_comm_group_name((Dsv3CommGroup)g), n, type_names[t], op_names[o],
                             (long long)COUNTS[k], (long long)chunk);
                    check_case(c, rep, (Dsv3CommGroup)g, members, n, rank, me, types[t], ops[o],
                               COUNTS[k], a, b);
                }
    }
    // A reduce_scatter whose recv overlaps send is refused on every rank before any MPI call.
    rep->what = "overlapping reduce_scatter";
    int64_t size = 0, rank = 0;
    expect_ok(rep, c->group(c, DSV3_GROUP_DP, &size, &rank), "group");
    if (size > 1) {
        Dsv3Err err = c->reduce_scatter(c, DSV3_GROUP_DP, a, a, 4, DSV3_ELEM_F32, DSV3_REDUCE_SUM);
        expect_value(rep, "error code", 0, err, DSV3_ERR_USAGE);
        dsv3_error_clear();
    }
}

static int parse(int argc, char **argv, int64_t *degree) {
    static const char *const flags[N_DIMS] = {"--pp", "--dp-replicate", "--dp-shard", "--cp",
                                              "--tp"};
    for (int d = 0; d < N_DIMS; d++)
        degree[d] = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        int known = 0;
        for (int d = 0; d < N_DIMS; d++)
            if (strcmp(argv[i], flags[d]) == 0)
                degree[d] = strtoll(argv[i + 1], NULL, 10), known = 1;
        if (!known) return 0;
    }
    return argc % 2 == 1;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int job_rank = 0, job_size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &job_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &job_size);
    dsv3_log_init("test_collectives", job_rank);
    int64_t degree[N_DIMS];
    if (!parse(argc, argv, degree)) {
        if (job_rank == 0)
            fprintf(stderr, "usage: test_collectives [--pp N] [--dp-replicate N] …\n");
        MPI_Finalize();
        return 2;
    }
    int64_t n_stage = 1;
    for (int d = 0; d < N_DIMS; d++)
        n_stage *= degree[d];
    Report rep = {.job_rank = job_rank, .what = "set-up"};
    Dsv3Role role = job_rank == 0 ? DSV3_ROLE_COORDINATOR : DSV3_ROLE_STAGE;
    Dsv3ParallelDims dims = {degree[DIM_PP], degree[DIM_DP_REPLICATE], degree[DIM_DP_SHARD],
                             degree[DIM_CP], degree[DIM_TP],           1};
    Dsv3Topology topo;
    Dsv3Protocol *p = NULL;
    void *a = NULL, *b = NULL;
    if (n_stage + 1 != job_size || n_stage > MAX_MEMBERS) {
        if (job_rank == 0)
            fprintf(stderr, "test_collectives: the layout needs %lld ranks, %d were launched\n",
                    (long long)(n_stage + 1), job_size);
        MPI_Finalize();
        return 2;
    }
    expect_ok(&rep, dsv3_topology_create(MPI_COMM_WORLD, role, &dims, &topo), "topology");
    expect_ok(&rep, dsv3_protocol_create(&p, &topo, TIMEOUT_S, TIMEOUT_S), "protocol");
    size_t bytes = (size_t)(MAX_MEMBERS * MAX_COUNT) * sizeof(int64_t);
    expect_ok(&rep, dsv3_alloc(&a, bytes, "buffer a"), "alloc");
    expect_ok(&rep, dsv3_alloc(&b, bytes, "buffer b"), "alloc");
    if (role == DSV3_ROLE_STAGE && rep.failures == 0) {
        for (int k = 0; k < N_CHUNKS; k++) {
            Dsv3CollectivesMpi *mpi = NULL;
            rep.what = "create";
            expect_ok(
                &rep,
                dsv3_collectives_mpi_create_chunked(&mpi, &topo, dsv3_protocol_watch(p), CHUNKS[k]),
                "create");
            if (mpi) check_all(mpi, &rep, degree, n_stage, job_rank - 1, CHUNKS[k], a, b);
            dsv3_collectives_mpi_destroy(mpi);
        }
    }
    dsv3_free(a);
    dsv3_free(b);
    dsv3_protocol_destroy(p);
    dsv3_topology_destroy(&topo);
    int failures = rep.failures;
    MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (job_rank == 0)
        printf("test_collectives: %lld stage ranks, %d failure(s)\n", (long long)n_stage, failures);
    MPI_Finalize();
    return failures == 0 ? 0 : 1;
}
