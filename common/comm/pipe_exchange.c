// pipe_exchange: point-to-point activations and gradients between pipeline stages.
#include "pipe_exchange.h"

#include <limits.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "common/comm/mpi_check.h"
#include "common/comm/tags.h"

enum { RING = 2 }; // buffers per direction, used in turn

// Receive buffers of one direction: RING buffers, each with its pending requests (activations
// and document ids, or a gradient), the micro-batch and stage it holds and the pipeline rank it
// comes from.
typedef struct {
    float *rows[RING];
    int32_t *doc[RING];
    MPI_Request requests[RING][2];
    int64_t micro[RING], stage[RING];
    int peer[RING];
    int64_t posted; // receives posted so far: the next goes to buffer posted % RING
} Inbox;

struct Dsv3PipeExchange {
    MPI_Comm comm; // duplicate of the pp communicator: rank = pipeline rank
    Dsv3Watch *watch;
    int rank, pp;      // this rank's pipeline rank and the pipeline's ranks
    int job_rank;      // this rank's job rank
    int stride;        // job ranks between neighbouring pipeline ranks (mesh order)
    int count;         // floats per message: n_rows · dim
    int n_rows, n_doc; // n_doc: document ids per message (0: none)
    int64_t slots;
    Inbox activations, gradients;
    float *grad_out[RING];
    MPI_Request grad_send[RING];
    int grad_peer[RING];
    int64_t grad_sent;
    MPI_Request *slot_send; // (slots, 2): activations and document ids sent from each slot
    int *slot_peer;         // (slots): where each slot's last activations went
    double wait_seconds;
};

static Dsv3Err inbox_alloc(Inbox *in, int count, int n_doc) {
    for (int k = 0; k < RING; k++) {
        in->requests[k][0] = in->requests[k][1] = MPI_REQUEST_NULL;
        in->micro[k] = in->stage[k] = -1;
        in->peer[k] = -1;
        DSV3_CALL(dsv3_alloc((void **)&in->rows[k], (size_t)count * sizeof(float),
                             "pipeline receive buffer"));
        if (n_doc)
            DSV3_CALL(dsv3_alloc((void **)&in->doc[k], (size_t)n_doc * sizeof(int32_t),
                                 "pipeline document ids"));
    }
    return DSV3_OK;
}

static void inbox_free(Inbox *in) {
    for (int k = 0; k < RING; k++) {
        dsv3_free(in->rows[k]);
        dsv3_free(in->doc[k]);
    }
}

