// Multi-rank test of comm/protocol and comm/watch on 4 ranks (the coordinator and 3 stage ranks,
// dp_shard 3).
//
// Part 1, the messages: a plan, token windows, reports with the expert load, trace events (with
// a chunk limit of 7 elements, so that every array travels in several chunks with an uneven
// last one), the peak exchange, the agreement, the gather of shard descriptions, the checkpoint
// commands and the ready point, each checked against what the sender put in.
//
// Part 2, the deadlines (comm.train_timeout_seconds = 1 s here), each a situation of training:
//   A. stage rank 2 sleeps (computes, and so answers no ping) while every other rank waits in a
//      collective with it: all of them fail within the deadline plus the grace period, naming
//      stage rank 2 and nobody else.
//   B. stage rank 1 stops itself with SIGSTOP; stage ranks 0 and 2 wait for it in the
//      data-parallel all-reduce, the coordinator for its report. All three name stage rank 1
//      alone, and the coordinator's message says that stage rank 0 is alive and waits in the
//      all-reduce: the ping tells the stopped rank from the waiting one.
//   C. nobody is silent, but the coordinator waits for reports while the stage ranks wait in an
//      agreement it never joins: every rank fails saying that no rank is silent.
// After each situation the test resolves it (the sleeper wakes, the coordinator sends SIGCONT,
// the coordinator joins the agreement) and every rank meets at the ready point, with the
// start-up deadline, before the next one. The silent rank stays silent until every rank that
// waits for it has timed out and said so over MPI_COMM_WORLD (outside the protocol), so that a
// loaded machine cannot make it answer early.
//
// Exits 0 when every check passed on every rank.
#include <mpi.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "common/core/alloc.h"
#include "common/core/error.h"
#include "common/core/log.h"
#include "common/comm/collectives_mpi.h"
#include "common/comm/protocol.h"
#include "common/comm/topology.h"
#include "kernels/kernels.h"

enum { N_STAGE = 3, JOB_SIZE = 1 + N_STAGE };
// Part 1's sizes: BATCH windows of WINDOW_T + 1 tokens per micro-batch, experts × layers, trace
// events of stage rank i are TRACE_BASE + TRACE_STEP × i.
enum { BATCH = 5, WINDOW_T = 9, WINDOW_COUNT = BATCH * (WINDOW_T + 1), LOAD_COUNT = 23 };
enum { TRACE_BASE = 3, TRACE_STEP = 5, CHUNK = 7 };
enum { MAX_TRACE = TRACE_BASE + TRACE_STEP * N_STAGE, TEXT = 64, GRAD_COUNT = 10 };

static const double TRAIN_TIMEOUT_S = 1.0;
static const double INIT_TIMEOUT_S = 60.0;
// A timed-out wait returns within the deadline plus the grace period, plus this much for a
// loaded machine.
static const double SLACK_S = 1.5;
// Tag of the test's own messages on MPI_COMM_WORLD: "my timed-out wait is over".
enum { TAG_DONE = 1 };

typedef struct {
    int rank;
    int failures;
} Check;

#define EXPECT(chk, cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "[job rank %d] line %d: ", (chk)->rank, __LINE__);                     \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            (chk)->failures++;                                                                     \
        }                                                                                          \
    } while (0)

static void expect_ok(Check *chk, Dsv3Err err, const char *what) {
    EXPECT(chk, err == DSV3_OK, "%s failed: %s", what, dsv3_error_text());
    dsv3_error_clear();
}

static void sleep_s(double seconds) {
    struct timespec t = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&t, &t) != 0) {
    }
}

static int32_t window_value(int64_t stage, int64_t micro, int64_t i) {
    return (int32_t)(stage * 100000 + micro * 1000 + i);
}

// ---- part 1 ----

