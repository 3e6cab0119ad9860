// watch: deadline waits and liveness pings; see watch.h.
#include "watch.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "common/comm/mpi_check.h"
#include "common/comm/tags.h"

// The coordinator sleeps IDLE_SLEEP_NS between polls: ~3% of a core, and a step is never
// delayed by more than that. A stage rank polls tightly for BUSY_SPIN_SECONDS, where a
// collective among ranks that arrive together ends, then sleeps BUSY_SLEEP_NS: short, because a
// non-blocking collective only progresses while MPI_Test is called.
static const long IDLE_SLEEP_NS = 1000000;
static const double BUSY_SPIN_SECONDS = 0.005;
static const long BUSY_SLEEP_NS = 50000;
// While waiting for answers to pings.
static const long PROBE_SLEEP_NS = 1000000;

enum {
    NAMED_MAX = 4,           // ranks named per kind (silent, alive) in a message; the rest counted
    RANK_NAME_CAPACITY = 64, // "expert server 123456 (job rank 1234567)"
    MESSAGE_CAPACITY = 3072, // NAMED_MAX × 2 names and answers; the error record shows 4096
};

// What a rank answers: whether its own wait timed out too.
typedef enum { PONG_WAITING = 0, PONG_TIMED_OUT = 1 } PongState;

typedef struct {
    int32_t round; // the ping's round: answers to an earlier round are stale
    int32_t state; // PongState
    char what[DSV3_WATCH_TEXT_CAPACITY];
} Pong;

// Where a rank stands in a probe.
typedef enum { PROBE_SKIP = 0, PROBE_TO_PING, PROBE_PINGED, PROBE_ANSWERED, PROBE_SILENT } Probe;

struct Dsv3Watch {
    MPI_Comm comm;
    int rank, size;
    Dsv3WatchOptions opt;
    Dsv3Patience patience;
    int timed_out;                        // this rank's current wait timed out
    char doing[DSV3_WATCH_TEXT_CAPACITY]; // what this rank waits for (the answer to a ping)
    int32_t round;                        // of this rank's last probe
    int32_t ping_in;                      // buffer of the posted ping receive
    MPI_Request ping_recv;
    int32_t *ping_out;       // (size) round sent to each rank
    MPI_Request *ping_sends; // (size)
    Pong *pong_out;          // (size) last answer to each rank
    MPI_Request *pong_sends; // (size)
    int keep_ping_out;       // a ping send could not be completed: its buffer must outlive us
};

static void pause_ns(long ns) {
    const struct timespec pause = {0, ns};
    nanosleep(&pause, NULL);
}

static Dsv3Err watch_post_ping_recv(Dsv3Watch *w) {
    DSV3_MPI_CALL(MPI_Irecv(&w->ping_in, 1, MPI_INT32_T, MPI_ANY_SOURCE, DSV3_TAG_PING, w->comm,
                            &w->ping_recv));
    return DSV3_OK;
}

