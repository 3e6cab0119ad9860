// param_store_fsdp: shards, the buffer pool, all-gathers with prefetch, reduce-scatters.
//
// Legend: P ranks of the FSDP group, t a tensor (present slot) of a group.
#include "param_store_fsdp.h"

#include <inttypes.h>
#include <limits.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "common/comm/mpi_check.h"

enum { NO_BUFFER = -1, NO_GROUP = -1 };

typedef enum { COPY_NONE, COPY_GATHERING, COPY_READY } CopyState;

// One non-blocking operation: a request per tensor, its start and observed completion.
typedef struct {
    MPI_Request requests[DSV3_PARAM_SLOT_COUNT];
    int n;
    double start, done_at; // done_at 0 until completion is observed
} Op;

// A group's communication: its tensors' per-rank counts and its gathered copy.
typedef struct {
    int n_tensors;
    int slots[DSV3_PARAM_SLOT_COUNT]; // the group's present slots
    int *counts, *displs;             // (n_tensors × P) each rank's real rows, in elements
    CopyState state;
    int value;   // value buffer of the gathered copy, or NO_BUFFER
    int grad;    // gradient buffer while in backward (and kept after it), or NO_BUFFER
    int kept;    // grad outlives the next release (keep: a split backward's W is to come)
    Op gather;   // while COPY_GATHERING
    int next[2]; // the group acquired after this one in forward and in backward, or NO_GROUP
    int reshard; // freed after forward
} GroupComm;

// A reduce-scatter in flight, in place in gradient buffer `grad`: each tensor's sums of this
// rank's rows land at the start of the tensor's place (MPI_IN_PLACE).
typedef struct {
    int group; // NO_GROUP when free
    int grad;
    Op op;
    int64_t order; // start order: the oldest completes first
} Reduction;

typedef struct {
    Dsv3ParamStore base; // first: the ops get &base
    Dsv3FsdpOptions opt;
    MPI_Comm comm;
    int size, rank;
    GroupComm *comms; // (n_groups)
    Dsv3FsdpBuffers plan;
    float **buffers;       // (plan.buffers) gathered values or full gradients
    int *busy;             // (plan.buffers) in use
    Reduction *reductions; // (plan.buffers) at most one per gradient buffer
    int64_t started;       // reductions started
    Dsv3FsdpTimes times;
} FsdpStore;

static const Dsv3ParamStoreOps fsdp_ops;

static FsdpStore *of(Dsv3ParamStore *self) { return (FsdpStore *)self; }

// Completion of `op` observed without waiting, when it has completed (MPI progress too).
static Dsv3Err op_poll(Op *op) {
    if (op->n == 0 || op->done_at > 0) return DSV3_OK;
    int done = 0;
    DSV3_MPI_CALL(MPI_Testall(op->n, op->requests, &done, MPI_STATUSES_IGNORE));
    if (done) op->done_at = dsv3_log_seconds();
    return DSV3_OK;
}

// Completes `op`, timing the wait, and counts its time.
static Dsv3Err op_complete(FsdpStore *s, Op *op, const char *what) {
    DSV3_CALL(op_poll(op));
    if (op->done_at == 0) {
        double t0 = dsv3_log_seconds();
        DSV3_CALL(dsv3_collectives_mpi_wait(s->opt.collectives, DSV3_GROUP_FSDP, op->n,
                                            op->requests, what));
        op->done_at = dsv3_log_seconds();
        s->times.wait_seconds += op->done_at - t0;
    }
    s->times.comm_seconds += op->done_at - op->start;
    op->n = 0;
    return DSV3_OK;
}

// Lets MPI progress the operations in flight (they advance only inside MPI calls).
static Dsv3Err progress(FsdpStore *s) {
    for (int g = 0; g < s->base.n_groups; g++)
        if (s->comms[g].state == COPY_GATHERING) DSV3_CALL(op_poll(&s->comms[g].gather));
    for (int i = 0; i < s->plan.buffers; i++)
        if (s->reductions[i].group != NO_GROUP) DSV3_CALL(op_poll(&s->reductions[i].op));
    return DSV3_OK;
}

static int reduction_pending(const FsdpStore *s) {
    for (int i = 0; i < s->plan.buffers; i++)
        if (s->reductions[i].group != NO_GROUP) return 1;
    return 0;
}

static Dsv3Err reduction_complete_oldest(FsdpStore *s);

