// expert_exchange: requests, rows and results between stage ranks and expert servers.
// Legend as in expert_exchange.h; a request header is (HEADER_FIXED + El) int64: operation,
// layer, activation slot, then the rows of each of the server's El experts.
#include "expert_exchange.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "common/core/turns.h"
#include "common/comm/mpi_check.h"
#include "common/comm/tags.h"

enum { STEP_VALUES = 4 };  // per server in the step's sum: rows, computing, waiting, stop signal
enum { HEADER_FIXED = 3 }; // operation, layer, slot
// A stage rank's calls in flight at once: one per computation of DualPipeV's overlapped pair.
enum { CALLS_IN_FLIGHT = 2 };

// A stage rank's call in flight: the layer whose finish waits for it, its requests (3 per
// server) and headers (one per server), and when it was posted.
typedef struct {
    int64_t layer;
    Dsv3ExpertOp op;
    int n; // requests posted, not yet waited for; 0: the call is free
    MPI_Request *requests;
    int64_t *headers;
    double posted_at;
} Call;

struct Dsv3ExpertExchange {
    Dsv3Experts base; // first: the model's calls get &base
    MPI_Comm comm;    // duplicate of the stage's MoE communicator
    MPI_Datatype row; // D floats
    Dsv3Watch *watch;
    int rank;              // in comm: stage ranks 0 … S − 1, then the servers
    int64_t S, ep, El, D;  // stage ranks, servers, experts per server, dim
    int *job_ranks;        // (S + ep) each member's rank in the job (the watch's ranks)
    int *others;           // the job ranks of every other member
    int64_t header;        // int64 per request header: HEADER_FIXED + El
    int64_t *headers;      // stage rank: (CALLS_IN_FLIGHT, ep, header); server: (S, header)
    MPI_Request *requests; // (CALLS_IN_FLIGHT, 3 · max(S, ep))
    int64_t bytes;         // rows sent and received
    // Stage rank side: the calls in flight (parts of headers and requests) and the time the
    // rows were away.
    Call calls[CALLS_IN_FLIGHT];
    Dsv3ExpertTimes times;
    double *step_values; // (1 + STEP_VALUES · ep) the step's sum
    // Server side: the current request.
    Dsv3ExpertRequest req;
    int64_t *offsets;   // (El + 1)
    int64_t *rank_rows; // (S) rows of each stage rank
    float *staging;     // rows as they travel: stage rank 0's, then rank 1's, …
    int64_t capacity;   // rows staging holds
};

static const char *op_name(int64_t op) {
    switch (op) {
    case DSV3_EXPERT_FORWARD: return "forward";
    case DSV3_EXPERT_BACKWARD: return "backward";
    case DSV3_EXPERT_END: return "end of pass";
    }
    return "unknown";
}

static Dsv3Err wait(Dsv3ExpertExchange *x, int n, MPI_Request *requests, const int *peers,
                    int n_peers, const char *what, int64_t layer) {
    return dsv3_watch_wait(x->watch, n, requests, peers, n_peers, "%s (MoE layer %" PRId64 ")",
                           what, layer);
}

// ---- stage rank side ----

// One forward or backward call: `in` (M, D) sorted by expert as `offsets` (E + 1) says, to the
// servers; their results will arrive into `out` (M, D), each server's block in place. Returns
// once the requests are posted; remote_finish waits for them.
static Dsv3Err stage_call(Dsv3ExpertExchange *x, Dsv3ExpertOp op, int64_t layer, int64_t slot,
                          Dsv3TensorDtype dtype, float *out, const float *in,
                          const int64_t *offsets) {
    DSV3_CHECK(dtype == DSV3_TENSOR_F32, DSV3_ERR_USAGE,
               "expert servers exchange fp32 rows; layer %" PRId64 " sent another dtype", layer);
    Call *call = NULL;
    for (int c = CALLS_IN_FLIGHT - 1; c >= 0; c--)
        if (x->calls[c].n == 0) call = &x->calls[c];
    DSV3_CHECK(call != NULL, DSV3_ERR_INTERNAL,
               "expert exchange: layer %" PRId64
               " calls its experts while %d calls (layers %" PRId64 " and %" PRId64
               ") are not finished",
               layer, CALLS_IN_FLIGHT, x->calls[0].layer, x->calls[1].layer);
    call->posted_at = dsv3_log_seconds();
    MPI_Request *requests = call->requests;
    int n = 0;
    for (int64_t j = 0; j < x->ep; j++) {
        int64_t *h = call->headers + j * x->header;
        const int64_t *o = offsets + j * x->El;
        h[0] = op;
        h[1] = layer;
        h[2] = slot;
        for (int64_t e = 0; e < x->El; e++)
            h[HEADER_FIXED + e] = o[e + 1] - o[e];
        int rows = (int)(o[x->El] - o[0]), peer = (int)(x->S + j);
        DSV3_MPI_CALL(MPI_Isend(h, (int)x->header, MPI_INT64_T, peer, DSV3_TAG_EXPERT_REQUEST,
                                x->comm, &requests[n++]));
        DSV3_MPI_CALL(MPI_Isend(in + o[0] * x->D, rows, x->row, peer, DSV3_TAG_EXPERT_ROWS, x->comm,
                                &requests[n++]));
        DSV3_MPI_CALL(MPI_Irecv(out + o[0] * x->D, rows, x->row, peer, DSV3_TAG_EXPERT_RESULT,
                                x->comm, &requests[n++]));
        x->bytes +=
            x->header * (int64_t)sizeof *h + 2 * (int64_t)rows * x->D * (int64_t)sizeof(float);
    }
    call->n = n;
    call->op = op;
    call->layer = layer;
    return DSV3_OK;
}

