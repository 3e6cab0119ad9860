// protocol: the communicator, the chunked point-to-point messages and the wait texts; plans,
// start-up collectives and a step's messages. The checkpoint messages are in protocol_ckpt.c.
#include "protocol.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/comm/mpi_check.h"
#include "common/comm/protocol_internal.h"
#include "common/comm/tags.h"
#include "kernels/kernels.h"

_Static_assert(sizeof(Dsv3StepPlan) <= INT_MAX && sizeof(Dsv3StepReport) <= INT_MAX &&
                   sizeof(Dsv3CkptLoadCommand) <= INT_MAX && sizeof(Dsv3TraceEvent) <= INT_MAX,
               "fixed-size messages and elements travel as one count of bytes");

Dsv3Err dsv3_protocol_create(Dsv3Protocol **out, const Dsv3Topology *topo, double init_timeout_s,
                             double train_timeout_s) {
    DSV3_CHECK(out && topo && topo->job != MPI_COMM_NULL, DSV3_ERR_USAGE,
               "dsv3_protocol_create: needs a built topology");
    *out = NULL;
    Dsv3Protocol *p = NULL;
    DSV3_CALL(dsv3_calloc((void **)&p, 1, sizeof *p, "protocol"));
    Dsv3Err err = DSV3_OK;
    p->comm = MPI_COMM_NULL;
    p->event_type = p->report_type = MPI_DATATYPE_NULL;
    p->role = topo->role;
    p->job_size = topo->job_size;
    p->n_stage = topo->n_stage;
    p->chunk = INT_MAX;
    // The error handler (MPI_ERRORS_RETURN) comes with the duplicate.
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Comm_dup(topo->job, &p->comm));
    DSV3_MPI_CALL_GOTO(err, fail,
                       MPI_Type_contiguous((int)sizeof(Dsv3TraceEvent), MPI_BYTE, &p->event_type));
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Type_commit(&p->event_type));
    DSV3_MPI_CALL_GOTO(err, fail,
                       MPI_Type_contiguous((int)sizeof(Dsv3StepReport), MPI_BYTE, &p->report_type));
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Type_commit(&p->report_type));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&p->stage_ranks, (size_t)(p->n_stage > 0 ? p->n_stage : 1),
                               sizeof *p->stage_ranks, "stage rank list"));
    for (int64_t i = 0; i < p->n_stage; i++)
        p->stage_ranks[i] = (int)(DSV3_PROTOCOL_FIRST_STAGE + i);
    Dsv3WatchOptions opt = {.init_timeout_s = init_timeout_s,
                            .train_timeout_s = train_timeout_s,
                            .poll = topo->role == DSV3_ROLE_COORDINATOR ? DSV3_POLL_IDLE
                                                                        : DSV3_POLL_BUSY,
                            .n_stage = topo->n_stage,
                            .n_expert = topo->n_expert};
    DSV3_CALL_GOTO(err, fail, dsv3_watch_create(&p->watch, p->comm, &opt));
    *out = p;
    return DSV3_OK;
fail:
    dsv3_protocol_destroy(p);
    return err;
}

void dsv3_protocol_destroy(Dsv3Protocol *p) {
    if (!p) return;
    dsv3_watch_destroy(p->watch);
    // Shutdown cannot report failures; these codes are not checked.
    if (p->event_type != MPI_DATATYPE_NULL) MPI_Type_free(&p->event_type);
    if (p->report_type != MPI_DATATYPE_NULL) MPI_Type_free(&p->report_type);
    if (p->comm != MPI_COMM_NULL) MPI_Comm_free(&p->comm);
    dsv3_free(p->stage_ranks);
    dsv3_free(p);
}

Dsv3Watch *dsv3_protocol_watch(Dsv3Protocol *p) { return p->watch; }

void dsv3_protocol_set_patience(Dsv3Protocol *p, Dsv3Patience patience) {
    dsv3_watch_set_patience(p->watch, patience);
}

void dsv3_protocol_set_chunk_limit(Dsv3Protocol *p, int64_t elems) {
    p->chunk = elems > 0 && elems <= INT_MAX ? elems : INT_MAX;
}