// *b = a free buffer, now busy, or NO_BUFFER when none is free. With `wait`, reduce-scatters
// in flight are completed, oldest first, until one is.
static Dsv3Err buffer_take(FsdpStore *s, int wait, int *b) {
    for (;;) {
        for (*b = 0; *b < s->plan.buffers; (*b)++)
            if (!s->busy[*b]) {
                s->busy[*b] = 1;
                return DSV3_OK;
            }
        *b = NO_BUFFER;
        if (!wait || !reduction_pending(s)) return DSV3_OK;
        DSV3_CALL(reduction_complete_oldest(s));
    }
}

// Fails, naming the group, when the pool had no buffer left for it.
static Dsv3Err check_taken(const FsdpStore *s, int g, int b) {
    DSV3_CHECK(
        b != NO_BUFFER, DSV3_ERR_INTERNAL,
        "FSDP store: all %d buffers are in use when the %s group of layer %" PRId64 " needs one",
        s->plan.buffers, dsv3_group_kind_name(s->base.groups[g].kind), s->base.groups[g].layer_id);
    return DSV3_OK;
}

// Starts the all-gather of group g into a free buffer (`wait`: see buffer_take); *started
// says whether there was one.
static Dsv3Err gather_start(FsdpStore *s, int g, int wait, int *started) {
    GroupComm *c = &s->comms[g];
    int b = NO_BUFFER;
    DSV3_CALL(buffer_take(s, wait, &b));
    *started = b != NO_BUFFER;
    if (!*started) return DSV3_OK;
    const Dsv3ParamGroup *group = &s->base.groups[g];
    const float *shard = s->base.shards[g].data;
    c->gather = (Op){.n = c->n_tensors, .start = dsv3_log_seconds()};
    for (int t = 0; t < c->n_tensors; t++) {
        const Dsv3Param *p = &group->params[c->slots[t]];
        const int *counts = c->counts + t * s->size, *displs = c->displs + t * s->size;
        DSV3_MPI_CALL(MPI_Iallgatherv(shard + p->shard_offset, counts[s->rank], MPI_FLOAT,
                                      s->buffers[b] + p->offset, counts, displs, MPI_FLOAT, s->comm,
                                      &c->gather.requests[t]));
    }
    c->value = b;
    c->state = COPY_GATHERING;
    s->times.bytes += group->numel * (int64_t)sizeof(float);
    return DSV3_OK;
}

// Completes the oldest reduce-scatter in flight: its sums are added to the group's shard
// gradient and its buffers freed.
static Dsv3Err reduction_complete_oldest(FsdpStore *s) {
    Reduction *r = NULL;
    for (int i = 0; i < s->plan.buffers; i++)
        if (s->reductions[i].group != NO_GROUP && (!r || s->reductions[i].order < r->order))
            r = &s->reductions[i];
    DSV3_ASSERT(r);
    DSV3_CALL(op_complete(s, &r->op, "reduce-scatter of gradients"));
    const Dsv3ParamGroup *group = &s->base.groups[r->group];
    const GroupComm *c = &s->comms[r->group];
    float *grad = s->base.shards[r->group].grad;
    for (int t = 0; t < c->n_tensors; t++) {
        const Dsv3Param *p = &group->params[c->slots[t]];
        int64_t n = c->counts[t * s->size + s->rank];
        DSV3_CALL(dsv3_add(s->base.kernels, DSV3_TENSOR_F32, grad + p->shard_offset,
                           grad + p->shard_offset, s->buffers[r->grad] + p->offset, n));
    }
    s->busy[r->grad] = 0;
    r->group = NO_GROUP;
    return DSV3_OK;
}

// Group g's full gradient buffer for a backward or a W: the one an I kept, to add to, or a
// zeroed one.
static Dsv3Err grad_buffer(FsdpStore *s, int g, float **grad) {
    GroupComm *c = &s->comms[g];
    if (c->grad != NO_BUFFER) { // kept
        *grad = s->buffers[c->grad];
        c->kept = 0;
        return DSV3_OK;
    }
    DSV3_CALL(buffer_take(s, 1, &c->grad));
    DSV3_CALL(check_taken(s, g, c->grad));
    *grad = s->buffers[c->grad];
    return dsv3_memory_zero(s->base.kernels, *grad,
                            (size_t)s->base.groups[g].numel * sizeof(float));
}