static Dsv3Err remote_forward(Dsv3Experts *self, int64_t layer, int64_t slot, Dsv3TensorDtype dtype,
                              void *ys, void *h1, void *h3, const void *xs,
                              const int64_t *offsets) {
    (void)h1, (void)h3; // the servers keep what their backward needs
    return stage_call((Dsv3ExpertExchange *)self, DSV3_EXPERT_FORWARD, layer, slot, dtype, ys, xs,
                      offsets);
}

static Dsv3Err remote_backward(Dsv3Experts *self, int64_t layer, int64_t slot,
                               Dsv3TensorDtype dtype, void *dxs, const void *dys, const void *xs,
                               const void *h1, const void *h3, const int64_t *offsets) {
    (void)xs, (void)h1, (void)h3;
    return stage_call((Dsv3ExpertExchange *)self, DSV3_EXPERT_BACKWARD, layer, slot, dtype, dxs,
                      dys, offsets);
}

// Inside an overlapped pair (core/turns.h) the other computation takes the turn first: its
// work hides this call's time away.
static Dsv3Err remote_finish(Dsv3Experts *self, int64_t layer) {
    Dsv3ExpertExchange *x = (Dsv3ExpertExchange *)self;
    Call *call = NULL;
    for (int c = 0; c < CALLS_IN_FLIGHT; c++)
        if (x->calls[c].n > 0 && x->calls[c].layer == layer) call = &x->calls[c];
    DSV3_CHECK(call != NULL, DSV3_ERR_INTERNAL,
               "expert exchange: layer %" PRId64 " finishes a call it did not make", layer);
    dsv3_turns_yield();
    double t0 = dsv3_log_seconds();
    int n = call->n;
    call->n = 0;
    DSV3_CALL(wait(x, n, call->requests, x->job_ranks + x->S, (int)x->ep,
                   call->op == DSV3_EXPERT_FORWARD
                       ? "waits for the expert servers' outputs"
                       : "waits for the expert servers' input gradients",
                   layer));
    double t1 = dsv3_log_seconds();
    x->times.total_s += t1 - call->posted_at;
    x->times.exposed_s += t1 - t0;
    return DSV3_OK;
}

Dsv3Experts *dsv3_expert_exchange_experts(Dsv3ExpertExchange *x) { return &x->base; }

Dsv3Err dsv3_expert_exchange_end(Dsv3ExpertExchange *x) {
    int n = 0;
    for (int64_t j = 0; j < x->ep; j++) {
        int64_t *h = x->headers + j * x->header;
        memset(h, 0, (size_t)x->header * sizeof *h);
        h[0] = DSV3_EXPERT_END;
        h[1] = h[2] = -1;
        DSV3_MPI_CALL(MPI_Isend(h, (int)x->header, MPI_INT64_T, (int)(x->S + j),
                                DSV3_TAG_EXPERT_REQUEST, x->comm, &x->requests[n++]));
    }
    return wait(x, n, x->requests, x->job_ranks + x->S, (int)x->ep,
                "waits for the expert servers to take the end of the pass", -1);
}

// ---- server side ----