Dsv3Err dsv3_pipe_exchange_create(Dsv3PipeExchange **out, const Dsv3Topology *topo,
                                  const Dsv3PipeExchangeShape *shape, Dsv3Watch *watch) {
    *out = NULL;
    int64_t n_rows = shape->n_rows, dim = shape->dim, slots = shape->slots;
    DSV3_CHECK(topo->pp != MPI_COMM_NULL && slots > 0, DSV3_ERR_USAGE,
               "pipeline exchange: this rank is no stage rank, or has no activation slot");
    DSV3_CHECK(n_rows > 0 && dim > 0 && n_rows * dim <= INT_MAX, DSV3_ERR_CONFIG,
               "a pipeline micro-batch of %lld tokens × dim %lld is more than one message holds "
               "(%d floats): lower parallelism.pipeline_parallel_microbatch_size",
               (long long)n_rows, (long long)dim, INT_MAX);
    Dsv3PipeExchange *x = NULL;
    DSV3_CALL(dsv3_calloc((void **)&x, 1, sizeof *x, "pipeline exchange"));
    x->comm = MPI_COMM_NULL;
    x->watch = watch;
    x->n_rows = (int)n_rows;
    x->count = (int)(n_rows * dim);
    DSV3_CHECK(shape->n_doc >= 0 && shape->n_doc <= INT_MAX, DSV3_ERR_CONFIG,
               "pipeline exchange: %lld document ids per micro-batch do not fit one message",
               (long long)shape->n_doc);
    x->n_doc = (int)shape->n_doc;
    x->slots = slots;
    x->pp = (int)topo->dims.pp;
    x->rank = (int)topo->coord.pp;
    x->job_rank = (int)topo->job_rank;
    x->stride = (int)(topo->n_stage / topo->dims.pp); // stage ranks per pipeline rank
    for (int k = 0; k < RING; k++) {
        x->grad_send[k] = MPI_REQUEST_NULL;
        x->grad_peer[k] = x->rank;
    }
    Dsv3Err err = DSV3_OK;
    MPI_Request dup;
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Comm_idup(topo->pp, &x->comm, &dup));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_watch_wait(watch, 1, &dup, NULL, DSV3_WATCH_ALL_PEERS,
                                   "waits for the other pipeline stages to open the pipeline "
                                   "exchange"));
    int n_doc = x->n_doc;
    if (shape->receives) {
        DSV3_CALL_GOTO(err, fail, inbox_alloc(&x->activations, x->count, n_doc));
        for (int k = 0; k < RING; k++)
            DSV3_CALL_GOTO(err, fail,
                           dsv3_alloc((void **)&x->grad_out[k], (size_t)x->count * sizeof(float),
                                      "pipeline gradient send buffer"));
    }
    if (shape->sends) {
        DSV3_CALL_GOTO(err, fail, inbox_alloc(&x->gradients, x->count, 0));
        DSV3_CALL_GOTO(err, fail,
                       dsv3_calloc((void **)&x->slot_send, (size_t)slots * 2, sizeof *x->slot_send,
                                   "pipeline slot sends"));
        DSV3_CALL_GOTO(err, fail,
                       dsv3_calloc((void **)&x->slot_peer, (size_t)slots, sizeof *x->slot_peer,
                                   "pipeline slot peers"));
        for (int64_t k = 0; k < slots * 2; k++)
            x->slot_send[k] = MPI_REQUEST_NULL;
        for (int64_t k = 0; k < slots; k++)
            x->slot_peer[k] = x->rank;
    }
    *out = x;
    return DSV3_OK;
fail:
    dsv3_pipe_exchange_destroy(x);
    return err;
}

int64_t dsv3_pipe_exchange_bytes(const Dsv3PipeExchangeShape *s) {
    int64_t rows = s->n_rows * s->dim * (int64_t)sizeof(float);
    int64_t doc = s->n_doc * (int64_t)sizeof(int32_t);
    int64_t bytes = (int64_t)sizeof(Dsv3PipeExchange);
    if (s->receives) bytes += RING * (rows + doc) + RING * rows; // activations in, gradients out
    if (s->sends)
        bytes += RING * rows + s->slots * (2 * (int64_t)sizeof(MPI_Request) + (int64_t)sizeof(int));
    return bytes;
}

// Checks that `peer` is a pipeline rank.
static Dsv3Err check_peer(const Dsv3PipeExchange *x, int64_t peer) {
    DSV3_CHECK(peer >= 0 && peer < x->pp, DSV3_ERR_INTERNAL,
               "pipeline exchange: pipeline rank %lld is outside [0, %d)", (long long)peer, x->pp);
    return DSV3_OK;
}

// Waits for `n` requests that depend on pipeline rank `peer`, counting the time as pipeline
// wait.
static Dsv3Err wait_for(Dsv3PipeExchange *x, int n, MPI_Request *requests, int peer,
                        const char *what, int64_t micro) {
    double t0 = dsv3_log_seconds();
    int job = x->job_rank + (peer - x->rank) * x->stride; // the watch's rank of the peer
    Dsv3Err err = dsv3_watch_wait(x->watch, n, requests, &job, 1,
                                  "waits for pipeline rank %d to take or give the %s of "
                                  "micro-batch %lld",
                                  peer, what, (long long)micro);
    x->wait_seconds += dsv3_log_seconds() - t0;
    return err;
}