static Dsv3Err fsdp_acquire(Dsv3ParamStore *self, int g, Dsv3ParamUse use) {
    FsdpStore *s = of(self);
    DSV3_ASSERT(g >= 0 && g < self->n_groups);
    GroupComm *c = &s->comms[g];
    DSV3_CALL(progress(s));
    if (use == DSV3_PARAM_USE_WEIGHT_GRAD) { // gradients alone: nothing to gather
        float *grad;
        DSV3_CALL(grad_buffer(s, g, &grad));
        dsv3_param_group_bind(&self->groups[g], NULL, grad);
        return DSV3_OK;
    }
    if (c->state == COPY_NONE) {
        int started = 0;
        DSV3_CALL(gather_start(s, g, 1, &started));
        DSV3_CALL(check_taken(s, g, started ? c->value : NO_BUFFER));
    }
    if (c->state == COPY_GATHERING) {
        DSV3_CALL(op_complete(s, &c->gather, "all-gather of parameters"));
        c->state = COPY_READY;
    }
    float *grad = NULL;
    if (use == DSV3_PARAM_USE_BACKWARD) DSV3_CALL(grad_buffer(s, g, &grad));
    dsv3_param_group_bind(&self->groups[g], s->buffers[c->value], grad);
    int next = c->next[use];
    if (next != NO_GROUP && s->comms[next].state == COPY_NONE) {
        int started = 0; // no free buffer: the group is gathered when acquired
        DSV3_CALL(gather_start(s, next, 0, &started));
    }
    return DSV3_OK;
}

// Frees group g's gathered copy.
static void copy_drop(FsdpStore *s, int g) {
    GroupComm *c = &s->comms[g];
    if (c->value != NO_BUFFER) s->busy[c->value] = 0;
    c->value = NO_BUFFER;
    c->state = COPY_NONE;
    dsv3_param_group_bind(&s->base.groups[g], NULL, NULL);
}

static Dsv3Err fsdp_release(Dsv3ParamStore *self, int g, Dsv3ParamUse use) {
    FsdpStore *s = of(self);
    DSV3_ASSERT(g >= 0 && g < self->n_groups);
    GroupComm *c = &s->comms[g];
    DSV3_CALL(progress(s));
    if (c->grad != NO_BUFFER && !c->kept) { // a backward without reduce or keep: dropped
        s->busy[c->grad] = 0;
        c->grad = NO_BUFFER;
    }
    if (use == DSV3_PARAM_USE_WEIGHT_GRAD) { // its acquire took no copy (one may be gathering)
        dsv3_param_group_bind(&self->groups[g], NULL, NULL);
        return DSV3_OK;
    }
    if (use == DSV3_PARAM_USE_FORWARD && !c->reshard) return DSV3_OK; // kept for backward
    copy_drop(s, g);
    return DSV3_OK;
}

static Dsv3Err fsdp_reduce(Dsv3ParamStore *self, int g) {
    FsdpStore *s = of(self);
    DSV3_ASSERT(g >= 0 && g < self->n_groups);
    GroupComm *c = &s->comms[g];
    DSV3_ASSERT(c->grad != NO_BUFFER);
    Reduction *r = NULL;
    while (!r) {
        for (int i = 0; i < s->plan.buffers && !r; i++)
            if (s->reductions[i].group == NO_GROUP) r = &s->reductions[i];
        if (!r) DSV3_CALL(reduction_complete_oldest(s));
    }
    const Dsv3ParamGroup *group = &self->groups[g];
    float *grad = s->buffers[c->grad];
    r->op = (Op){.n = c->n_tensors, .start = dsv3_log_seconds()};
    for (int t = 0; t < c->n_tensors; t++) {
        const Dsv3Param *p = &group->params[c->slots[t]];
        DSV3_MPI_CALL(MPI_Ireduce_scatter(MPI_IN_PLACE, grad + p->offset, c->counts + t * s->size,
                                          MPI_FLOAT, MPI_SUM, s->comm, &r->op.requests[t]));
    }
    r->group = g;
    r->grad = c->grad;
    r->order = s->started++;
    c->grad = NO_BUFFER; // the reduction holds the buffer until it completes
    s->times.bytes += group->shard_numel * (int64_t)sizeof(float);
    return progress(s);
}

static Dsv3Err fsdp_keep(Dsv3ParamStore *self, int g) {
    FsdpStore *s = of(self);
    DSV3_ASSERT(g >= 0 && g < self->n_groups && s->comms[g].grad != NO_BUFFER);
    s->comms[g].kept = 1;
    return DSV3_OK;
}