static void part_messages(Dsv3Protocol *p, const Dsv3Topology *t, Check *chk) {
    int coordinator = t->role == DSV3_ROLE_COORDINATOR;
    int64_t me = t->stage_index;
    dsv3_protocol_set_chunk_limit(p, CHUNK);

    Dsv3StepPlan sent = {.step = 1,
                         .micro_batches = 2,
                         .lr = 0.25,
                         .grad_scale = 0.5,
                         .eos_id = 7,
                         .flags = DSV3_PLAN_EXPERT_LOAD | DSV3_PLAN_PROFILE};
    Dsv3StepPlan plan = sent;
    if (coordinator)
        expect_ok(chk, dsv3_protocol_send_plan(p, &sent), "send_plan");
    else {
        memset(&plan, 0, sizeof plan);
        expect_ok(chk, dsv3_protocol_recv_plan(p, &plan), "recv_plan");
        EXPECT(chk, memcmp(&plan, &sent, sizeof plan) == 0, "the plan arrived changed");
    }

    // Stage rank r takes the whole windows, their tokens or their labels (r = 0, 1, 2), in
    // chunks of CHUNK int32; the last window position of the rank's first window is padding.
    int32_t windows[WINDOW_COUNT], tokens[BATCH * WINDOW_T], labels[BATCH * WINDOW_T];
    static const Dsv3BatchPart parts[N_STAGE] = {DSV3_BATCH_WINDOWS, DSV3_BATCH_TOKENS,
                                                 DSV3_BATCH_LABELS};
    for (int64_t micro = 0; micro < plan.micro_batches; micro++) {
        if (coordinator) {
            for (int64_t r = 0; r < N_STAGE; r++) {
                for (int64_t i = 0; i < WINDOW_COUNT; i++)
                    windows[i] = window_value(r, micro, i);
                windows[WINDOW_T] = DSV3_PAD_TOKEN;
                expect_ok(chk,
                          dsv3_protocol_send_batch(p, r, micro, parts[r], windows, BATCH, WINDOW_T),
                          "send_batch");
            }
        } else {
            Dsv3BatchPart part = parts[me];
            for (int64_t i = 0; i < BATCH * WINDOW_T; i++)
                tokens[i] = labels[i] = -7; // untouched where the part does not reach
            expect_ok(
                chk,
                dsv3_protocol_recv_batch(p, micro, part, windows, BATCH, WINDOW_T, tokens, labels),
                "recv_batch");
            for (int64_t b = 0; b < BATCH; b++)
                for (int64_t k = 0; k < WINDOW_T; k++) {
                    int64_t at = b * (WINDOW_T + 1) + k, i = b * WINDOW_T + k;
                    int32_t token = part == DSV3_BATCH_LABELS ? -7 : window_value(me, micro, at);
                    int32_t label = part == DSV3_BATCH_TOKENS ? -7
                                    : at + 1 == WINDOW_T      ? DSV3_IGNORE_INDEX
                                                              : window_value(me, micro, at + 1);
                    EXPECT(chk, tokens[i] == token && labels[i] == label,
                           "position %lld of window %lld of micro-batch %lld: token %d label %d, "
                           "expected %d and %d",
                           (long long)k, (long long)b, (long long)micro, tokens[i], labels[i],
                           token, label);
                }
        }
    }

    int64_t counts[LOAD_COUNT];
    float bias[LOAD_COUNT];
    Dsv3TraceEvent events[N_STAGE][MAX_TRACE];
    if (!coordinator) {
        Dsv3StepReport report = {.loss_sum = 1.5 * (double)me,
                                 .n_labels = 10 + me,
                                 .n_trace_events = TRACE_BASE + TRACE_STEP * me};
        expect_ok(chk, dsv3_protocol_send_report(p, &report), "send_report");
        if (me == 0) {
            for (int i = 0; i < LOAD_COUNT; i++)
                counts[i] = ((int64_t)1 << 40) + i, bias[i] = 0.5f * (float)i;
            expect_ok(chk, dsv3_protocol_send_expert_load(p, counts, bias, LOAD_COUNT),
                      "send_expert_load");
        }
        for (int64_t i = 0; i < report.n_trace_events; i++)
            events[0][i] = (Dsv3TraceEvent){.phase = (int32_t)i,
                                            .index = (int32_t)me,
                                            .stage = (int32_t)(i % 3) - 1,
                                            .start = (double)i,
                                            .seconds = 0.125 * (double)me};
        expect_ok(chk, dsv3_protocol_send_trace(p, events[0], report.n_trace_events), "send_trace");
    } else {
        Dsv3StepReport reports[N_STAGE];
        memset(reports, 0, sizeof reports);
        memset(counts, 0, sizeof counts);
        memset(bias, 0, sizeof bias);
        expect_ok(chk, dsv3_protocol_recv_reports(p, &plan, reports, counts, bias, LOAD_COUNT),
                  "recv_reports");
        int64_t n_events[N_STAGE];
        Dsv3TraceEvent *buffers[N_STAGE];
        for (int64_t r = 0; r < N_STAGE; r++) {
            EXPECT(chk, reports[r].loss_sum == 1.5 * (double)r && reports[r].n_labels == 10 + r,
                   "report of stage rank %lld: loss_sum %g, n_labels %lld", (long long)r,
                   reports[r].loss_sum, (long long)reports[r].n_labels);
            n_events[r] = reports[r].n_trace_events;
            buffers[r] = events[r];
            EXPECT(chk, n_events[r] == TRACE_BASE + TRACE_STEP * r, "stage rank %lld: %lld events",
                   (long long)r, (long long)n_events[r]);
        }
        for (int i = 0; i < LOAD_COUNT; i++)
            EXPECT(chk, counts[i] == ((int64_t)1 << 40) + i && bias[i] == 0.5f * (float)i,
                   "expert load %d is %lld, %g", i, (long long)counts[i], (double)bias[i]);
        memset(events, 0, sizeof events);
        expect_ok(chk, dsv3_protocol_recv_traces(p, buffers, n_events), "recv_traces");
        for (int64_t r = 0; r < N_STAGE; r++)
            for (int64_t i = 0; i < n_events[r]; i++)
                EXPECT(chk,
                       events[r][i].phase == (int32_t)i && events[r][i].index == (int32_t)r &&
                           events[r][i].stage == (int32_t)(i % 3) - 1 &&
                           events[r][i].start == (double)i &&
                           events[r][i].seconds == 0.125 * (double)r,
                       "trace event %lld of stage rank %lld", (long long)i, (long long)r);
    }

    double best = -1;
    expect_ok(chk, dsv3_protocol_share_peak(p, 1.5 + (double)me, &best), "share_peak");
    if (coordinator) EXPECT(chk, best == 1.5 + (N_STAGE - 1), "best peak %g", best);

    int all_ok = -1;
    expect_ok(chk, dsv3_protocol_agree(p, me != 1, &all_ok), "agree");
    EXPECT(chk, all_ok == 0, "one rank failed, yet the agreement is %d", all_ok);
    expect_ok(chk, dsv3_protocol_agree(p, 1, &all_ok), "agree");
    EXPECT(chk, all_ok == 1, "every rank succeeded, yet the agreement is %d", all_ok);

    char mine[TEXT];
    snprintf(mine, sizeof mine, coordinator ? "" : "shards of stage rank %lld", (long long)me);
    char **all = NULL;
    expect_ok(chk, dsv3_protocol_gather_descriptions(p, mine, coordinator ? &all : NULL),
              "gather_descriptions");
    if (coordinator && all) {
        EXPECT(chk, all[0][0] == '\0', "the coordinator's description is '%s'", all[0]);
        for (int r = 1; r < JOB_SIZE; r++) {
            snprintf(mine, sizeof mine, "shards of stage rank %d", r - 1);
            EXPECT(chk, strcmp(all[r], mine) == 0, "description %d is '%s'", r, all[r]);
        }
        dsv3_free(all[0]);
        dsv3_free(all);
    }

    Dsv3CkptSaveCommand save = {.step = 5, .model_only = 1};
    Dsv3CkptLoadCommand load = {.source = DSV3_CKPT_LOAD_HF, .model_only = 1, .step = 9};
    snprintf(load.path, sizeof load.path, "/some/checkpoint/step-9");
    dsv3_protocol_set_patience(p, DSV3_PATIENCE_TRAIN);
    if (coordinator) {
        expect_ok(chk, dsv3_protocol_send_save(p, &save), "send_save");
        expect_ok(chk, dsv3_protocol_send_load(p, &load), "send_load");
    } else {
        Dsv3CkptSaveCommand got_save = {0};
        Dsv3CkptLoadCommand got_load = {0};
        expect_ok(chk, dsv3_protocol_recv_save(p, &got_save), "recv_save");
        expect_ok(chk, dsv3_protocol_recv_load(p, &got_load), "recv_load");
        EXPECT(chk, got_save.step == 5 && got_save.model_only == 1, "save command changed");
        EXPECT(chk, memcmp(&got_load, &load, sizeof load) == 0, "load command changed");
    }
    // A save switches to the start-up deadline, which a save may need.
    EXPECT(chk, dsv3_watch_patience(dsv3_protocol_watch(p)) == DSV3_PATIENCE_INIT,
           "a save command left the training deadline");
    expect_ok(chk, dsv3_protocol_ready(p), "ready");
    dsv3_protocol_set_chunk_limit(p, 0);
}

