// Multi-rank test of comm/param_store_fsdp: a small model whose shapes need padding (250
// vocabulary rows, 6 experts) on the dp_replicate × dp_shard layout of the command line, under
// each reshard policy, driven in the model's order (a layer's experts acquired inside it) for
// two micro-batches:
//   - every acquired group holds, bit for bit, the full values of the local store (which keeps
//     every group whole, initialised with the same seed);
//   - after finish, every real row of every shard's gradient is the sum over all data-parallel
//     ranks and both micro-batches of what each rank wrote into the full gradient (small
//     integers: exact in float), and the padding rows are zero;
//   - the values of the shards are untouched;
//   - the same with a split backward (the model's ZBVZeroBubble order: both micro-batches'
//     forwards, their I, then their W): each layer group's I writes all but 1 of each element
//     and keeps the buffer, which the next I adds to; its W finds it (without the values: a W
//     gathers nothing), adds the 1 and reduces.
// Usage (job rank 0 is the coordinator, the rest stage ranks):
//   test_param_store_fsdp [--dp-replicate N] [--dp-shard N]
// Exits 0 when every check passed on every rank.
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/log.h"
#include "common/comm/param_store_fsdp.h"
#include "common/comm/plan.h"
#include "common/comm/protocol.h"
#include "common/comm/topology.h"

enum { SEED = 11, MICRO_BATCHES = 2 };
// Deadlines of this test's waits: generous, the machine is shared.
static const double TIMEOUT_S = 60.0;

typedef struct {
    int job_rank, failures;
    const char *what;
} Report;

static void expect(Report *rep, int ok, const char *check, long long at) {
    if (ok) return;
    if (rep->failures++ < 10)
        fprintf(stderr, "rank %d: %s: %s fails at %lld\n", rep->job_rank, rep->what, check, at);
}

static void expect_ok(Report *rep, Dsv3Err err, const char *call) {
    if (err == DSV3_OK) return;
    rep->failures++;
    fprintf(stderr, "rank %d: %s: %s: %s\n", rep->job_rank, rep->what, call, dsv3_error_text());
    dsv3_error_clear();
}

// What stage rank `s` writes at element i of group g's full gradient in micro-batch m.
static float grad_value(int64_t s, int g, int64_t i, int m) {
    return (float)((i * 7 + g * 3 + s * 5 + m) % 11 - 5);
}

static Dsv3ModelArgs small_model(void) {
    Dsv3ModelArgs a;
    dsv3_model_args_flavor("debugmodel", &a);
    a.dim = 64, a.n_layers = 3, a.n_dense_layers = 1, a.vocab_size = 250, a.n_heads = 2;
    a.inter_dim = 128, a.moe_inter_dim = 32, a.num_experts = 6, a.top_k = 2;
    a.kv_lora_rank = 16, a.qk_nope_head_dim = 16, a.qk_rope_head_dim = 8, a.v_head_dim = 16;
    return a;
}

typedef struct {
    Dsv3ParamStore *fsdp, *local;
    int64_t me; // stage index
    int micro_batch;
    Report *rep;
} Run;

// Acquires group g for `use`, checking its values (a W gets none); for backward and W its
// gradient buffer holds `kept` (a previous I's, not reduced yet) or zeros.
static void acquire_holding(Run *r, int g, Dsv3ParamUse use, const float *kept) {
    Dsv3ParamStore *st = r->fsdp;
    expect_ok(r->rep, st->ops->acquire(st, g, use), "acquire");
    const Dsv3ParamGroup *mine = &st->groups[g], *whole = &r->local->groups[g];
    if (use == DSV3_PARAM_USE_WEIGHT_GRAD)
        expect(r->rep, mine->data == NULL, "no values bound for a W", g);
    else
        expect(r->rep,
               mine->data &&
                   memcmp(mine->data, whole->data, (size_t)whole->numel * sizeof(float)) == 0,
               "gathered values", g);
    if (use == DSV3_PARAM_USE_FORWARD) return;
    for (int64_t i = 0; i < mine->numel; i++)
        expect(r->rep, mine->grad[i] == (kept ? kept[i] : 0.0f), "gradient buffer", i);
}