static Dsv3Err fsdp_finish(Dsv3ParamStore *self) {
    FsdpStore *s = of(self);
    for (int g = 0; g < self->n_groups; g++)
        DSV3_CHECK(s->comms[g].grad == NO_BUFFER, DSV3_ERR_INTERNAL,
                   "FSDP store: the %s group of layer %" PRId64
                   " still keeps gradients at the end of the step (a split backward's W did not "
                   "run)",
                   dsv3_group_kind_name(self->groups[g].kind), self->groups[g].layer_id);
    while (reduction_pending(s))
        DSV3_CALL(reduction_complete_oldest(s));
    for (int g = 0; g < self->n_groups; g++) {
        if (s->comms[g].state == COPY_GATHERING)
            DSV3_CALL(op_complete(s, &s->comms[g].gather, "all-gather of parameters"));
        copy_drop(s, g);
    }
    Dsv3Collectives *coll = dsv3_collectives_mpi_interface(s->opt.collectives);
    int64_t replicas = 1, replica = 0;
    DSV3_CALL(coll->group(coll, DSV3_GROUP_DP_REPLICATE, &replicas, &replica));
    if (replicas == 1) return DSV3_OK;
    double t0 = dsv3_log_seconds();
    for (int g = 0; g < self->n_groups; g++)
        DSV3_CALL(coll->all_reduce(coll, DSV3_GROUP_DP_REPLICATE, self->shards[g].grad,
                                   self->groups[g].shard_numel, DSV3_ELEM_F32, DSV3_REDUCE_SUM));
    double seconds = dsv3_log_seconds() - t0; // blocking: all of it waited
    s->times.comm_seconds += seconds;
    s->times.wait_seconds += seconds;
    return DSV3_OK;
}

static void fsdp_destroy(Dsv3ParamStore *self) {
    FsdpStore *s = of(self);
    for (int b = 0; s->buffers && b < s->plan.buffers; b++)
        dsv3_memory_free(self->kernels, s->buffers[b]);
    for (int g = 0; s->comms && g < self->n_groups; g++) {
        dsv3_free(s->comms[g].counts);
        dsv3_free(s->comms[g].displs);
    }
    dsv3_free(s->buffers);
    dsv3_free(s->busy);
    dsv3_free(s->reductions);
    dsv3_free(s->comms);
    dsv3_param_store_shards_free(self);
    dsv3_free(s);
}

static const Dsv3ParamStoreOps fsdp_ops = {fsdp_acquire, fsdp_release, fsdp_reduce,
                                           fsdp_keep,    fsdp_finish,  fsdp_destroy};

// Group g's tensors and every rank's rows of them (the table laid out for each FSDP rank).
static Dsv3Err comm_layout(FsdpStore *s, int g) {
    const Dsv3ParamGroup *group = &s->base.groups[g];
    GroupComm *c = &s->comms[g];
    *c = (GroupComm){.value = NO_BUFFER, .grad = NO_BUFFER, .next = {NO_GROUP, NO_GROUP}};
    for (int slot = 0; slot < DSV3_PARAM_SLOT_COUNT; slot++)
        if (group->params[slot].numel) c->slots[c->n_tensors++] = slot;
    size_t n = (size_t)c->n_tensors * (size_t)s->size;
    DSV3_CALL(dsv3_calloc((void **)&c->counts, n ? n : 1, sizeof *c->counts, "FSDP counts"));
    DSV3_CALL(dsv3_calloc((void **)&c->displs, n ? n : 1, sizeof *c->displs, "FSDP offsets"));
    for (int r = 0; r < s->size; r++) {
        Dsv3ShardSpec spec = group->spec;
        spec.fsdp_rank = r;
        Dsv3ParamGroup theirs;
        DSV3_CALL(
            dsv3_param_group_layout(&theirs, &s->base.args, group->kind, group->layer_id, &spec));
        for (int t = 0; t < c->n_tensors; t++) {
            const Dsv3Param *p = &theirs.params[c->slots[t]];
            int64_t row = p->local_numel / (p->local[0] ? p->local[0] : 1);
            DSV3_CHECK(p->local_numel <= INT_MAX, DSV3_ERR_USAGE,
                       "FSDP store: %s has %" PRId64 " elements on this rank, more than one MPI "
                       "call moves (INT_MAX); shard it further with tensor parallelism",
                       p->fqn, p->local_numel);
            c->counts[t * s->size + r] = (int)(p->real_rows * row);
            c->displs[t * s->size + r] = (int)(p->shard_row0 * row);
        }
    }
    c->reshard = dsv3_reshard_after_forward(s->opt.policy, group->kind, s->opt.pipelined);
    return DSV3_OK;
}

