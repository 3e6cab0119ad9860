// Multi-rank test of comm/topology (and comm/roles, comm/job_comm): builds the topology of the
// layout given on the command line and checks, on every rank, that every communicator holds
// exactly the right job ranks in the right order.
//
// The expected members are computed here by plain nested loops over the mesh
// [pp][dp_replicate][dp_shard][cp][tp] and the expert servers [pp][ep], counting job ranks as
// an MPMD launch places them (coordinator 0, then the stages, then the expert servers); this
// file does not use comm/layout's arithmetic, so a mistake there cannot hide itself.
//
// Usage (every rank gets the same arguments):
//   test_topology [--pp N] [--dp-replicate N] [--dp-shard N|-1] [--cp N] [--tp N] [--ep N]
//                 [--roles LETTERS]
//                 [--join accept|connect --service NAME --timeout SECONDS]
// Each rank's role follows from its job rank: 0 coordinator, then stages, and the last pp × ep
// ranks (when ep > 1) expert servers. --roles gives one letter per job rank instead (c, s, e;
// any other letter is a role that does not exist), to test wrong launches. --join accept makes this
// job the training side of a joined job (rank 0 coordinator, the rest stages), --join connect the
// expert side (all expert servers). Exits 0 when every check passed on every rank; on a topology
// error, job rank 0 prints the error and every rank exits 1.
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/log.h"
#include "common/comm/job_comm.h"
#include "common/comm/topology.h"

// Mesh dimensions, slowest first.
enum { DIM_PP, DIM_DP_REPLICATE, DIM_DP_SHARD, DIM_CP, DIM_TP, N_DIMS };

typedef enum { JOIN_NONE, JOIN_ACCEPT, JOIN_CONNECT } JoinMode;

// The role a --roles letter other than c, s, e gives: a program that is no dsv3 role.
enum { FOREIGN_ROLE = 7 };

typedef struct {
    int64_t degree[N_DIMS]; // dp_shard may be -1
    int64_t ep;
    const char *roles; // NULL: roles from the job rank
    JoinMode join;
    const char *service;
    double timeout_s;
} Options;

// What the test expects of the job, found by counting.
typedef struct {
    int64_t size[N_DIMS]; // dp_shard filled
    int64_t ep, n_stage, n_expert;
    int job_rank, job_size;
    Dsv3Role role;
    int64_t at[N_DIMS]; // my mesh coordinates (stage ranks), else -1
    int64_t stage_index, expert_pp, expert_ep, expert_index;
} Expect;

static int usage(int rank, const char *what) {
    if (rank == 0)
        fprintf(stderr,
                "test_topology: %s\nusage: test_topology [--pp N] [--dp-replicate N] "
                "[--dp-shard N|-1] [--cp N] [--tp N] [--ep N] [--roles LETTERS] "
                "[--join accept|connect --service NAME --timeout SECONDS]\n",
                what);
    return 2;
}

static int parse_options(int argc, char **argv, int rank, Options *opt) {
    *opt = (Options){.degree = {1, 1, 1, 1, 1}, .ep = 1, .timeout_s = 30.0};
    static const char *const flags[N_DIMS] = {"--pp", "--dp-replicate", "--dp-shard", "--cp",
                                              "--tp"};
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) return usage(rank, "every option takes a value");
        const char *flag = argv[i], *value = argv[++i];
        int known = 0;
        for (int d = 0; d < N_DIMS; d++)
            if (strcmp(flag, flags[d]) == 0) {
                opt->degree[d] = strtoll(value, NULL, 10);
                known = 1;
            }
        if (known) continue;
        if (strcmp(flag, "--ep") == 0)
            opt->ep = strtoll(value, NULL, 10);
        else if (strcmp(flag, "--roles") == 0)
            opt->roles = value;
        else if (strcmp(flag, "--service") == 0)
            opt->service = value;
        else if (strcmp(flag, "--timeout") == 0)
            opt->timeout_s = strtod(value, NULL);
        else if (strcmp(flag, "--join") == 0 && strcmp(value, "accept") == 0)
            opt->join = JOIN_ACCEPT;
        else if (strcmp(flag, "--join") == 0 && strcmp(value, "connect") == 0)
            opt->join = JOIN_CONNECT;
        else
            return usage(rank, "unknown option or value");
    }
    if (opt->join != JOIN_NONE && !opt->service) return usage(rank, "--join needs --service");
    return 0;
}