static void acquire(Run *r, int g, Dsv3ParamUse use) { acquire_holding(r, g, use, NULL); }

static void backward(Run *r, int g) {
    Dsv3ParamStore *st = r->fsdp;
    acquire(r, g, DSV3_PARAM_USE_BACKWARD);
    Dsv3ParamGroup *group = &st->groups[g];
    for (int64_t i = 0; i < group->numel; i++)
        group->grad[i] = grad_value(r->me, g, i, r->micro_batch);
}

static void reduce_release(Run *r, int g) {
    Dsv3ParamStore *st = r->fsdp;
    expect_ok(r->rep, st->ops->reduce(st, g), "reduce");
    expect_ok(r->rep, st->ops->release(st, g, DSV3_PARAM_USE_BACKWARD), "release");
}

// One micro-batch's forward through the groups (experts inside their layer).
static void forward(Run *r) {
    Dsv3ParamStore *st = r->fsdp;
    int n = st->n_groups;
    for (int g = 0; g < n; g++) {
        int experts = g + 1 < n && st->groups[g + 1].kind == DSV3_GROUP_EXPERTS;
        acquire(r, g, DSV3_PARAM_USE_FORWARD);
        if (experts) {
            acquire(r, g + 1, DSV3_PARAM_USE_FORWARD);
            expect_ok(r->rep, st->ops->release(st, g + 1, DSV3_PARAM_USE_FORWARD), "release");
        }
        expect_ok(r->rep, st->ops->release(st, g, DSV3_PARAM_USE_FORWARD), "release");
        g += experts;
    }
}

// One micro-batch in the model's order: forward, then backward in reverse (a layer, then its
// experts inside it).
static void micro_batch(Run *r) {
    Dsv3ParamStore *st = r->fsdp;
    int n = st->n_groups;
    forward(r);
    for (int g = n - 1; g >= 0; g--) {
        int layer = st->groups[g].kind == DSV3_GROUP_EXPERTS ? g - 1 : g;
        backward(r, layer);
        if (layer != g) {
            backward(r, g);
            reduce_release(r, g);
        }
        reduce_release(r, layer);
        g = layer;
    }
}

// A split backward's I of micro-batch r->micro_batch: layer groups get all but 1 of their
// elements' values added to what an earlier I kept (`kept`, per group, updated) and are kept;
// the other groups run whole.
static void backward_input(Run *r, float **kept) {
    Dsv3ParamStore *st = r->fsdp;
    for (int g = st->n_groups - 1; g >= 0; g--) {
        Dsv3ParamGroup *group = &st->groups[g];
        if (group->kind != DSV3_GROUP_LAYER) {
            backward(r, g);
            reduce_release(r, g);
            continue;
        }
        acquire_holding(r, g, DSV3_PARAM_USE_BACKWARD, kept[g]);
        if (!kept[g]) kept[g] = calloc((size_t)group->numel, sizeof(float));
        for (int64_t i = 0; i < group->numel; i++) {
            kept[g][i] += grad_value(r->me, g, i, r->micro_batch) - 1.0f;
            group->grad[i] = kept[g][i];
        }
        expect_ok(r->rep, st->ops->keep(st, g), "keep");
        expect_ok(r->rep, st->ops->release(st, g, DSV3_PARAM_USE_BACKWARD), "release");
    }
}