// ---- helpers shared with protocol_ckpt.c ----

Dsv3Err dsv3_protocol_requests_init(Dsv3ProtocolRequests *r, int64_t capacity) {
    r->n = 0;
    r->capacity = capacity;
    r->list = r->inline_list;
    DSV3_CHECK(capacity >= 0 && capacity <= INT_MAX, DSV3_ERR_INTERNAL,
               "protocol: %lld requests in one wait", (long long)capacity);
    if (capacity > DSV3_PROTOCOL_INLINE_REQUESTS)
        DSV3_CALL(
            dsv3_alloc((void **)&r->list, (size_t)capacity * sizeof *r->list, "message requests"));
    return DSV3_OK;
}

void dsv3_protocol_requests_free(Dsv3ProtocolRequests *r) {
    if (r->list != r->inline_list) dsv3_free(r->list);
    r->list = r->inline_list;
}

int64_t dsv3_protocol_chunks(const Dsv3Protocol *p, int64_t count) {
    return (count + p->chunk - 1) / p->chunk;
}

Dsv3Err dsv3_protocol_post(Dsv3Protocol *p, Dsv3ProtocolRequests *r, int sending, void *buf,
                           int64_t count, MPI_Datatype type, int64_t elem_bytes, int peer,
                           int tag) {
    DSV3_ASSERT(count >= 0 && r->n + dsv3_protocol_chunks(p, count) <= r->capacity);
    char *bytes = buf;
    for (int64_t at = 0; at < count; at += p->chunk) {
        int n = (int)(count - at < p->chunk ? count - at : p->chunk);
        MPI_Request *req = &r->list[r->n++];
        if (sending)
            DSV3_MPI_CALL(MPI_Isend(bytes + at * elem_bytes, n, type, peer, tag, p->comm, req));
        else
            DSV3_MPI_CALL(MPI_Irecv(bytes + at * elem_bytes, n, type, peer, tag, p->comm, req));
    }
    return DSV3_OK;
}

Dsv3Err dsv3_protocol_wait(Dsv3Protocol *p, Dsv3ProtocolRequests *r, const int *peers, int n_peers,
                           const char *what) {
    return dsv3_watch_wait(p->watch, r->n, r->list, peers, n_peers, "%s", what);
}

Dsv3Err dsv3_protocol_wait_one(Dsv3Protocol *p, MPI_Request *request, const int *peers, int n_peers,
                               const char *what) {
    return dsv3_watch_wait(p->watch, 1, request, peers, n_peers, "%s", what);
}

void dsv3_protocol_describe_plan(const Dsv3StepPlan *plan, char *out, size_t capacity) {
    if (plan->step == 0)
        snprintf(out, capacity, "start-up");
    else if (plan->validate)
        snprintf(out, capacity, "the validation pass after step %lld", (long long)plan->step);
    else
        snprintf(out, capacity, "step %lld", (long long)plan->step);
}

// ---- plans, peak, ready ----

static const int COORDINATOR_PEER[1] = {DSV3_PROTOCOL_COORDINATOR};

Dsv3Err dsv3_protocol_send_plan(Dsv3Protocol *p, const Dsv3StepPlan *plan) {
    DSV3_ASSERT(p->role == DSV3_ROLE_COORDINATOR);
    p->plan = *plan;
    char where[DSV3_PROTOCOL_TEXT_CAPACITY], what[DSV3_WATCH_TEXT_CAPACITY];
    dsv3_protocol_describe_plan(&p->plan, where, sizeof where);
    snprintf(what, sizeof what, "waits for every rank to take the plan of %s%s", where,
             plan->stop ? " (stop)" : "");
    MPI_Request req;
    DSV3_MPI_CALL(MPI_Ibcast(&p->plan, (int)sizeof p->plan, MPI_BYTE, DSV3_PROTOCOL_COORDINATOR,
                             p->comm, &req));
    return dsv3_protocol_wait_one(p, &req, NULL, DSV3_WATCH_ALL_PEERS, what);
}