// This rank's role, as the launch under test intends it.
static Dsv3Role role_of(const Options *opt, int job_rank, int job_size) {
    if (opt->join == JOIN_CONNECT) return DSV3_ROLE_EXPERT;
    if (opt->join == JOIN_ACCEPT) return job_rank == 0 ? DSV3_ROLE_COORDINATOR : DSV3_ROLE_STAGE;
    if (opt->roles) {
        char letter = job_rank < (int)strlen(opt->roles) ? opt->roles[job_rank] : 's';
        return letter == 'c'   ? DSV3_ROLE_COORDINATOR
               : letter == 's' ? DSV3_ROLE_STAGE
               : letter == 'e' ? DSV3_ROLE_EXPERT
                               : (Dsv3Role)FOREIGN_ROLE;
    }
    int64_t n_expert = opt->ep > 1 ? opt->degree[DIM_PP] * opt->ep : 0;
    if (job_rank == 0) return DSV3_ROLE_COORDINATOR;
    return job_rank < job_size - n_expert ? DSV3_ROLE_STAGE : DSV3_ROLE_EXPERT;
}

// Fills `e` by walking the mesh in order and counting job ranks.
static void expect_fill(const Options *opt, int job_rank, int job_size, Dsv3Role role, Expect *e) {
    *e = (Expect){.ep = opt->ep,
                  .job_rank = job_rank,
                  .job_size = job_size,
                  .role = role,
                  .stage_index = -1,
                  .expert_pp = -1,
                  .expert_ep = -1,
                  .expert_index = -1};
    e->n_expert = opt->ep > 1 ? opt->degree[DIM_PP] * opt->ep : 0;
    e->n_stage = job_size - 1 - e->n_expert;
    int64_t others = 1;
    for (int d = 0; d < N_DIMS; d++) {
        e->size[d] = opt->degree[d];
        if (d != DIM_DP_SHARD) others *= opt->degree[d];
    }
    if (e->size[DIM_DP_SHARD] == -1) e->size[DIM_DP_SHARD] = e->n_stage / others;
    for (int d = 0; d < N_DIMS; d++)
        e->at[d] = -1;

    int rank = 1;
    for (int64_t p = 0; p < e->size[DIM_PP]; p++)
        for (int64_t r = 0; r < e->size[DIM_DP_REPLICATE]; r++)
            for (int64_t d = 0; d < e->size[DIM_DP_SHARD]; d++)
                for (int64_t c = 0; c < e->size[DIM_CP]; c++)
                    for (int64_t t = 0; t < e->size[DIM_TP]; t++, rank++)
                        if (rank == job_rank && role == DSV3_ROLE_STAGE) {
                            const int64_t at[N_DIMS] = {p, r, d, c, t};
                            memcpy(e->at, at, sizeof at);
                            e->stage_index = rank - 1;
                        }
    if (e->n_expert == 0) return;
    for (int64_t p = 0; p < e->size[DIM_PP]; p++)
        for (int64_t k = 0; k < e->ep; k++, rank++)
            if (rank == job_rank && role == DSV3_ROLE_EXPERT) {
                e->expert_pp = p;
                e->expert_ep = k;
                e->expert_index = rank - 1 - e->n_stage;
            }
}