Dsv3Err dsv3_expert_exchange_next(Dsv3ExpertExchange *x, Dsv3ExpertRequest *req) {
    for (int64_t r = 0; r < x->S; r++)
        DSV3_MPI_CALL(MPI_Irecv(x->headers + r * x->header, (int)x->header, MPI_INT64_T, (int)r,
                                DSV3_TAG_EXPERT_REQUEST, x->comm, &x->requests[r]));
    char what[DSV3_WATCH_TEXT_CAPACITY];
    snprintf(what, sizeof what, "waits for the stage ranks' next request (the last was %s)",
             op_name(x->req.op));
    DSV3_CALL(wait(x, (int)x->S, x->requests, x->job_ranks, (int)x->S, what, x->req.layer));
    x->bytes += x->S * x->header * (int64_t)sizeof *x->headers;
    const int64_t *first = x->headers;
    memset(x->offsets, 0, (size_t)(x->El + 1) * sizeof *x->offsets);
    for (int64_t r = 0; r < x->S; r++) {
        const int64_t *h = x->headers + r * x->header;
        DSV3_CHECK(h[0] == first[0] && h[1] == first[1] && h[2] == first[2], DSV3_ERR_INTERNAL,
                   "expert server: stage rank 0 asks for %s of layer %" PRId64 " slot %" PRId64
                   " but stage rank %" PRId64 " for %s of layer %" PRId64 " slot %" PRId64,
                   op_name(first[0]), first[1], first[2], r, op_name(h[0]), h[1], h[2]);
        x->rank_rows[r] = 0;
        for (int64_t e = 0; e < x->El; e++) {
            const int64_t rows = h[HEADER_FIXED + e];
            DSV3_CHECK(rows >= 0, DSV3_ERR_INTERNAL,
                       "expert server: stage rank %" PRId64 " sent %" PRId64
                       " rows for expert %" PRId64,
                       r, rows, e);
            x->offsets[e + 1] += rows;
            x->rank_rows[r] += rows;
        }
    }
    for (int64_t e = 0; e < x->El; e++)
        x->offsets[e + 1] += x->offsets[e];
    x->req = (Dsv3ExpertRequest){.op = (Dsv3ExpertOp)first[0],
                                 .layer = first[1],
                                 .slot = first[2],
                                 .rows = x->offsets[x->El],
                                 .offsets = x->offsets};
    DSV3_CHECK(x->req.op >= DSV3_EXPERT_FORWARD && x->req.op <= DSV3_EXPERT_END, DSV3_ERR_INTERNAL,
               "expert server: unknown request %" PRId64 " from the stage ranks", first[0]);
    if (x->req.rows > x->capacity) {
        dsv3_free(x->staging);
        x->staging = NULL;
        x->capacity = 0;
        DSV3_CALL(dsv3_alloc((void **)&x->staging, (size_t)(x->req.rows * x->D) * sizeof(float),
                             "expert rows in transit"));
        x->capacity = x->req.rows;
    }
    *req = x->req;
    return DSV3_OK;
}

// Copies rows between the staging order (stage rank by stage rank, each sorted by expert) and
// the request's order (expert by expert, each in stage-rank order): to_request chooses.
static void permute(Dsv3ExpertExchange *x, float *rows, int to_request) {
    size_t row_bytes = (size_t)x->D * sizeof(float);
    int64_t staged = 0;                    // start of stage rank r's rows in staging
    int64_t *placed = x->rank_rows + x->S; // rows of each expert placed so far (El scratch)
    memset(placed, 0, (size_t)x->El * sizeof *placed);
    for (int64_t r = 0; r < x->S; r++) {
        const int64_t *counts = x->headers + r * x->header + HEADER_FIXED;
        for (int64_t e = 0, at = staged; e < x->El; e++) {
            float *request = rows + (x->offsets[e] + placed[e]) * x->D;
            float *staging = x->staging + at * x->D;
            if (counts[e] > 0)
                memcpy(to_request ? request : staging, to_request ? staging : request,
                       (size_t)counts[e] * row_bytes);
            placed[e] += counts[e];
            at += counts[e];
        }
        staged += x->rank_rows[r];
    }
}

Dsv3Err dsv3_expert_exchange_receive(Dsv3ExpertExchange *x, float *rows) {
    int64_t at = 0;
    for (int64_t r = 0; r < x->S; r++) {
        DSV3_MPI_CALL(MPI_Irecv(x->staging + at * x->D, (int)x->rank_rows[r], x->row, (int)r,
                                DSV3_TAG_EXPERT_ROWS, x->comm, &x->requests[r]));
        at += x->rank_rows[r];
    }
    x->bytes += x->req.rows * x->D * (int64_t)sizeof(float);
    DSV3_CALL(wait(x, (int)x->S, x->requests, x->job_ranks, (int)x->S,
                   x->req.op == DSV3_EXPERT_FORWARD ? "waits for the stage ranks' routed rows"
                                                    : "waits for the stage ranks' output gradients",
                   x->req.layer));
    permute(x, rows, 1);
    return DSV3_OK;
}