Dsv3Err dsv3_protocol_recv_plan(Dsv3Protocol *p, Dsv3StepPlan *plan) {
    DSV3_ASSERT(p->role != DSV3_ROLE_COORDINATOR);
    char where[DSV3_PROTOCOL_TEXT_CAPACITY], what[DSV3_WATCH_TEXT_CAPACITY];
    dsv3_protocol_describe_plan(&p->plan, where, sizeof where);
    snprintf(what, sizeof what, "waits for the coordinator's next plan (the last was %s)", where);
    MPI_Request req;
    DSV3_MPI_CALL(
        MPI_Ibcast(plan, (int)sizeof *plan, MPI_BYTE, DSV3_PROTOCOL_COORDINATOR, p->comm, &req));
    DSV3_CALL(dsv3_protocol_wait_one(p, &req, COORDINATOR_PEER, 1, what));
    p->plan = *plan;
    return DSV3_OK;
}

Dsv3Err dsv3_protocol_share_peak(Dsv3Protocol *p, double local, double *best) {
    double mine = p->role == DSV3_ROLE_STAGE ? local : 0, max = 0;
    MPI_Request req;
    DSV3_MPI_CALL(
        MPI_Ireduce(&mine, &max, 1, MPI_DOUBLE, MPI_MAX, DSV3_PROTOCOL_COORDINATOR, p->comm, &req));
    DSV3_CALL(dsv3_protocol_wait_one(p, &req, NULL, DSV3_WATCH_ALL_PEERS,
                                     "waits in the start-up exchange of peak FLOPs"));
    if (best) *best = max;
    return DSV3_OK;
}

Dsv3Err dsv3_protocol_ready(Dsv3Protocol *p) {
    MPI_Request req;
    DSV3_MPI_CALL(MPI_Ibarrier(p->comm, &req));
    return dsv3_protocol_wait_one(p, &req, NULL, DSV3_WATCH_ALL_PEERS,
                                  "waits at the ready point before the first step");
}

// ---- a step's messages ----

// The int32 a part of B windows of T + 1 tokens takes.
static int64_t batch_count(Dsv3BatchPart part, int64_t B, int64_t T) {
    return part == DSV3_BATCH_WINDOWS ? B * (T + 1) : B * T;
}

Dsv3Err dsv3_protocol_send_batch(Dsv3Protocol *p, int64_t stage_index, int64_t micro,
                                 Dsv3BatchPart part, int32_t *windows, int64_t B, int64_t T) {
    DSV3_ASSERT(p->role == DSV3_ROLE_COORDINATOR && stage_index >= 0 && stage_index < p->n_stage &&
                part != DSV3_BATCH_NONE);
    // Tokens are window positions [0, T), labels [1, T + 1): row b moves to b·T, never right.
    int64_t skip = part == DSV3_BATCH_LABELS ? 1 : 0;
    for (int64_t b = 0; part != DSV3_BATCH_WINDOWS && b < B; b++)
        memmove(windows + b * T, windows + b * (T + 1) + skip, (size_t)T * sizeof *windows);
    int64_t count = batch_count(part, B, T);
    int peer = (int)(DSV3_PROTOCOL_FIRST_STAGE + stage_index);
    Dsv3ProtocolRequests r;
    DSV3_CALL(dsv3_protocol_requests_init(&r, dsv3_protocol_chunks(p, count)));
    char where[DSV3_PROTOCOL_TEXT_CAPACITY], what[DSV3_WATCH_TEXT_CAPACITY];
    dsv3_protocol_describe_plan(&p->plan, where, sizeof where);
    snprintf(what, sizeof what, "waits for stage rank %lld to take micro-batch %lld of %s",
             (long long)stage_index, (long long)micro, where);
    Dsv3Err err = dsv3_protocol_post(p, &r, 1, (void *)windows, count, MPI_INT32_T, sizeof *windows,
                                     peer, DSV3_TAG_BATCH);
    if (err == DSV3_OK) err = dsv3_protocol_wait(p, &r, &peer, 1, what);
    dsv3_protocol_requests_free(&r);
    DSV3_CALL(err);
    return DSV3_OK;
}