Dsv3Err dsv3_watch_create(Dsv3Watch **out, MPI_Comm comm, const Dsv3WatchOptions *opt) {
    DSV3_CHECK(out && opt && comm != MPI_COMM_NULL, DSV3_ERR_USAGE,
               "dsv3_watch_create: needs a communicator, options and an output");
    DSV3_CHECK(opt->init_timeout_s > 0 && opt->train_timeout_s > 0 && opt->grace_s >= 0,
               DSV3_ERR_USAGE, "watch: timeouts must be positive (init %g s, train %g s)",
               opt->init_timeout_s, opt->train_timeout_s);
    *out = NULL;
    Dsv3Watch *w = NULL;
    DSV3_CALL(dsv3_calloc((void **)&w, 1, sizeof *w, "watch"));
    Dsv3Err err = DSV3_OK;
    w->comm = comm;
    w->opt = *opt;
    if (w->opt.grace_s == 0) w->opt.grace_s = DSV3_WATCH_GRACE_SECONDS;
    w->patience = DSV3_PATIENCE_INIT;
    w->ping_recv = MPI_REQUEST_NULL;
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Comm_rank(comm, &w->rank));
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Comm_size(comm, &w->size));
    size_t n = (size_t)w->size;
    DSV3_CALL_GOTO(err, fail, dsv3_calloc((void **)&w->ping_out, n, sizeof *w->ping_out, "pings"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&w->ping_sends, n, sizeof *w->ping_sends, "ping sends"));
    DSV3_CALL_GOTO(err, fail, dsv3_calloc((void **)&w->pong_out, n, sizeof *w->pong_out, "pongs"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&w->pong_sends, n, sizeof *w->pong_sends, "pong sends"));
    for (size_t r = 0; r < n; r++)
        w->ping_sends[r] = w->pong_sends[r] = MPI_REQUEST_NULL;
    DSV3_CALL_GOTO(err, fail, watch_post_ping_recv(w));
    *out = w;
    return DSV3_OK;
fail:
    dsv3_watch_destroy(w);
    return err;
}