// ---- part 2 ----

// Checks a timed-out wait: DSV3_ERR_TIMEOUT after [deadline, deadline + grace + slack] seconds,
// the silent ranks named exactly `silent` (NULL: "no rank is silent"), and `also` (if any) in
// the message.
static void expect_timeout(Check *chk, Dsv3Err err, double seconds, const char *silent,
                           const char *also) {
    const char *msg = dsv3_error_message();
    EXPECT(chk, err == DSV3_ERR_TIMEOUT, "expected a timeout, got %s: %s", dsv3_error_name(err),
           msg);
    if (err != DSV3_ERR_TIMEOUT) return;
    EXPECT(chk,
           seconds >= TRAIN_TIMEOUT_S &&
               seconds <= TRAIN_TIMEOUT_S + DSV3_WATCH_GRACE_SECONDS + SLACK_S,
           "the timeout took %.2f s (deadline %g s, grace %g s)", seconds, TRAIN_TIMEOUT_S,
           DSV3_WATCH_GRACE_SECONDS);
    if (silent) {
        char named[512] = "";
        const char *end = strstr(msg, " has not answered");
        if (!end) end = strstr(msg, " have not answered");
        size_t n = end ? (size_t)(end - msg) : 0;
        if (n >= sizeof named) n = sizeof named - 1;
        memcpy(named, msg, n);
        named[n] = '\0';
        EXPECT(chk, end && strcmp(named, silent) == 0, "expected '%s' alone named silent: %s",
               silent, msg);
        EXPECT(chk, strstr(msg, "comm.train_timeout_seconds = 1"), "no deadline named: %s", msg);
    } else {
        EXPECT(chk, strstr(msg, "no rank is silent") == msg, "expected no silent rank: %s", msg);
    }
    if (also) EXPECT(chk, strstr(msg, also) != NULL, "expected '%s' in: %s", also, msg);
    if (chk->rank == 0) printf("  [job rank 0] %s\n", msg);
    dsv3_error_clear();
}