// A W: each layer group's kept buffer (or, after an earlier W reduced it, a zeroed one) gets a
// micro-batch's 1 in every element, and is reduced. It gathers no parameters: the store's
// bytes grow by the reduce-scatters alone.
static void backward_weight(Run *r, float **kept) {
    Dsv3ParamStore *st = r->fsdp;
    int64_t before = dsv3_param_store_fsdp_times(st).bytes, reduced = 0;
    for (int g = st->n_groups - 1; g >= 0; g--) {
        Dsv3ParamGroup *group = &st->groups[g];
        if (group->kind != DSV3_GROUP_LAYER) continue;
        acquire_holding(r, g, DSV3_PARAM_USE_WEIGHT_GRAD, kept[g]);
        for (int64_t i = 0; i < group->numel; i++)
            group->grad[i] += 1.0f;
        expect_ok(r->rep, st->ops->reduce(st, g), "reduce");
        expect_ok(r->rep, st->ops->release(st, g, DSV3_PARAM_USE_WEIGHT_GRAD), "release");
        reduced += group->shard_numel * (int64_t)sizeof(float);
        free(kept[g]);
        kept[g] = NULL;
    }
    expect(r->rep, dsv3_param_store_fsdp_times(st).bytes - before == reduced,
           "a W moves its reduce-scatters' bytes only", reduced);
}

// Both micro-batches in the order of a split backward: F0 F1 I0 I1 W0 W1. The W of micro-batch
// 0 finds both I in the kept buffer, the W of micro-batch 1 a zeroed one: every element ends as
// the sum of both micro-batches' values.
static void split_micro_batches(Run *r) {
    float **kept = calloc((size_t)r->fsdp->n_groups, sizeof *kept);
    for (r->micro_batch = 0; r->micro_batch < MICRO_BATCHES; r->micro_batch++)
        forward(r);
    for (r->micro_batch = 0; r->micro_batch < MICRO_BATCHES; r->micro_batch++)
        backward_input(r, kept);
    for (r->micro_batch = 0; r->micro_batch < MICRO_BATCHES; r->micro_batch++)
        backward_weight(r, kept);
    free(kept);
}

// Every real row of every shard gradient against the sums it must hold; padding zero.
static void check_gradients(Run *r, int64_t n_stage, const float *values_before) {
    Dsv3ParamStore *st = r->fsdp;
    int64_t at = 0;
    for (int g = 0; g < st->n_groups; g++) {
        const Dsv3ParamGroup *group = &st->groups[g];
        const Dsv3ParamShard *shard = &st->shards[g];
        expect(r->rep,
               memcmp(shard->data, values_before + at,
                      (size_t)group->shard_numel * sizeof(float)) == 0,
               "shard values untouched", g);
        at += group->shard_numel;
        char *real = calloc((size_t)group->shard_numel, 1);
        for (int slot = 0; slot < DSV3_PARAM_SLOT_COUNT; slot++) {
            const Dsv3Param *p = &group->params[slot];
            if (!p->numel) continue;
            int64_t row = p->local_numel / p->local[0];
            for (int64_t k = 0; k < p->real_rows * row; k++) {
                int64_t full = p->offset + p->shard_row0 * row + k;
                float sum = 0;
                for (int m = 0; m < MICRO_BATCHES; m++)
                    for (int64_t s = 0; s < n_stage; s++)
                        sum += grad_value(s, g, full, m);
                expect(r->rep, shard->grad[p->shard_offset + k] == sum, "summed gradient", full);
                real[p->shard_offset + k] = 1;
            }
        }
        for (int64_t k = 0; k < group->shard_numel; k++)
            if (!real[k]) expect(r->rep, shard->grad[k] == 0.0f, "zero padding", k);
        free(real);
    }
}