void dsv3_watch_destroy(Dsv3Watch *w) {
    if (!w) return;
    // Shutdown cannot report failures; the codes below are not checked. A ping that arrived
    // after the last poll makes the cancel fail and the wait complete it: nobody expects its
    // answer any more (the pinging rank ends the job).
    if (w->ping_recv != MPI_REQUEST_NULL) {
        MPI_Cancel(&w->ping_recv);
        MPI_Wait(&w->ping_recv, MPI_STATUS_IGNORE);
    }
    // Answers are small enough to be sent eagerly: they complete without the receiver.
    for (int r = 0; w->pong_sends && r < w->size; r++)
        if (w->pong_sends[r] != MPI_REQUEST_NULL) MPI_Wait(&w->pong_sends[r], MPI_STATUS_IGNORE);
    // A ping to a stopped rank may never complete: after a grace period it is released to MPI,
    // which may still read its buffer, so that buffer is then kept.
    double start = dsv3_log_seconds();
    for (int r = 0; w->ping_sends && r < w->size; r++)
        while (w->ping_sends[r] != MPI_REQUEST_NULL) {
            int done = 0;
            if (MPI_Test(&w->ping_sends[r], &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || done) break;
            if (dsv3_log_seconds() - start > w->opt.grace_s) {
                MPI_Request_free(&w->ping_sends[r]);
                w->keep_ping_out = 1;
                break;
            }
            pause_ns(PROBE_SLEEP_NS);
        }
    if (!w->keep_ping_out) dsv3_free(w->ping_out);
    dsv3_free(w->ping_sends);
    dsv3_free(w->pong_out);
    dsv3_free(w->pong_sends);
    dsv3_free(w);
}

void dsv3_watch_set_patience(Dsv3Watch *w, Dsv3Patience patience) { w->patience = patience; }

Dsv3Patience dsv3_watch_patience(const Dsv3Watch *w) { return w->patience; }

double dsv3_watch_timeout_seconds(const Dsv3Watch *w) {
    return w->patience == DSV3_PATIENCE_INIT ? w->opt.init_timeout_s : w->opt.train_timeout_s;
}

static const char *watch_timeout_key(const Dsv3Watch *w) {
    return w->patience == DSV3_PATIENCE_INIT ? "comm.init_timeout_seconds"
                                             : "comm.train_timeout_seconds";
}

void dsv3_watch_describe_rank(const Dsv3Watch *w, int rank, char *out, size_t capacity) {
    int64_t S = w->opt.n_stage, E = w->opt.n_expert;
    if (rank == 0)
        snprintf(out, capacity, "the coordinator (job rank 0)");
    else if (rank >= 1 && rank <= S)
        snprintf(out, capacity, "stage rank %d (job rank %d)", rank - 1, rank);
    else if (rank > S && rank <= S + E)
        snprintf(out, capacity, "expert server %lld (job rank %d)", (long long)(rank - 1 - S),
                 rank);
    else
        snprintf(out, capacity, "job rank %d", rank);
}

// Answers one ping from `to`.
static Dsv3Err watch_answer(Dsv3Watch *w, int to, int32_t round) {
    DSV3_ASSERT(to >= 0 && to < w->size);
    // The previous answer to this rank is small and sent eagerly: this wait is short.
    if (w->pong_sends[to] != MPI_REQUEST_NULL)
        DSV3_MPI_CALL(MPI_Wait(&w->pong_sends[to], MPI_STATUS_IGNORE));
    Pong *p = &w->pong_out[to];
    p->round = round;
    p->state = w->timed_out ? PONG_TIMED_OUT : PONG_WAITING;
    memcpy(p->what, w->doing, sizeof p->what);
    DSV3_MPI_CALL(
        MPI_Isend(p, (int)sizeof *p, MPI_BYTE, to, DSV3_TAG_PONG, w->comm, &w->pong_sends[to]));
    return DSV3_OK;
}

Dsv3Err dsv3_watch_service(Dsv3Watch *w) {
    for (;;) {
        int arrived = 0;
        MPI_Status status;
        DSV3_MPI_CALL(MPI_Test(&w->ping_recv, &arrived, &status));
        if (!arrived) return DSV3_OK;
        int from = status.MPI_SOURCE;
        int32_t round = w->ping_in;
        DSV3_CALL(watch_post_ping_recv(w));
        DSV3_CALL(watch_answer(w, from, round));
    }
}

// Pings every rank whose probe[r] is PROBE_TO_PING; on return each of them is PROBE_ANSWERED
// (answers[r] holds its answer) or PROBE_SILENT (no answer within the grace period).
static Dsv3Err watch_probe(Dsv3Watch *w, Probe *probe, Pong *answers) {
    int32_t round = ++w->round;
    MPI_Request *recvs = NULL;
    DSV3_CALL(dsv3_calloc((void **)&recvs, (size_t)w->size, sizeof *recvs, "ping answers"));
    Dsv3Err err = DSV3_OK;
    int pending = 0;
    for (int r = 0; r < w->size; r++)
        recvs[r] = MPI_REQUEST_NULL;
    for (int r = 0; r < w->size; r++) {
        if (probe[r] != PROBE_TO_PING) continue;
        DSV3_MPI_CALL_GOTO(err, done,
                           MPI_Irecv(&answers[r], (int)sizeof *answers, MPI_BYTE, r, DSV3_TAG_PONG,
                                     w->comm, &recvs[r]));
        int sent = 1;
        if (w->ping_sends[r] != MPI_REQUEST_NULL)
            DSV3_MPI_CALL_GOTO(err, done, MPI_Test(&w->ping_sends[r], &sent, MPI_STATUS_IGNORE));
        if (sent) { // else an earlier ping is still undelivered: that rank is not listening
            w->ping_out[r] = round;
            DSV3_MPI_CALL_GOTO(err, done,
                               MPI_Isend(&w->ping_out[r], 1, MPI_INT32_T, r, DSV3_TAG_PING, w->comm,
                                         &w->ping_sends[r]));
        }
        probe[r] = PROBE_PINGED;
        pending++;
    }
    double start = dsv3_log_seconds();
    while (pending > 0 && dsv3_log_seconds() - start < w->opt.grace_s) {
        for (int r = 0; r < w->size; r++) {
            if (probe[r] != PROBE_PINGED) continue;
            int arrived = 0;
            DSV3_MPI_CALL_GOTO(err, done, MPI_Test(&recvs[r], &arrived, MPI_STATUS_IGNORE));
            if (!arrived) continue;
            if (answers[r].round == round) {
                probe[r] = PROBE_ANSWERED;
                pending--;
            } else { // a late answer to an earlier probe
                DSV3_MPI_CALL_GOTO(err, done,
                                   MPI_Irecv(&answers[r], (int)sizeof *answers, MPI_BYTE, r,
                                             DSV3_TAG_PONG, w->comm, &recvs[r]));
            }
        }
        // Others may be probing this rank at the same time.
        DSV3_CALL_GOTO(err, done, dsv3_watch_service(w));
        if (pending > 0) pause_ns(PROBE_SLEEP_NS);
    }
done:
    for (int r = 0; r < w->size; r++) {
        if (recvs[r] == MPI_REQUEST_NULL) continue;
        MPI_Status status;
        int cancelled = 1;
        if (probe[r] == PROBE_PINGED) MPI_Cancel(&recvs[r]);
        MPI_Wait(&recvs[r], &status);
        MPI_Test_cancelled(&status, &cancelled);
        if (probe[r] == PROBE_PINGED)
            probe[r] = !cancelled && answers[r].round == round ? PROBE_ANSWERED : PROBE_SILENT;
    }
    dsv3_free(recvs);
    return err;
}

// Appends printf output to out[*length …], cutting at the capacity.
static void __attribute__((format(printf, 4, 5)))
append(char *out, size_t capacity, size_t *length, const char *fmt, ...) {
    if (*length + 1 >= capacity) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + *length, capacity - *length, fmt, ap);
    va_end(ap);
    if (n > 0) *length += (size_t)n < capacity - *length ? (size_t)n : capacity - *length - 1;
}