Dsv3Err dsv3_expert_exchange_reply(Dsv3ExpertExchange *x, const float *result) {
    permute(x, (float *)result, 0);
    int64_t at = 0;
    for (int64_t r = 0; r < x->S; r++) {
        DSV3_MPI_CALL(MPI_Isend(x->staging + at * x->D, (int)x->rank_rows[r], x->row, (int)r,
                                DSV3_TAG_EXPERT_RESULT, x->comm, &x->requests[r]));
        at += x->rank_rows[r];
    }
    x->bytes += x->req.rows * x->D * (int64_t)sizeof(float);
    return wait(x, (int)x->S, x->requests, x->job_ranks, (int)x->S,
                "waits for the stage ranks to take the experts' results", x->req.layer);
}

// ---- both ----

Dsv3Err dsv3_expert_exchange_step_sum(Dsv3ExpertExchange *x, double *sum_squares,
                                      const Dsv3ExpertServerWork *work,
                                      Dsv3ExpertServerStats *stats) {
    // [sum of squares, then (rows, computing, waiting, stop signal) of server 0, 1, …]: each
    // server fills its own four, so a sum gathers them.
    double *v = x->step_values;
    int64_t n = 1 + STEP_VALUES * x->ep;
    memset(v, 0, (size_t)n * sizeof *v);
    v[0] = *sum_squares;
    if (work) {
        double *mine = v + 1 + STEP_VALUES * (x->rank - x->S);
        mine[0] = work->rows;
        mine[1] = work->compute_s;
        mine[2] = work->idle_s;
        mine[3] = work->stop_signal;
    }
    DSV3_MPI_CALL(
        MPI_Iallreduce(MPI_IN_PLACE, v, (int)n, MPI_DOUBLE, MPI_SUM, x->comm, &x->requests[0]));
    DSV3_CALL(dsv3_watch_wait(x->watch, 1, x->requests, x->others, (int)(x->S + x->ep - 1),
                              "waits in the sum of squared gradient norms over the stage ranks "
                              "and expert servers"));
    *sum_squares = v[0];
    if (!stats) return DSV3_OK;
    *stats = (Dsv3ExpertServerStats){.servers = x->ep, .rows_min = v[1], .idle_min_s = v[3]};
    for (int64_t j = 0; j < x->ep; j++) {
        const double *w = v + 1 + STEP_VALUES * j;
        if (w[3] != 0 && stats->stop_signal == 0) stats->stop_signal = (int32_t)w[3];
        stats->rows += w[0];
        stats->rows_max = fmax(stats->rows_max, w[0]);
        stats->rows_min = fmin(stats->rows_min, w[0]);
        stats->compute_max_s = fmax(stats->compute_max_s, w[1]);
        stats->idle_min_s = fmin(stats->idle_min_s, w[2]);
    }
    return DSV3_OK;
}

Dsv3Err dsv3_expert_exchange_share_sum(Dsv3ExpertExchange *x, double *sum_squares) {
    DSV3_MPI_CALL(MPI_Ibcast(sum_squares, 1, MPI_DOUBLE, 0, x->comm, &x->requests[0]));
    return dsv3_watch_wait(x->watch, 1, x->requests, x->others, (int)(x->S + x->ep - 1),
                           "waits for the squared gradient norm summed over the pipeline stages");
}

int64_t dsv3_expert_exchange_bytes(const Dsv3ExpertExchange *x) { return x->bytes; }

Dsv3ExpertTimes dsv3_expert_exchange_take_times(Dsv3ExpertExchange *x) {
    Dsv3ExpertTimes t = x->times;
    x->times = (Dsv3ExpertTimes){0};
    return t;
}

// The job rank of every member of the MoE communicator, and of every other one.
static Dsv3Err list_members(Dsv3ExpertExchange *x, MPI_Comm job) {
    int n = (int)(x->S + x->ep);
    int *mine = NULL;
    DSV3_CALL(dsv3_calloc((void **)&mine, (size_t)n, sizeof *mine, "MoE ranks"));
    Dsv3Err err = DSV3_OK;
    MPI_Group of_comm = MPI_GROUP_NULL, of_job = MPI_GROUP_NULL;
    DSV3_MPI_CALL_GOTO(err, done, MPI_Comm_group(x->comm, &of_comm));
    DSV3_MPI_CALL_GOTO(err, done, MPI_Comm_group(job, &of_job));
    for (int r = 0; r < n; r++)
        mine[r] = r;
    DSV3_MPI_CALL_GOTO(err, done,
                       MPI_Group_translate_ranks(of_comm, n, mine, of_job, x->job_ranks));
    for (int r = 0, k = 0; r < n; r++)
        if (r != x->rank) x->others[k++] = x->job_ranks[r];
done:
    if (of_comm != MPI_GROUP_NULL) MPI_Group_free(&of_comm);
    if (of_job != MPI_GROUP_NULL) MPI_Group_free(&of_job);
    dsv3_free(mine);
    return err;
}