static void check_policy(const Dsv3Topology *topo, Dsv3CollectivesMpi *coll,
                         const Dsv3KernelContext *k, Dsv3ReshardPolicy policy, int split,
                         Report *rep) {
    Dsv3ModelArgs args = small_model();
    Dsv3StageRange range = dsv3_stage_range_whole(&args);
    Dsv3FsdpOptions opt = {.spec = dsv3_plan_stage_spec(&topo->dims, &topo->coord),
                           .collectives = coll,
                           .policy = policy,
                           .split_backward = split};
    Run r = {.me = topo->stage_index, .rep = rep};
    expect_ok(rep, dsv3_param_store_local_create(&r.local, k, &args, &range, NULL, SEED), "local");
    expect_ok(rep, dsv3_param_store_fsdp_create(&r.fsdp, k, &args, &range, SEED, &opt), "fsdp");
    if (!r.local || !r.fsdp) goto done;
    int64_t total = dsv3_param_store_numel(r.fsdp);
    float *before = malloc((size_t)total * sizeof *before);
    for (int g = 0, at = 0; g < r.fsdp->n_groups; at += (int)r.fsdp->groups[g].shard_numel, g++)
        memcpy(before + at, r.fsdp->shards[g].data,
               (size_t)r.fsdp->groups[g].shard_numel * sizeof(float));
    if (split) split_micro_batches(&r);
    for (r.micro_batch = 0; !split && r.micro_batch < MICRO_BATCHES && rep->failures == 0;
         r.micro_batch++)
        micro_batch(&r);
    expect_ok(rep, r.fsdp->ops->finish(r.fsdp), "finish");
    if (rep->failures == 0) check_gradients(&r, topo->n_stage, before);
    free(before);
done:
    dsv3_param_store_destroy(r.fsdp);
    dsv3_param_store_destroy(r.local);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int job_rank = 0, job_size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &job_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &job_size);
    dsv3_log_init("test_param_store_fsdp", job_rank);
    int64_t replicate = 1, shard = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dp-replicate") == 0) replicate = strtoll(argv[i + 1], NULL, 10);
        if (strcmp(argv[i], "--dp-shard") == 0) shard = strtoll(argv[i + 1], NULL, 10);
    }
    if (1 + replicate * shard != job_size) {
        if (job_rank == 0)
            fprintf(stderr, "test_param_store_fsdp: the layout needs %lld ranks, %d launched\n",
                    (long long)(1 + replicate * shard), job_size);
        MPI_Finalize();
        return 2;
    }
    Report rep = {.job_rank = job_rank, .what = "set-up"};
    Dsv3Role role = job_rank == 0 ? DSV3_ROLE_COORDINATOR : DSV3_ROLE_STAGE;
    Dsv3ParallelDims dims = {1, replicate, shard, 1, 1, 1};
    Dsv3Topology topo;
    Dsv3Protocol *p = NULL;
    expect_ok(&rep, dsv3_topology_create(MPI_COMM_WORLD, role, &dims, &topo), "topology");
    expect_ok(&rep, dsv3_protocol_create(&p, &topo, TIMEOUT_S, TIMEOUT_S), "protocol");
    if (role == DSV3_ROLE_STAGE && rep.failures == 0) {
        Dsv3CollectivesMpi *coll = NULL;
        Dsv3KernelContext k;
        expect_ok(&rep, dsv3_collectives_mpi_create(&coll, &topo, dsv3_protocol_watch(p)),
                  "collectives");
        expect_ok(&rep, dsv3_kernel_context_create(&k, DSV3_BACKEND_CPU, -1), "kernels");
        static const char *const names[2][3] = {{"default", "always", "never"},
                                                {"split default", "split always", "split never"}};
        for (int split = 0; split < 2; split++)
            for (int policy = 0; policy < 3 && coll && rep.failures == 0; policy++) {
                rep.what = names[split][policy];
                check_policy(&topo, coll, &k, (Dsv3ReshardPolicy)policy, split, &rep);
            }
        dsv3_kernel_context_destroy(&k);
        dsv3_collectives_mpi_destroy(coll);
    }
    dsv3_protocol_destroy(p);
    dsv3_topology_destroy(&topo);
    int failures = rep.failures;
    MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (job_rank == 0)
        printf("test_param_store_fsdp: dp_replicate %lld × dp_shard %lld, %d failure(s)\n",
               (long long)replicate, (long long)shard, failures);
    MPI_Finalize();
    return failures == 0 ? 0 : 1;
}