// Every rank meets, with the start-up deadline, before the next situation.
static void resync(Dsv3Protocol *p, Check *chk) {
    dsv3_protocol_set_patience(p, DSV3_PATIENCE_INIT);
    expect_ok(chk, dsv3_protocol_ready(p), "ready");
    dsv3_protocol_set_patience(p, DSV3_PATIENCE_TRAIN);
}

// A: stage rank 2 (job rank 3) computes for longer than the deadline and the grace period.
static void situation_sleeper(Dsv3Protocol *p, const Dsv3Topology *t, Check *chk) {
    int all_ok = 0;
    if (t->stage_index == 2) {
        sleep_s(TRAIN_TIMEOUT_S + DSV3_WATCH_GRACE_SECONDS);
        // Still away (blocked outside the protocol) until the others have timed out.
        for (int r = 0; r < JOB_SIZE; r++)
            if (r != t->job_rank)
                MPI_Recv(NULL, 0, MPI_BYTE, r, TAG_DONE, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        dsv3_protocol_set_patience(p, DSV3_PATIENCE_INIT);
        expect_ok(chk, dsv3_protocol_agree(p, 1, &all_ok), "the sleeper's agreement");
    } else {
        double start = dsv3_log_seconds();
        Dsv3Err err = dsv3_protocol_agree(p, 1, &all_ok);
        const char *also = t->stage_index == 0 ? NULL
                                               : "stage rank 0 (job rank 1) is alive and waits in "
                                                 "the checkpoint agreement";
        expect_timeout(chk, err, dsv3_log_seconds() - start, "stage rank 2 (job rank 3)", also);
        MPI_Send(NULL, 0, MPI_BYTE, 3, TAG_DONE, MPI_COMM_WORLD);
    }
    resync(p, chk);
}

// B: stage rank 1 (job rank 2) stops; the others wait for it in the all-reduce or its report.
static void situation_stopped(Dsv3Protocol *p, const Dsv3Topology *t, Dsv3CollectivesMpi *coll,
                              const pid_t *pids, Dsv3StepReport *reports, Check *chk) {
    float grads[GRAD_COUNT] = {0};
    Dsv3StepPlan plan = {.step = 1};
    if (t->role == DSV3_ROLE_COORDINATOR) {
        double start = dsv3_log_seconds();
        Dsv3Err err = dsv3_protocol_recv_reports(p, &plan, reports, NULL, NULL, 0);
        expect_timeout(chk, err, dsv3_log_seconds() - start, "stage rank 1 (job rank 2)",
                       "stage rank 0 (job rank 1) is alive and waits in the all-reduce over dp "
                       "(3 ranks) of the gradients of step 1");
        for (int r = 1; r < JOB_SIZE; r++)
            if (r != 2) MPI_Recv(NULL, 0, MPI_BYTE, r, TAG_DONE, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        EXPECT(chk, kill(pids[2], SIGCONT) == 0, "SIGCONT to stage rank 1 failed");
    } else {
        Dsv3Collectives *c = dsv3_collectives_mpi_interface(coll);
        Dsv3StepReport report = {.n_labels = 1};
        if (t->stage_index == 1) {
            raise(SIGSTOP); // until the coordinator's SIGCONT
            dsv3_protocol_set_patience(p, DSV3_PATIENCE_INIT);
        }
        expect_ok(chk, dsv3_protocol_send_report(p, &report), "send_report");
        dsv3_collectives_mpi_set_context(coll, "the gradients of step 1");
        double start = dsv3_log_seconds();
        Dsv3Err err =
            c->all_reduce(c, DSV3_GROUP_DP, grads, GRAD_COUNT, DSV3_ELEM_F32, DSV3_REDUCE_SUM);
        if (t->stage_index == 1)
            expect_ok(chk, err, "the all-reduce after SIGCONT");
        else {
            expect_timeout(chk, err, dsv3_log_seconds() - start, "stage rank 1 (job rank 2)",
                           "is alive and waits in the all-reduce over dp (3 ranks)");
            MPI_Send(NULL, 0, MPI_BYTE, 0, TAG_DONE, MPI_COMM_WORLD);
        }
        dsv3_collectives_mpi_set_context(coll, NULL);
    }
    resync(p, chk);
}

// C: everyone answers, but the coordinator and the stage ranks wait in calls that do not match.
static void situation_mismatch(Dsv3Protocol *p, const Dsv3Topology *t, Dsv3StepReport *reports,
                               Check *chk) {
    Dsv3StepPlan plan = {.step = 2};
    int all_ok = 0;
    double start = dsv3_log_seconds();
    if (t->role == DSV3_ROLE_COORDINATOR) {
        Dsv3Err err = dsv3_protocol_recv_reports(p, &plan, reports, NULL, NULL, 0);
        // The stage ranks answer from their agreement or, timed out already, from the wait
        // below.
        expect_timeout(chk, err, dsv3_log_seconds() - start, NULL,
                       "stage rank 2 (job rank 3) is alive and waits");
        for (int r = 1; r < JOB_SIZE; r++)
            MPI_Send(NULL, 0, MPI_BYTE, r, TAG_DONE, MPI_COMM_WORLD);
        dsv3_protocol_set_patience(p, DSV3_PATIENCE_INIT);
        expect_ok(chk, dsv3_protocol_agree(p, 1, &all_ok), "the late agreement");
    } else {
        Dsv3Err err = dsv3_protocol_agree(p, 1, &all_ok);
        expect_timeout(chk, err, dsv3_log_seconds() - start, NULL,
                       "the coordinator (job rank 0) is alive and waits for the reports");
        // The report only once the coordinator has timed out too; meanwhile this rank waits
        // under the watch, so that it answers the coordinator's pings.
        dsv3_protocol_set_patience(p, DSV3_PATIENCE_INIT);
        MPI_Request done;
        MPI_Irecv(NULL, 0, MPI_BYTE, 0, TAG_DONE, MPI_COMM_WORLD, &done);
        expect_ok(chk,
                  dsv3_watch_wait(dsv3_protocol_watch(p), 1, &done, NULL, DSV3_WATCH_ALL_PEERS,
                                  "waits for the coordinator's timeout"),
                  "waiting for the coordinator's timeout");
        Dsv3StepReport report = {.n_labels = 2};
        expect_ok(chk, dsv3_protocol_send_report(p, &report), "the late report");
    }
    resync(p, chk);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int job_rank = 0, job_size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &job_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &job_size);
    dsv3_log_init("test_protocol", job_rank);
    if (job_size != JOB_SIZE) {
        if (job_rank == 0) fprintf(stderr, "test_protocol: run it on %d ranks\n", JOB_SIZE);
        MPI_Finalize();
        return 2;
    }
    Check chk = {.rank = job_rank};
    Dsv3Role role = job_rank == 0 ? DSV3_ROLE_COORDINATOR : DSV3_ROLE_STAGE;
    Dsv3ParallelDims dims = {1, 1, N_STAGE, 1, 1, 1};
    Dsv3Topology topo;
    Dsv3Protocol *p = NULL;
    Dsv3CollectivesMpi *coll = NULL;
    pid_t pids[JOB_SIZE], mine = getpid();
    MPI_Allgather(&mine, sizeof mine, MPI_BYTE, pids, sizeof mine, MPI_BYTE, MPI_COMM_WORLD);
    // Reports of part 2 arrive into receives its timeouts left pending: they outlive them.
    static Dsv3StepReport late_reports[2][N_STAGE];
    expect_ok(&chk, dsv3_topology_create(MPI_COMM_WORLD, role, &dims, &topo), "topology");
    expect_ok(&chk, dsv3_protocol_create(&p, &topo, INIT_TIMEOUT_S, TRAIN_TIMEOUT_S), "protocol");
    if (role == DSV3_ROLE_STAGE)
        expect_ok(&chk, dsv3_collectives_mpi_create(&coll, &topo, dsv3_protocol_watch(p)),
                  "collectives");
    int ready = chk.failures == 0;
    MPI_Allreduce(MPI_IN_PLACE, &ready, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (ready) {
        part_messages(p, &topo, &chk);
        if (job_rank == 0) printf("messages: checked\n");
        dsv3_protocol_set_patience(p, DSV3_PATIENCE_TRAIN);
        situation_sleeper(p, &topo, &chk);
        situation_stopped(p, &topo, coll, pids, late_reports[0], &chk);
        situation_mismatch(p, &topo, late_reports[1], &chk);
    }
    dsv3_collectives_mpi_destroy(coll);
    dsv3_protocol_destroy(p);
    dsv3_topology_destroy(&topo);
    int failures = chk.failures;
    MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (job_rank == 0) printf("test_protocol: %d failure(s)\n", failures);
    MPI_Finalize();
    return failures == 0 ? 0 : 1;
}