Dsv3Err dsv3_expert_exchange_create(Dsv3ExpertExchange **out, const Dsv3Topology *topo,
                                    const Dsv3ModelArgs *args, Dsv3Watch *watch) {
    *out = NULL;
    DSV3_CHECK(topo->moe != MPI_COMM_NULL, DSV3_ERR_USAGE,
               "expert exchange: this rank is in no MoE communicator (a job without expert "
               "servers, or the coordinator)");
    Dsv3ExpertExchange *x = NULL;
    DSV3_CALL(dsv3_calloc((void **)&x, 1, sizeof *x, "expert exchange"));
    x->base = (Dsv3Experts){remote_forward, remote_backward, remote_finish};
    x->comm = MPI_COMM_NULL;
    x->row = MPI_DATATYPE_NULL;
    x->watch = watch;
    x->ep = topo->dims.ep;
    x->S = topo->n_stage / topo->dims.pp;
    x->El = args->num_experts / x->ep;
    x->D = args->dim;
    x->header = HEADER_FIXED + x->El;
    Dsv3Err err = DSV3_OK;
    DSV3_CHECK_GOTO(err, fail, args->num_experts % x->ep == 0, DSV3_ERR_CONFIG,
                    "parallelism.expert_parallel_degree = %lld does not divide model.num_experts "
                    "= %lld: each expert server must own the same number of experts",
                    (long long)x->ep, (long long)args->num_experts);
    MPI_Request dup;
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Comm_idup(topo->moe, &x->comm, &dup));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_watch_wait(watch, 1, &dup, NULL, DSV3_WATCH_ALL_PEERS,
                                   "waits for the stage ranks and expert servers of its pipeline "
                                   "stage to open the expert exchange"));
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Comm_rank(x->comm, &x->rank));
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Type_contiguous((int)x->D, MPI_FLOAT, &x->row));
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Type_commit(&x->row));
    int64_t n = x->S + x->ep, most = x->S > x->ep ? x->S : x->ep;
    DSV3_CALL_GOTO(
        err, fail,
        dsv3_calloc((void **)&x->job_ranks, (size_t)n, sizeof *x->job_ranks, "MoE ranks"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&x->others, (size_t)n, sizeof *x->others, "MoE peers"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&x->headers, (size_t)(CALLS_IN_FLIGHT * most * x->header),
                               sizeof *x->headers, "expert requests"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&x->requests, (size_t)(CALLS_IN_FLIGHT * 3 * most),
                               sizeof *x->requests, "expert exchange requests"));
    for (int c = 0; c < CALLS_IN_FLIGHT; c++)
        x->calls[c] = (Call){.layer = -1,
                             .requests = x->requests + c * 3 * most,
                             .headers = x->headers + c * most * x->header};
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&x->offsets, (size_t)(x->El + 1), sizeof *x->offsets,
                               "expert row offsets"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&x->rank_rows, (size_t)(x->S + x->El), sizeof *x->rank_rows,
                               "expert rows per stage rank"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&x->step_values, (size_t)(1 + STEP_VALUES * x->ep),
                               sizeof *x->step_values, "expert step sums"));
    DSV3_CALL_GOTO(err, fail, list_members(x, topo->job));
    x->req.layer = -1;
    *out = x;
    return DSV3_OK;
fail:
    dsv3_expert_exchange_destroy(x);
    return err;
}

void dsv3_expert_exchange_destroy(Dsv3ExpertExchange *x) {
    if (!x) return;
    // Shutdown cannot report failures; these codes are not checked.
    if (x->row != MPI_DATATYPE_NULL) MPI_Type_free(&x->row);
    if (x->comm != MPI_COMM_NULL) MPI_Comm_free(&x->comm);
    dsv3_free(x->job_ranks);
    dsv3_free(x->others);
    dsv3_free(x->headers);
    dsv3_free(x->requests);
    dsv3_free(x->offsets);
    dsv3_free(x->rank_rows);
    dsv3_free(x->staging);
    dsv3_free(x->step_values);
    dsv3_free(x);
}