// The acquisition order: forward runs the groups in store order; backward in reverse, except
// that a layer is acquired before its experts (they are acquired inside the layer).
static void link_order(FsdpStore *s) {
    int n = s->base.n_groups;
    for (int g = 0; g + 1 < n; g++)
        s->comms[g].next[DSV3_PARAM_USE_FORWARD] = g + 1;
    int prev = NO_GROUP; // the group acquired before, in backward
    for (int g = n - 1; g >= 0; g--) {
        const Dsv3ParamGroup *group = &s->base.groups[g];
        if (group->kind == DSV3_GROUP_EXPERTS) continue; // linked after its layer
        int experts = g + 1 < n && s->base.groups[g + 1].kind == DSV3_GROUP_EXPERTS ? g + 1 : -1;
        if (prev != NO_GROUP) s->comms[prev].next[DSV3_PARAM_USE_BACKWARD] = g;
        prev = g;
        if (experts >= 0) {
            s->comms[g].next[DSV3_PARAM_USE_BACKWARD] = experts;
            prev = experts;
        }
    }
}

static Dsv3Err pool_create(FsdpStore *s) {
    const Dsv3KernelContext *k = s->base.kernels;
    Dsv3FsdpBuffers *p = &s->plan;
    dsv3_fsdp_buffers(s->opt.policy, s->opt.pipelined, s->opt.split_backward, s->base.groups,
                      s->base.n_groups, p);
    DSV3_CALL(
        dsv3_calloc((void **)&s->buffers, (size_t)p->buffers, sizeof *s->buffers, "FSDP buffers"));
    DSV3_CALL(
        dsv3_calloc((void **)&s->busy, (size_t)p->buffers, sizeof *s->busy, "FSDP buffer states"));
    for (int b = 0; b < p->buffers; b++)
        DSV3_CALL(dsv3_memory_alloc(k, (void **)&s->buffers[b],
                                    (size_t)p->buffer_numel * sizeof(float), "FSDP buffer"));
    DSV3_CALL(dsv3_calloc((void **)&s->reductions, (size_t)p->buffers, sizeof *s->reductions,
                          "FSDP reductions"));
    for (int i = 0; i < p->buffers; i++)
        s->reductions[i].group = NO_GROUP;
    return DSV3_OK;
}

static Dsv3Err fsdp_create(FsdpStore *s, const Dsv3ShardSpec *spec, uint64_t seed) {
    s->comm = dsv3_collectives_mpi_comm(s->opt.collectives, DSV3_GROUP_FSDP);
    DSV3_CHECK(s->comm != MPI_COMM_NULL, DSV3_ERR_USAGE, "FSDP store: no FSDP communicator");
    DSV3_MPI_CALL(MPI_Comm_size(s->comm, &s->size));
    DSV3_MPI_CALL(MPI_Comm_rank(s->comm, &s->rank));
    DSV3_CHECK(spec->fsdp == s->size && spec->fsdp_rank == s->rank, DSV3_ERR_USAGE,
               "FSDP store: the shard spec (fsdp %" PRId64 ", rank %" PRId64
               ") disagrees with the FSDP group (%d ranks, this one %d)",
               spec->fsdp, spec->fsdp_rank, s->size, s->rank);
    s->base.fsdp_size = s->size;
    DSV3_CALL(dsv3_param_store_shards_create(&s->base, spec, seed));
    DSV3_CALL(dsv3_calloc((void **)&s->comms, (size_t)(s->base.n_groups ? s->base.n_groups : 1),
                          sizeof *s->comms, "FSDP group state"));
    for (int g = 0; g < s->base.n_groups; g++)
        DSV3_CALL(comm_layout(s, g));
    link_order(s);
    return pool_create(s);
}

Dsv3Err dsv3_param_store_fsdp_create(Dsv3ParamStore **out, const Dsv3KernelContext *kernels,
                                     const Dsv3ModelArgs *args, const Dsv3StageRange *range,
                                     uint64_t seed, const Dsv3FsdpOptions *opt) {
    *out = NULL;
    DSV3_CHECK(kernels->backend == DSV3_BACKEND_CPU, DSV3_ERR_USAGE,
               "FSDP store: host memory only (the CUDA backend has no FSDP store yet)");
    FsdpStore *s = NULL;
    DSV3_CALL(dsv3_calloc((void **)&s, 1, sizeof *s, "FSDP parameter store"));
    s->base =
        (Dsv3ParamStore){.ops = &fsdp_ops, .kernels = kernels, .args = *args, .range = *range};
    s->opt = *opt;
    Dsv3Err err = fsdp_create(s, &opt->spec, seed);
    if (err != DSV3_OK) {
        fsdp_destroy(&s->base);
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    *out = &s->base;
    return DSV3_OK;
}

Dsv3FsdpTimes dsv3_param_store_fsdp_times(const Dsv3ParamStore *store) {
    if (store->ops != &fsdp_ops) return (Dsv3FsdpTimes){0};
    return ((const FsdpStore *)store)->times;
}