Dsv3Err dsv3_protocol_recv_batch(Dsv3Protocol *p, int64_t micro, Dsv3BatchPart part,
                                 int32_t *scratch, int64_t B, int64_t T, int32_t *tokens,
                                 int32_t *labels) {
    DSV3_ASSERT(part != DSV3_BATCH_NONE);
    int64_t count = batch_count(part, B, T);
    Dsv3ProtocolRequests r;
    DSV3_CALL(dsv3_protocol_requests_init(&r, dsv3_protocol_chunks(p, count)));
    char where[DSV3_PROTOCOL_TEXT_CAPACITY], what[DSV3_WATCH_TEXT_CAPACITY];
    dsv3_protocol_describe_plan(&p->plan, where, sizeof where);
    snprintf(what, sizeof what, "waits for micro-batch %lld of %s from the coordinator",
             (long long)micro, where);
    Dsv3Err err = dsv3_protocol_post(p, &r, 0, scratch, count, MPI_INT32_T, sizeof *scratch,
                                     DSV3_PROTOCOL_COORDINATOR, DSV3_TAG_BATCH);
    if (err == DSV3_OK) err = dsv3_protocol_wait(p, &r, COORDINATOR_PEER, 1, what);
    dsv3_protocol_requests_free(&r);
    DSV3_CALL(err);
    // Row b of the message: a whole window (stride T + 1), or T tokens or labels (stride T).
    int64_t stride = part == DSV3_BATCH_WINDOWS ? T + 1 : T;
    int64_t label_at = part == DSV3_BATCH_WINDOWS ? 1 : 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const int32_t *row = scratch + b * stride;
            if (part != DSV3_BATCH_LABELS) tokens[b * T + t] = row[t] < 0 ? 0 : row[t];
            if (part != DSV3_BATCH_TOKENS) {
                int32_t y = row[t + label_at];
                labels[b * T + t] = y < 0 ? DSV3_IGNORE_INDEX : y;
            }
        }
    return DSV3_OK;
}

// Point-to-point, this rank → the coordinator: `count` elements at buf, chunked.
static Dsv3Err send_to_coordinator(Dsv3Protocol *p, const void *buf, int64_t count,
                                   MPI_Datatype type, int64_t elem_bytes, int tag,
                                   const char *thing) {
    Dsv3ProtocolRequests r;
    DSV3_CALL(dsv3_protocol_requests_init(&r, dsv3_protocol_chunks(p, count)));
    char where[DSV3_PROTOCOL_TEXT_CAPACITY], what[DSV3_WATCH_TEXT_CAPACITY];
    dsv3_protocol_describe_plan(&p->plan, where, sizeof where);
    snprintf(what, sizeof what, "waits for the coordinator to take the %s of %s", thing, where);
    Dsv3Err err = dsv3_protocol_post(p, &r, 1, (void *)buf, count, type, elem_bytes,
                                     DSV3_PROTOCOL_COORDINATOR, tag);
    if (err == DSV3_OK) err = dsv3_protocol_wait(p, &r, COORDINATOR_PEER, 1, what);
    dsv3_protocol_requests_free(&r);
    DSV3_CALL(err);
    return DSV3_OK;
}

Dsv3Err dsv3_protocol_send_report(Dsv3Protocol *p, const Dsv3StepReport *report) {
    return send_to_coordinator(p, report, 1, p->report_type, sizeof *report, DSV3_TAG_REPORT,
                               "report");
}

Dsv3Err dsv3_protocol_send_expert_load(Dsv3Protocol *p, const int64_t *counts, const float *bias,
                                       int64_t n) {
    DSV3_CALL(send_to_coordinator(p, counts, n, MPI_INT64_T, sizeof *counts, DSV3_TAG_EXPERT_COUNTS,
                                  "tokens per expert"));
    return send_to_coordinator(p, bias, n, MPI_FLOAT, sizeof *bias, DSV3_TAG_EXPERT_BIAS,
                               "expert biases");
}