// Job ranks of the stage ranks whose coordinates equal mine in every dimension not in `vary`
// (a bit set of dimensions), in mesh order. `mine` == NULL matches every stage rank of
// pipeline stage `pp_stage` (for moe).
static int expect_stage_members(const Expect *e, const int64_t *mine, unsigned vary,
                                int64_t pp_stage, int *out) {
    int n = 0, rank = 1;
    for (int64_t p = 0; p < e->size[DIM_PP]; p++)
        for (int64_t r = 0; r < e->size[DIM_DP_REPLICATE]; r++)
            for (int64_t d = 0; d < e->size[DIM_DP_SHARD]; d++)
                for (int64_t c = 0; c < e->size[DIM_CP]; c++)
                    for (int64_t t = 0; t < e->size[DIM_TP]; t++, rank++) {
                        const int64_t at[N_DIMS] = {p, r, d, c, t};
                        int same = 1;
                        for (int k = 0; k < N_DIMS; k++)
                            if (mine ? !(vary & (1u << k)) && at[k] != mine[k]
                                     : k == DIM_PP && at[k] != pp_stage)
                                same = 0;
                        if (same) out[n++] = rank;
                    }
    return n;
}

// Job ranks of the expert servers of pipeline stage `pp_stage`, in ep order.
static int expect_expert_members(const Expect *e, int64_t pp_stage, int *out) {
    int n = 0, rank = (int)(1 + e->n_stage);
    for (int64_t p = 0; p < e->size[DIM_PP]; p++)
        for (int64_t k = 0; k < e->ep; k++, rank++)
            if (p == pp_stage) out[n++] = rank;
    return n;
}

static void print_ranks(char *buf, size_t size, const int *ranks, int n) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && used < size; i++) {
        int w = snprintf(buf + used, size - used, "%s%d", i ? " " : "", ranks[i]);
        if (w < 0) return;
        used += (size_t)w;
    }
}

// Checks that `comm` holds exactly job ranks `want[0..n)` in that order (n == 0: that it is
// MPI_COMM_NULL), and that an all-reduce over it works. Returns the number of failures.
static int check_comm(const char *name, MPI_Comm comm, MPI_Comm job, int job_rank, const int *want,
                      int n) {
    if (n == 0) {
        if (comm == MPI_COMM_NULL) return 0;
        fprintf(stderr, "[job rank %d] %s: expected MPI_COMM_NULL\n", job_rank, name);
        return 1;
    }
    if (comm == MPI_COMM_NULL) {
        fprintf(stderr, "[job rank %d] %s: is MPI_COMM_NULL, expected %d members\n", job_rank, name,
                n);
        return 1;
    }
    int size = 0, rank = -1;
    MPI_Comm_size(comm, &size);
    MPI_Comm_rank(comm, &rank);
    int got[size], index[size];
    MPI_Group group, job_group;
    MPI_Comm_group(comm, &group);
    MPI_Comm_group(job, &job_group);
    for (int i = 0; i < size; i++)
        index[i] = i;
    MPI_Group_translate_ranks(group, size, index, job_group, got);
    MPI_Group_free(&group);
    MPI_Group_free(&job_group);
    int ok = size == n && memcmp(got, want, sizeof got) == 0 && got[rank] == job_rank;
    // The communicator works: the sum of its members' job ranks is what the list says.
    long long sum = job_rank, want_sum = 0;
    for (int i = 0; i < n; i++)
        want_sum += want[i];
    MPI_Allreduce(MPI_IN_PLACE, &sum, 1, MPI_LONG_LONG, MPI_SUM, comm);
    ok = ok && sum == want_sum;
    if (ok) return 0;
    char got_text[512], want_text[512];
    print_ranks(got_text, sizeof got_text, got, size);
    print_ranks(want_text, sizeof want_text, want, n);
    fprintf(stderr,
            "[job rank %d] %s: holds job ranks {%s} (I am its rank %d, sum %lld), "
            "expected {%s}\n",
            job_rank, name, got_text, rank, sum, want_text);
    return 1;
}