Dsv3Err dsv3_pipe_exchange_finish(Dsv3PipeExchange *x) {
    if (!x) return DSV3_OK;
    for (int64_t k = 0; x->slot_send && k < x->slots; k++)
        DSV3_CALL(
            wait_for(x, 2, &x->slot_send[2 * k], x->slot_peer[k], "activations (last sends)", -1));
    for (int k = 0; x->grad_out[0] && k < RING; k++)
        DSV3_CALL(wait_for(x, 1, &x->grad_send[k], x->grad_peer[k], "gradients", -1));
    return DSV3_OK;
}

void dsv3_pipe_exchange_destroy(Dsv3PipeExchange *x) {
    if (!x) return;
    inbox_free(&x->activations);
    inbox_free(&x->gradients);
    for (int k = 0; k < RING; k++)
        dsv3_free(x->grad_out[k]);
    dsv3_free(x->slot_send);
    dsv3_free(x->slot_peer);
    if (x->comm != MPI_COMM_NULL) MPI_Comm_free(&x->comm);
    dsv3_free(x);
}

// The next buffer of `in` for micro-batch `micro` of stage `stage`; it must hold nothing
// pending.
static Dsv3Err inbox_next(Inbox *in, int64_t micro, int64_t stage, int peer, int *k) {
    DSV3_CHECK(in->rows[0], DSV3_ERR_INTERNAL,
               "pipeline exchange: a receive for stage %lld, which this rank's exchange was not "
               "made for",
               (long long)stage);
    *k = (int)(in->posted % RING);
    DSV3_CHECK(in->requests[*k][0] == MPI_REQUEST_NULL && in->requests[*k][1] == MPI_REQUEST_NULL,
               DSV3_ERR_INTERNAL,
               "pipeline exchange: micro-batch %lld's receive needs a buffer that micro-batch "
               "%lld still fills (receives posted more than one compute ahead)",
               (long long)micro, (long long)in->micro[*k]);
    in->micro[*k] = micro;
    in->stage[*k] = stage;
    in->peer[*k] = peer;
    in->posted++;
    return DSV3_OK;
}

static Dsv3Err inbox_find(const Inbox *in, int64_t micro, int64_t stage, int *k) {
    for (*k = 0; *k < RING; (*k)++)
        if (in->micro[*k] == micro && in->stage[*k] == stage) return DSV3_OK;
    DSV3_RAISE(DSV3_ERR_INTERNAL,
               "pipeline exchange: micro-batch %lld of stage %lld was never posted",
               (long long)micro, (long long)stage);
}

Dsv3Err dsv3_pipe_exchange_post_activations(Dsv3PipeExchange *x, int64_t micro, int64_t stage,
                                            int64_t from) {
    int k;
    DSV3_CALL(check_peer(x, from));
    DSV3_CALL(inbox_next(&x->activations, micro, stage, (int)from, &k));
    MPI_Request *r = x->activations.requests[k];
    DSV3_MPI_CALL(MPI_Irecv(x->activations.rows[k], x->count, MPI_FLOAT, (int)from,
                            DSV3_TAG_PIPE_ACTIVATIONS, x->comm, &r[0]));
    if (x->n_doc)
        DSV3_MPI_CALL(MPI_Irecv(x->activations.doc[k], x->n_doc, MPI_INT32_T, (int)from,
                                DSV3_TAG_PIPE_DOC, x->comm, &r[1]));
    return DSV3_OK;
}

Dsv3Err dsv3_pipe_exchange_wait_activations(Dsv3PipeExchange *x, int64_t micro, int64_t stage,
                                            const float **act, const int32_t **doc) {
    int k;
    DSV3_CALL(inbox_find(&x->activations, micro, stage, &k));
    DSV3_CALL(
        wait_for(x, 2, x->activations.requests[k], x->activations.peer[k], "activations", micro));
    *act = x->activations.rows[k];
    *doc = x->n_doc ? x->activations.doc[k] : NULL;
    return DSV3_OK;
}