// "; stage rank 0 (job rank 1) is alive and waits …" for up to `*room` answered ranks, those
// the wait depended on (`waited[r]`) first. Returns how many answered ranks were not named.
static int append_alive(const Dsv3Watch *w, const Probe *probe, const Pong *answers,
                        const char *waited, char *out, size_t capacity, size_t *length) {
    int named = 0, unnamed = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int r = 0; r < w->size; r++) {
            if (probe[r] != PROBE_ANSWERED || waited[r] != (pass == 0)) continue;
            if (named == NAMED_MAX) {
                unnamed++;
                continue;
            }
            char name[RANK_NAME_CAPACITY], what[DSV3_WATCH_TEXT_CAPACITY];
            dsv3_watch_describe_rank(w, r, name, sizeof name);
            memcpy(what, answers[r].what, sizeof what);
            what[sizeof what - 1] = '\0';
            append(out, capacity, length, "; %s is alive and %s%s", name,
                   what[0] ? what : "waits (it did not say for what)",
                   answers[r].state == PONG_TIMED_OUT ? " (its wait timed out too)" : "");
            named++;
        }
    return unnamed;
}

// The message of a timed-out wait, from the probe's outcome.
static void watch_message(const Dsv3Watch *w, const Probe *probe, const Pong *answers,
                          const char *waited, double timeout, char *out, size_t capacity) {
    size_t length = 0;
    out[0] = '\0';
    char me[RANK_NAME_CAPACITY], name[RANK_NAME_CAPACITY];
    dsv3_watch_describe_rank(w, w->rank, me, sizeof me);
    int silent = 0;
    for (int r = 0; r < w->size; r++)
        if (probe[r] == PROBE_SILENT) {
            if (silent < NAMED_MAX) {
                dsv3_watch_describe_rank(w, r, name, sizeof name);
                append(out, capacity, &length, "%s%s", silent ? ", " : "", name);
            }
            silent++;
        }
    if (silent > NAMED_MAX) append(out, capacity, &length, " and %d more", silent - NAMED_MAX);
    if (silent > 0) {
        append(out, capacity, &length,
               " %s not answered for %g s: stopped, dead, or computing longer than %s = %g; "
               "%s is alive and %s",
               silent == 1 ? "has" : "have", timeout, watch_timeout_key(w), timeout, me, w->doing);
    } else {
        append(out, capacity, &length,
               "no rank is silent: every rank answered within %g s, so the ranks wait for each "
               "other in calls that do not match (a bug in dsv3); %s %s for %g s (%s = %g)",
               w->opt.grace_s, me, w->doing, timeout, watch_timeout_key(w), timeout);
    }
    int unnamed = append_alive(w, probe, answers, waited, out, capacity, &length);
    if (unnamed > 0) append(out, capacity, &length, "; %d more rank(s) answered", unnamed);
}

