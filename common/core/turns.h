// turns: two computations that take turns on one thread's worth of work, so that one computes
// while the other waits for a peer (DualPipeV's overlapped pair: the forward of one micro-batch
// computes while the backward of another waits for its expert servers, and back).
//
// dsv3_turns_run runs the first on the calling thread and the second on a thread of its own;
// exactly one of them runs at any time, and the turn passes only where the running one calls
// dsv3_turns_yield. Which step runs when is therefore fixed by the code, not by timing: the
// collectives and requests of both come in the same order on every rank and in every run.
//
// No MPI here: the caller's MPI must allow calls from several threads (the roles ask for
// MPI_THREAD_MULTIPLE).
#ifndef DSV3_CORE_TURNS_H
#define DSV3_CORE_TURNS_H

#include "common/core/error.h"

typedef Dsv3Err (*Dsv3TurnFn)(void *ctx);

// Runs first(first_ctx) here and second(second_ctx) on a new thread, first first, taking turns
// at their dsv3_turns_yield calls; returns once both are done. held_s (NULL or 2 values) gets
// the seconds each held the turn. Fails with the first failure of either (the first's when both
// fail), the second's message carried over; a failure leaves the other running alone to its end.
Dsv3Err dsv3_turns_run(Dsv3TurnFn first, void *first_ctx, Dsv3TurnFn second, void *second_ctx,
                       double *held_s);

// Inside dsv3_turns_run: hands the turn to the other computation unless it is done, and returns
// when the turn comes back. Anywhere else (or with the other done) returns at once.
void dsv3_turns_yield(void);

#endif
