// watch: waiting for MPI requests under a deadline, and finding out who is silent when one
// passes.
//
// Every blocking wait of training goes through dsv3_watch_wait: it polls the requests with
// MPI_Testall until they complete or the deadline passes, so that a peer that stops answering
// (stopped with SIGSTOP, hung, or dead behind a link that keeps no error) ends the job with a
// message instead of a hang. The deadline is comm.init_timeout_seconds from start-up until the
// first training step completes and around checkpoint saves and loads (they may take long),
// comm.train_timeout_seconds otherwise (dsv3_watch_set_patience switches).
//
// Polling. OpenMPI's blocking calls spin; a rank that waits long for others would take a core
// from those that compute. The coordinator, which mostly waits, sleeps 1 ms between polls
// (about 3% of a core). Stage ranks poll tightly for the first few milliseconds, where most
// of their waits end (a collective among ranks that arrive together), then back off to short
// sleeps. Non-blocking collectives progress inside MPI_Test, so the sleeps stay short.
//
// Pinpointing. When a wait times out, the waiting rank does not always know who is silent: the
// coordinator waits for reports while the healthy stage ranks wait, inside a collective, for
// the one that stopped. So every rank answers liveness pings while it waits: a receive is
// always posted on DSV3_TAG_PING of the watch's communicator, and every poll answers pings
// with a DSV3_TAG_PONG that says what this rank waits for (and whether its own wait timed
// out). A rank whose wait times out pings the peers it waited on and names those that do not
// answer within a grace period (DSV3_WATCH_GRACE_SECONDS); when all of them answer, the silent
// rank is elsewhere, and it pings every rank of the job. It then returns DSV3_ERR_TIMEOUT with
// one message, e.g.
//
//   stage rank 1 (job rank 2) has not answered for 3 s: stopped, dead, or computing longer
//   than comm.train_timeout_seconds = 3; stage rank 0 (job rank 1) is alive and waits in the
//   all-reduce over dp (2 ranks) of the gradients of step 7
//
// and the role's main() prints it and calls MPI_Abort, which ends every rank non-zero. A rank
// that computes does not poll, so it answers only when its next wait begins: a rank that
// computes for longer than the deadline plus the grace period is reported as silent, which the
// message says. When every rank answers, nobody is stopped and the ranks wait for each other
// in calls that do not match (a bug); the message lists what each waits for.
//
// Ranks are named by role from the job layout (comm/layout.h): job rank 0 is the coordinator,
// job ranks 1 … S the stage ranks, then the expert servers. The watch's communicator must have
// that rank order (the protocol's duplicate of the job communicator, comm/protocol.h).
//
// Not thread-safe: one thread per rank waits. This module does not decide what to wait for
// (comm/protocol.h, comm/collectives_mpi.h do) and never cancels the requests it was given: on
// a timeout they stay pending and the caller must end the job.
#ifndef DSV3_COMM_WATCH_H
#define DSV3_COMM_WATCH_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"

// Seconds a pinged peer has to answer before it is named as silent: a waiting rank answers
// within a millisecond, a loaded machine may deschedule it for much longer.
#define DSV3_WATCH_GRACE_SECONDS 2.0

// What a wait says it waits for (the answer to a ping), e.g. "waits for the step plan";
// longer texts are cut.
enum { DSV3_WATCH_TEXT_CAPACITY = 192 };

// n_peers value of dsv3_watch_wait: every other rank of the watch's communicator.
enum { DSV3_WATCH_ALL_PEERS = -1 };

// Which deadline applies.
typedef enum {
    DSV3_PATIENCE_INIT,  // comm.init_timeout_seconds: start-up, the first step, checkpoints
    DSV3_PATIENCE_TRAIN, // comm.train_timeout_seconds: the steps after the first
} Dsv3Patience;

// How a rank polls.
typedef enum {
    DSV3_POLL_IDLE, // sleep between polls from the start (the coordinator)
    DSV3_POLL_BUSY, // poll tightly for a few milliseconds, then sleep briefly (stage ranks)
} Dsv3PollStyle;

typedef struct {
    double init_timeout_s;  // comm.init_timeout_seconds
    double train_timeout_s; // comm.train_timeout_seconds
    double grace_s;         // ping answers; 0 takes DSV3_WATCH_GRACE_SECONDS
    Dsv3PollStyle poll;
    int64_t n_stage, n_expert; // the job layout, to name ranks (comm/topology.h)
} Dsv3WatchOptions;

typedef struct Dsv3Watch Dsv3Watch;

// Not collective. Posts the ping receive on `comm` (which stays the caller's and must outlive
// the watch; its rank order is the job's). The patience starts at DSV3_PATIENCE_INIT.
Dsv3Err dsv3_watch_create(Dsv3Watch **out, MPI_Comm comm, const Dsv3WatchOptions *opt);

// Not collective. Cancels and completes the ping receive and completes the answers still in
// flight. NULL is a no-op.
void dsv3_watch_destroy(Dsv3Watch *w);

void dsv3_watch_set_patience(Dsv3Watch *w, Dsv3Patience patience);
Dsv3Patience dsv3_watch_patience(const Dsv3Watch *w);

// Seconds the current patience allows a wait.
double dsv3_watch_timeout_seconds(const Dsv3Watch *w);

// Waits for all `count` requests like MPI_Waitall, answering pings, until the deadline of the
// current patience. `peers` (n_peers ranks of the watch's communicator, or NULL with
// DSV3_WATCH_ALL_PEERS) are the ranks the requests depend on, pinged first on a timeout; `fmt`
// says what this rank waits for ("waits for …"). Not collective by itself (the requests may
// belong to a collective). On a timeout: DSV3_ERR_TIMEOUT with the message described above,
// the requests still pending.
Dsv3Err dsv3_watch_wait(Dsv3Watch *w, int count, MPI_Request *requests, const int *peers,
                        int n_peers, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

// Answers the pings that arrived since the last poll. Not collective. For loops that wait on
// something other than MPI requests.
Dsv3Err dsv3_watch_service(Dsv3Watch *w);

// "the coordinator (job rank 0)", "stage rank 1 (job rank 2)", "expert server 0 (job rank 5)".
void dsv3_watch_describe_rank(const Dsv3Watch *w, int rank, char *out, size_t capacity);

#endif