Dsv3Err dsv3_protocol_send_trace(Dsv3Protocol *p, const Dsv3TraceEvent *events, int64_t count) {
    return send_to_coordinator(p, events, count, p->event_type, sizeof *events, DSV3_TAG_TRACE,
                               "trace events");
}

Dsv3Err dsv3_protocol_recv_reports(Dsv3Protocol *p, const Dsv3StepPlan *plan,
                                   Dsv3StepReport *reports, int64_t *counts, float *bias,
                                   int64_t n) {
    DSV3_ASSERT(p->role == DSV3_ROLE_COORDINATOR);
    int load = (plan->flags & DSV3_PLAN_EXPERT_LOAD) != 0;
    Dsv3ProtocolRequests r;
    DSV3_CALL(
        dsv3_protocol_requests_init(&r, p->n_stage + (load ? 2 * dsv3_protocol_chunks(p, n) : 0)));
    Dsv3Err err = DSV3_OK;
    for (int64_t i = 0; i < p->n_stage; i++)
        DSV3_CALL_GOTO(err, done,
                       dsv3_protocol_post(p, &r, 0, &reports[i], 1, p->report_type, sizeof *reports,
                                          p->stage_ranks[i], DSV3_TAG_REPORT));
    if (load) {
        DSV3_CALL_GOTO(err, done,
                       dsv3_protocol_post(p, &r, 0, counts, n, MPI_INT64_T, sizeof *counts,
                                          DSV3_PROTOCOL_FIRST_STAGE, DSV3_TAG_EXPERT_COUNTS));
        DSV3_CALL_GOTO(err, done,
                       dsv3_protocol_post(p, &r, 0, bias, n, MPI_FLOAT, sizeof *bias,
                                          DSV3_PROTOCOL_FIRST_STAGE, DSV3_TAG_EXPERT_BIAS));
    }
    char where[DSV3_PROTOCOL_TEXT_CAPACITY], what[DSV3_WATCH_TEXT_CAPACITY];
    dsv3_protocol_describe_plan(plan, where, sizeof where);
    snprintf(what, sizeof what, "waits for the reports of %s from %lld stage rank(s)", where,
             (long long)p->n_stage);
    DSV3_CALL_GOTO(err, done, dsv3_protocol_wait(p, &r, p->stage_ranks, (int)p->n_stage, what));
done:
    dsv3_protocol_requests_free(&r);
    return err;
}

Dsv3Err dsv3_protocol_recv_traces(Dsv3Protocol *p, Dsv3TraceEvent *const *events,
                                  const int64_t *counts) {
    DSV3_ASSERT(p->role == DSV3_ROLE_COORDINATOR);
    int64_t chunks = 0;
    for (int64_t i = 0; i < p->n_stage; i++) {
        DSV3_CHECK(counts[i] >= 0, DSV3_ERR_INTERNAL, "stage rank %lld reported %lld trace events",
                   (long long)i, (long long)counts[i]);
        chunks += dsv3_protocol_chunks(p, counts[i]);
    }
    Dsv3ProtocolRequests r;
    DSV3_CALL(dsv3_protocol_requests_init(&r, chunks));
    Dsv3Err err = DSV3_OK;
    for (int64_t i = 0; i < p->n_stage; i++)
        DSV3_CALL_GOTO(err, done,
                       dsv3_protocol_post(p, &r, 0, events[i], counts[i], p->event_type,
                                          sizeof **events, p->stage_ranks[i], DSV3_TAG_TRACE));
    char where[DSV3_PROTOCOL_TEXT_CAPACITY], what[DSV3_WATCH_TEXT_CAPACITY];
    dsv3_protocol_describe_plan(&p->plan, where, sizeof where);
    snprintf(what, sizeof what, "waits for the trace events of %s", where);
    DSV3_CALL_GOTO(err, done, dsv3_protocol_wait(p, &r, p->stage_ranks, (int)p->n_stage, what));
done:
    dsv3_protocol_requests_free(&r);
    return err;
}