#define CHECK_FIELD(got, want)                                                                     \
    do {                                                                                           \
        if ((int64_t)(got) != (int64_t)(want)) {                                                   \
            fprintf(stderr, "[job rank %d] %s is %lld, expected %lld\n", e->job_rank, #got,        \
                    (long long)(got), (long long)(want));                                          \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

// Checks the scalar fields of `topo` against `e`.
static int check_fields(const Dsv3Topology *topo, const Expect *e) {
    int failures = 0;
    CHECK_FIELD(topo->role, e->role);
    CHECK_FIELD(topo->job_rank, e->job_rank);
    CHECK_FIELD(topo->job_size, e->job_size);
    CHECK_FIELD(topo->n_stage, e->n_stage);
    CHECK_FIELD(topo->n_expert, e->n_expert);
    CHECK_FIELD(topo->dims.pp, e->size[DIM_PP]);
    CHECK_FIELD(topo->dims.dp_replicate, e->size[DIM_DP_REPLICATE]);
    CHECK_FIELD(topo->dims.dp_shard, e->size[DIM_DP_SHARD]);
    CHECK_FIELD(topo->dims.cp, e->size[DIM_CP]);
    CHECK_FIELD(topo->dims.tp, e->size[DIM_TP]);
    CHECK_FIELD(topo->dims.ep, e->ep);
    CHECK_FIELD(topo->stage_index, e->stage_index);
    CHECK_FIELD(topo->coord.pp, e->at[DIM_PP]);
    CHECK_FIELD(topo->coord.dp_replicate, e->at[DIM_DP_REPLICATE]);
    CHECK_FIELD(topo->coord.dp_shard, e->at[DIM_DP_SHARD]);
    CHECK_FIELD(topo->coord.cp, e->at[DIM_CP]);
    CHECK_FIELD(topo->coord.tp, e->at[DIM_TP]);
    CHECK_FIELD(topo->expert_index, e->expert_index);
    CHECK_FIELD(topo->ep_rank, e->expert_ep);
    int64_t pp_stage = e->role == DSV3_ROLE_STAGE    ? e->at[DIM_PP]
                       : e->role == DSV3_ROLE_EXPERT ? e->expert_pp
                                                     : -1;
    CHECK_FIELD(topo->pp_stage, pp_stage);
    return failures;
}

// Checks every communicator of `topo` against the members counted from `e`.
static int check_comms(const Dsv3Topology *topo, const Expect *e, int *want) {
    int failures = 0, n = 0;
    int is_stage = e->role == DSV3_ROLE_STAGE, is_expert = e->role == DSV3_ROLE_EXPERT;
    static const struct {
        const char *name;
        size_t offset;
        unsigned vary;
    } stage_comms[] = {
        {"pp", offsetof(Dsv3Topology, pp), 1u << DIM_PP},
        {"dp_replicate", offsetof(Dsv3Topology, dp_replicate), 1u << DIM_DP_REPLICATE},
        {"dp_shard", offsetof(Dsv3Topology, dp_shard), 1u << DIM_DP_SHARD},
        {"dp", offsetof(Dsv3Topology, dp), 1u << DIM_DP_REPLICATE | 1u << DIM_DP_SHARD},
        {"dp_shard_cp", offsetof(Dsv3Topology, dp_shard_cp), 1u << DIM_DP_SHARD | 1u << DIM_CP},
        {"cp", offsetof(Dsv3Topology, cp), 1u << DIM_CP},
        {"tp", offsetof(Dsv3Topology, tp), 1u << DIM_TP},
        {"stage", offsetof(Dsv3Topology, stage),
         1u << DIM_DP_REPLICATE | 1u << DIM_DP_SHARD | 1u << DIM_CP | 1u << DIM_TP},
    };
    for (size_t i = 0; i < sizeof stage_comms / sizeof stage_comms[0]; i++) {
        MPI_Comm comm = *(const MPI_Comm *)((const char *)topo + stage_comms[i].offset);
        n = is_stage ? expect_stage_members(e, e->at, stage_comms[i].vary, -1, want) : 0;
        failures += check_comm(stage_comms[i].name, comm, topo->job, e->job_rank, want, n);
    }

    n = is_expert ? expect_expert_members(e, e->expert_pp, want) : 0;
    failures += check_comm("expert_group", topo->expert_group, topo->job, e->job_rank, want, n);

    n = 0;
    int64_t pp_stage = is_stage ? e->at[DIM_PP] : e->expert_pp;
    if (e->n_expert > 0 && (is_stage || is_expert)) {
        n = expect_stage_members(e, NULL, 0, pp_stage, want);
        n += expect_expert_members(e, pp_stage, want + n);
    }
    failures += check_comm("moe", topo->moe, topo->job, e->job_rank, want, n);

    int64_t first = is_stage ? 1 : is_expert ? 1 + e->n_stage : 0;
    int64_t count = is_stage ? e->n_stage : is_expert ? e->n_expert : 1;
    for (int64_t i = 0; i < count; i++)
        want[i] = (int)(first + i);
    failures += check_comm("role_comm", topo->role_comm, topo->job, e->job_rank, want, (int)count);

    for (int i = 0; i < e->job_size; i++)
        want[i] = i;
    failures += check_comm("job", topo->job, topo->job, e->job_rank, want, e->job_size);
    return failures;
}

// Builds the job communicator the options ask for; a failure has the same message everywhere.
static Dsv3Err make_job_comm(const Options *opt, MPI_Comm *job) {
    switch (opt->join) {
    case JOIN_ACCEPT: DSV3_CALL(dsv3_job_comm_accept(opt->service, opt->timeout_s, job)); break;
    case JOIN_CONNECT: DSV3_CALL(dsv3_job_comm_connect(opt->service, opt->timeout_s, job)); break;
    case JOIN_NONE: DSV3_CALL(dsv3_job_comm_world(job)); break;
    }
    return DSV3_OK;
}

int main(int argc, char **argv) {
    int provided = 0;
    // MULTIPLE lets the join watchdog unpublish the service name when it fires (job_comm.h).
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    int world_rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    dsv3_log_init("test_topology", world_rank);
    Options opt;
    int status = parse_options(argc, argv, world_rank, &opt);
    if (status != 0) {
        MPI_Finalize();
        return status;
    }

    MPI_Comm job = MPI_COMM_NULL;
    if (make_job_comm(&opt, &job) != DSV3_OK) {
        if (world_rank == 0) fprintf(stderr, "test_topology: %s", dsv3_error_text());
        MPI_Finalize();
        return 1;
    }
    int job_rank = 0, job_size = 0;
    MPI_Comm_rank(job, &job_rank);
    MPI_Comm_size(job, &job_size);
    Dsv3Role role = role_of(&opt, job_rank, job_size);

    Dsv3ParallelDims dims = {opt.degree[DIM_PP],       opt.degree[DIM_DP_REPLICATE],
                             opt.degree[DIM_DP_SHARD], opt.degree[DIM_CP],
                             opt.degree[DIM_TP],       opt.ep};
    Dsv3Topology topo;
    if (dsv3_topology_create(job, role, &dims, &topo) != DSV3_OK) {
        // Every rank failed alike; one of them says why.
        if (job_rank == 0) fprintf(stderr, "test_topology: %s", dsv3_error_text());
        MPI_Comm_free(&job);
        MPI_Finalize();
        return 1;
    }

    Expect e;
    expect_fill(&opt, job_rank, job_size, role, &e);
    int *want = malloc((size_t)job_size * sizeof *want);
    int failures = check_fields(&topo, &e) + check_comms(&topo, &e, want);
    free(want);
    MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, topo.job);
    if (job_rank == 0 || (opt.join == JOIN_CONNECT && world_rank == 0))
        printf("test_topology: %s (%s side): pp %lld × dp_replicate %lld × dp_shard %lld × cp "
               "%lld × tp %lld, ep %lld; %d ranks; %d failed checks\n",
               failures ? "FAILED" : "ok",
               opt.join == JOIN_CONNECT  ? "expert"
               : opt.join == JOIN_ACCEPT ? "training"
                                         : "mpmd",
               (long long)topo.dims.pp, (long long)topo.dims.dp_replicate,
               (long long)topo.dims.dp_shard, (long long)topo.dims.cp, (long long)topo.dims.tp,
               (long long)topo.dims.ep, job_size, failures);
    dsv3_topology_destroy(&topo);
    MPI_Comm_free(&job);
    MPI_Finalize();
    return failures ? 1 : 0;
}