// After a timeout: probes the ranks the wait depended on, then, when all of them answered,
// every rank; returns DSV3_ERR_TIMEOUT with the message of watch.h.
static Dsv3Err watch_timeout(Dsv3Watch *w, const int *peers, int n_peers, double timeout) {
    Probe *probe = NULL;
    Pong *answers = NULL;
    char *waited = NULL, *message = NULL;
    size_t n = (size_t)w->size;
    Dsv3Err err = DSV3_OK;
    DSV3_CALL_GOTO(err, done, dsv3_calloc((void **)&probe, n, sizeof *probe, "probe states"));
    DSV3_CALL_GOTO(err, done, dsv3_calloc((void **)&answers, n, sizeof *answers, "answers"));
    DSV3_CALL_GOTO(err, done, dsv3_calloc((void **)&waited, n, sizeof *waited, "waited-on ranks"));
    DSV3_CALL_GOTO(err, done, dsv3_alloc((void **)&message, MESSAGE_CAPACITY, "timeout message"));
    w->timed_out = 1;
    int everyone = n_peers == DSV3_WATCH_ALL_PEERS;
    for (int i = 0; !everyone && i < n_peers; i++) {
        DSV3_CHECK_GOTO(err, done, peers[i] >= 0 && peers[i] < w->size, DSV3_ERR_USAGE,
                        "watch: peer %d is not a rank of the job (%d ranks)", peers[i], w->size);
        if (peers[i] != w->rank) waited[peers[i]] = 1;
    }
    for (int r = 0; r < w->size; r++) {
        if (everyone && r != w->rank) waited[r] = 1;
        if (waited[r]) probe[r] = PROBE_TO_PING;
    }
    DSV3_CALL_GOTO(err, done, watch_probe(w, probe, answers));
    int silent = 0;
    for (int r = 0; r < w->size; r++)
        silent += probe[r] == PROBE_SILENT;
    if (silent == 0 && !everyone) { // the silent rank is further away
        for (int r = 0; r < w->size; r++)
            if (r != w->rank && probe[r] == PROBE_SKIP) probe[r] = PROBE_TO_PING;
        DSV3_CALL_GOTO(err, done, watch_probe(w, probe, answers));
    }
    watch_message(w, probe, answers, waited, timeout, message, MESSAGE_CAPACITY);
    err = dsv3_error_raise(DSV3_ERR_TIMEOUT, __FILE__, __LINE__, __func__, "%s", message);
done:
    w->timed_out = 0;
    dsv3_free(probe);
    dsv3_free(answers);
    dsv3_free(waited);
    dsv3_free(message);
    return err;
}

Dsv3Err dsv3_watch_wait(Dsv3Watch *w, int count, MPI_Request *requests, const int *peers,
                        int n_peers, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->doing, sizeof w->doing, fmt, ap);
    va_end(ap);
    double start = dsv3_log_seconds(), timeout = dsv3_watch_timeout_seconds(w);
    for (;;) {
        int done = 0;
        DSV3_MPI_CALL(MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE));
        if (done) return DSV3_OK;
        DSV3_CALL(dsv3_watch_service(w));
        double waited = dsv3_log_seconds() - start;
        if (waited >= timeout) return watch_timeout(w, peers, n_peers, timeout);
        if (w->opt.poll == DSV3_POLL_IDLE)
            pause_ns(IDLE_SLEEP_NS);
        else if (waited >= BUSY_SPIN_SECONDS)
            pause_ns(BUSY_SLEEP_NS);
    }
}