Dsv3Err dsv3_pipe_exchange_release_slot(Dsv3PipeExchange *x, int64_t slot) {
    if (!x->slot_send) return DSV3_OK; // the last stage sends no activations
    return wait_for(x, 2, &x->slot_send[2 * slot], x->slot_peer[slot], "activations", -1);
}

Dsv3Err dsv3_pipe_exchange_send_activations(Dsv3PipeExchange *x, int64_t slot, int64_t to,
                                            const float *act, const int32_t *doc) {
    DSV3_CALL(check_peer(x, to));
    DSV3_CHECK(x->slot_send && slot >= 0 && slot < x->slots, DSV3_ERR_INTERNAL,
               "pipeline exchange: activations sent from slot %lld of a rank whose exchange "
               "sends none or has %lld slots",
               (long long)slot, (long long)x->slots);
    MPI_Request *r = &x->slot_send[2 * slot];
    DSV3_CHECK(r[0] == MPI_REQUEST_NULL && r[1] == MPI_REQUEST_NULL, DSV3_ERR_INTERNAL,
               "pipeline exchange: slot %lld sends again before its last send completed",
               (long long)slot);
    x->slot_peer[slot] = (int)to;
    DSV3_MPI_CALL(
        MPI_Isend(act, x->count, MPI_FLOAT, (int)to, DSV3_TAG_PIPE_ACTIVATIONS, x->comm, &r[0]));
    if (x->n_doc)
        DSV3_MPI_CALL(
            MPI_Isend(doc, x->n_doc, MPI_INT32_T, (int)to, DSV3_TAG_PIPE_DOC, x->comm, &r[1]));
    return DSV3_OK;
}

Dsv3Err dsv3_pipe_exchange_post_gradient(Dsv3PipeExchange *x, int64_t micro, int64_t stage,
                                         int64_t from) {
    int k;
    DSV3_CALL(check_peer(x, from));
    DSV3_CALL(inbox_next(&x->gradients, micro, stage, (int)from, &k));
    DSV3_MPI_CALL(MPI_Irecv(x->gradients.rows[k], x->count, MPI_FLOAT, (int)from,
                            DSV3_TAG_PIPE_GRADIENT, x->comm, &x->gradients.requests[k][0]));
    return DSV3_OK;
}

Dsv3Err dsv3_pipe_exchange_wait_gradient(Dsv3PipeExchange *x, int64_t micro, int64_t stage,
                                         const float **grad) {
    int k;
    DSV3_CALL(inbox_find(&x->gradients, micro, stage, &k));
    DSV3_CALL(wait_for(x, 1, x->gradients.requests[k], x->gradients.peer[k], "gradient", micro));
    *grad = x->gradients.rows[k];
    return DSV3_OK;
}

Dsv3Err dsv3_pipe_exchange_send_gradient(Dsv3PipeExchange *x, int64_t micro, int64_t to,
                                         const float *grad) {
    DSV3_CALL(check_peer(x, to));
    int k = (int)(x->grad_sent % RING);
    DSV3_CALL(wait_for(x, 1, &x->grad_send[k], x->grad_peer[k], "gradient", micro - RING));
    memcpy(x->grad_out[k], grad, (size_t)x->count * sizeof(float));
    x->grad_peer[k] = (int)to;
    DSV3_MPI_CALL(MPI_Isend(x->grad_out[k], x->count, MPI_FLOAT, (int)to, DSV3_TAG_PIPE_GRADIENT,
                            x->comm, &x->grad_send[k]));
    x->grad_sent++;
    return DSV3_OK;
}

double dsv3_pipe_exchange_take_wait_seconds(Dsv3PipeExchange *x) {
    double s = x->wait_seconds;
    x->wait_seconds = 0;
    return s;
}
