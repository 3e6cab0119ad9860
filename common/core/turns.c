// turns: two threads, one mutex, one condition: `turn` says which side runs.
#include "turns.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/core/log.h"

enum { TURN_TEXT_CAPACITY = 4096 };

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int turn;    // the side that runs: 0 (first) or 1 (second)
    int done[2]; // a side returned
    double since, held[2];
    Dsv3TurnFn fn[2];
    void *ctx[2];
    Dsv3Err err[2];
    char second_text[TURN_TEXT_CAPACITY]; // the second side's error record, when it failed
} Turns;

static _Thread_local Turns *current;
static _Thread_local int side;

// With t->lock held: gives the turn to the other side and counts the caller's time.
static void hand_over(Turns *t, int from) {
    double now = dsv3_log_seconds();
    t->held[from] += now - t->since;
    t->since = now;
    t->turn = 1 - from;
    pthread_cond_broadcast(&t->changed);
}

// With t->lock held: returns once side `me` has the turn (the other handed it over, or ended).
static void wait_turn(Turns *t, int me) {
    while (t->turn != me)
        pthread_cond_wait(&t->changed, &t->lock);
}

void dsv3_turns_yield(void) {
    Turns *t = current;
    if (!t) return;
    pthread_mutex_lock(&t->lock);
    if (!t->done[1 - side]) {
        hand_over(t, side);
        wait_turn(t, side);
    }
    pthread_mutex_unlock(&t->lock);
}

// Runs side `me` once it has the turn, and hands the turn over for good at its end.
static void run_side(Turns *t, int me) {
    current = t;
    side = me;
    pthread_mutex_lock(&t->lock);
    wait_turn(t, me);
    pthread_mutex_unlock(&t->lock);
    Dsv3Err err = t->fn[me](t->ctx[me]);
    if (err != DSV3_OK && me == 1)
        snprintf(t->second_text, sizeof t->second_text, "%s", dsv3_error_text());
    pthread_mutex_lock(&t->lock);
    t->err[me] = err;
    t->done[me] = 1;
    hand_over(t, me);
    pthread_mutex_unlock(&t->lock);
    current = NULL;
}

static void *second_main(void *arg) {
    run_side(arg, 1);
    return NULL;
}

Dsv3Err dsv3_turns_run(Dsv3TurnFn first, void *first_ctx, Dsv3TurnFn second, void *second_ctx,
                       double *held_s) {
    DSV3_CHECK(current == NULL, DSV3_ERR_USAGE, "dsv3_turns_run is called inside a turn");
    Turns t = {.fn = {first, second}, .ctx = {first_ctx, second_ctx}};
    pthread_mutex_init(&t.lock, NULL);
    pthread_cond_init(&t.changed, NULL);
    t.since = dsv3_log_seconds();
    pthread_t thread;
    int rc = pthread_create(&thread, NULL, second_main, &t);
    if (rc != 0) {
        pthread_cond_destroy(&t.changed);
        pthread_mutex_destroy(&t.lock);
        DSV3_RAISE(DSV3_ERR_MEMORY, "could not start the thread of an overlapped pair: %s",
                   strerror(rc));
    }
    run_side(&t, 0);
    pthread_join(thread, NULL);
    pthread_cond_destroy(&t.changed);
    pthread_mutex_destroy(&t.lock);
    if (held_s) held_s[0] = t.held[0], held_s[1] = t.held[1];
    if (t.err[0] != DSV3_OK) return t.err[0];
    if (t.err[1] != DSV3_OK) {
        // The record names the code already: carry over what follows "<name>: ".
        size_t name = strlen(dsv3_error_name(t.err[1])) + 2;
        DSV3_RAISE(t.err[1], "%s\n  (on the second thread of an overlapped pair)",
                   strlen(t.second_text) > name ? t.second_text + name : t.second_text);
    }
    return DSV3_OK;
}
