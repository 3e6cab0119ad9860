// Unit tests of train/pipeline_schedule: names and action texts, the lists of GPipe, 1F1B,
// Interleaved 1F1B, ZBVZeroBubble and DualPipeV against torch's order of computations and our
// placement of messages, their simulated bubble against the formula, and the simulator's verdict on
// broken hand-made lists.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/core/alloc.h"
#include "common/train/pipeline_schedule.h"
#include "leak_check.h"

// Simulated and theoretical bubbles agree up to the rounding of a few divisions.
static const double BUBBLE_TOLERANCE = 1e-12;

// torch's cost model for 1F1B: a backward (input and weight gradients) takes two forwards.
static const double T_FORWARD = 1.0, T_BACKWARD = 2.0;

// The pipeline degrees the sweeps cover, with up to SWEEP_MAX_MICRO micro-batches (the
// interleaved sweep takes at least two rounds of pp) and up to SWEEP_MAX_V stages per rank.
static const int64_t SWEEP_PP[] = {1, 2, 3, 4, 8};
enum {
    SWEEP_PP_COUNT = sizeof SWEEP_PP / sizeof SWEEP_PP[0],
    SWEEP_MAX_MICRO = 8,
    SWEEP_MAX_V = 3
};

// Room for the action texts of one rank's list, for the hand-made lists and for the
// computations of one rank in the sweeps (2 · v · n_micro, n_micro ≤ 2 · SWEEP_MAX_MICRO).
enum {
    LIST_TEXT_CAPACITY = 1024,
    HAND_MAX_RANKS = 4,
    HAND_MAX_ACTIONS = 64,
    MAX_COMPUTE = 2 * SWEEP_MAX_V * 2 * SWEEP_MAX_MICRO,
    ACTION_TEXT_CAPACITY = 32
};

// Asserts that `got` is `code` and the recorded message is exactly `message`.
static void expect_error(Dsv3Err got, Dsv3Err code, const char *message) {
    assert_int_equal(got, code);
    assert_string_equal(dsv3_error_message(), message);
    dsv3_error_clear();
}

// overlap: DualPipeV's pairs as overlapping units (a job with expert servers).
static Dsv3PipeSchedule create_overlap_or_fail(Dsv3PipeKind kind, int64_t pp, int64_t n_micro,
                                               int64_t stages_per_rank, int overlap) {
    Dsv3PipeSchedule s;
    if (dsv3_pipe_schedule_create(&s, kind, pp, n_micro, stages_per_rank, overlap) != DSV3_OK)
        fail_msg("%s pp %lld n_micro %lld v %lld: %s", dsv3_pipe_kind_name(kind), (long long)pp,
                 (long long)n_micro, (long long)stages_per_rank, dsv3_error_text());
    return s;
}

static Dsv3PipeSchedule create_or_fail(Dsv3PipeKind kind, int64_t pp, int64_t n_micro,
                                       int64_t stages_per_rank) {
    return create_overlap_or_fail(kind, pp, n_micro, stages_per_rank, 0);
}

static Dsv3PipeSimulation simulate_or_fail(const Dsv3PipeSchedule *s) {
    Dsv3PipeSimulation sim;
    if (dsv3_pipe_schedule_simulate(s, T_FORWARD, T_BACKWARD, &sim) != DSV3_OK)
        fail_msg("%s pp %lld n_micro %lld v %lld: %s", dsv3_pipe_kind_name(s->kind),
                 (long long)s->pp, (long long)s->n_micro, (long long)s->stages_per_rank,
                 dsv3_error_text());
    return sim;
}

// Rank `rank`'s list as space-separated action texts.
static void list_text(const Dsv3PipeSchedule *s, int64_t rank, char *out, size_t capacity) {
    size_t used = 0;
    out[0] = '\0';
    for (int64_t i = s->first[rank]; i < s->first[rank + 1]; i++) {
        char text[ACTION_TEXT_CAPACITY];
        dsv3_pipe_action_text(&s->actions[i], text, sizeof text);
        int written = snprintf(out + used, capacity - used, "%s%s", used ? " " : "", text);
        assert_true(written > 0 && (size_t)written < capacity - used);
        used += (size_t)written;
    }
}

static void expect_lists(const Dsv3PipeSchedule *s, const char *const *expected) {
    char got[LIST_TEXT_CAPACITY];
    for (int64_t r = 0; r < s->pp; r++) {
        list_text(s, r, got, sizeof got);
        assert_string_equal(got, expected[r]);
    }
}

// A schedule whose lists are given as texts, one per rank ("F0.0 SF0.0 RB0.0 B0.0").
typedef struct {
    Dsv3PipeSchedule s;
    int64_t first[HAND_MAX_RANKS + 1];
    Dsv3PipeAction actions[HAND_MAX_ACTIONS];
} HandSchedule;

static Dsv3PipeAction parse_action(const char *text) {
    static const struct {
        const char *prefix;
        Dsv3PipeOp op;
    } ops[] = {{"F", DSV3_PIPE_F},       {"B", DSV3_PIPE_B},       {"RF", DSV3_PIPE_RECV_F},
               {"SF", DSV3_PIPE_SEND_F}, {"RB", DSV3_PIPE_RECV_B}, {"SB", DSV3_PIPE_SEND_B},
               {"I", DSV3_PIPE_I},       {"W", DSV3_PIPE_W}};
    char prefix[3];
    int micro, stage;
    int paired = text[0] == 'P'; // "PF3.0": an F paired with the B after it
    if (sscanf(text + paired, "%2[A-Z]%d.%d", prefix, &micro, &stage) != 3)
        fail_msg("bad action %s", text);
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(prefix, ops[i].prefix) == 0)
            return (Dsv3PipeAction){
                .op = ops[i].op, .micro = micro, .stage = stage, .paired = paired};
    fail_msg("bad action %s", text);
    return (Dsv3PipeAction){0};
}

static void hand_schedule(HandSchedule *h, Dsv3PipeKind kind, int64_t pp, int64_t n_micro,
                          int64_t stages_per_rank, const char *const *lists) {
    assert_true(pp <= HAND_MAX_RANKS);
    h->s = (Dsv3PipeSchedule){.kind = kind,
                              .pp = pp,
                              .n_micro = n_micro,
                              .stages_per_rank = stages_per_rank,
                              .first = h->first,
                              .actions = h->actions};
    int64_t used = 0;
    for (int64_t r = 0; r < pp; r++) {
        h->first[r] = used;
        char copy[LIST_TEXT_CAPACITY];
        snprintf(copy, sizeof copy, "%s", lists[r]);
        for (char *save = NULL, *word = strtok_r(copy, " ", &save); word != NULL;
             word = strtok_r(NULL, " ", &save)) {
            assert_true(used < HAND_MAX_ACTIONS);
            h->actions[used++] = parse_action(word);
        }
    }
    h->first[pp] = used;
}

// Asserts that the simulator rejects the hand-made lists with exactly `message`.
static void expect_broken(Dsv3PipeKind kind, int64_t pp, int64_t n_micro, int64_t stages_per_rank,
                          const char *const *lists, const char *message) {
    HandSchedule h;
    hand_schedule(&h, kind, pp, n_micro, stages_per_rank, lists);
    Dsv3PipeSimulation sim;
    expect_error(dsv3_pipe_schedule_simulate(&h.s, T_FORWARD, T_BACKWARD, &sim), DSV3_ERR_INTERNAL,
                 message);
}

// torch's order of computations on `rank`: _get_1f1b_rank_ops with ScheduleInterleaved1F1B's
// warm-up, stage indices and per-stage counters. ScheduleGPipe is the case of one stage per
// rank and every forward first; Schedule1F1B's pp − rank warm-up forwards followed by
// backward-forward pairs are the same order as pp − 1 − rank followed by forward-backward
// pairs. Returns the count.
static int64_t torch_compute_order(Dsv3PipeKind kind, int64_t pp, int64_t n, int64_t v,
                                   int64_t rank, Dsv3PipeAction *out) {
    int64_t total = v * n, warmup = n;
    if (kind == DSV3_PIPE_1F1B) warmup = pp - 1 - rank;
    if (kind == DSV3_PIPE_INTERLEAVED_1F1B) warmup = (v - 1) * pp + 2 * (pp - 1 - rank);
    if (warmup > total) warmup = total;
    int32_t next_f[SWEEP_MAX_V] = {0}, next_b[SWEEP_MAX_V] = {0};
    int64_t used = 0;
    int64_t fwd_bwd = total - warmup, cooldown = warmup;
    for (int64_t op = 0; op < warmup + fwd_bwd + cooldown; op++) {
        if (op < total) {
            int64_t k = (op / pp) % v;
            out[used++] = (Dsv3PipeAction){DSV3_PIPE_F, next_f[k]++, (int32_t)(k * pp + rank)};
        }
        if (op >= warmup) {
            int64_t k = v - 1 - ((op - warmup) / pp) % v;
            out[used++] = (Dsv3PipeAction){DSV3_PIPE_B, next_b[k]++, (int32_t)(k * pp + rank)};
        }
    }
    return used;
}

static int same_action(const Dsv3PipeAction *a, const Dsv3PipeAction *b) {
    return a->op == b->op && a->micro == b->micro && a->stage == b->stage;
}

// Checks rank's list against torch's computations and our message placement: a SEND right after
// its computation, a RECV one computation ahead of its consumer (or first, for the first).
static void check_rank_list(const Dsv3PipeSchedule *s, int64_t rank) {
    Dsv3PipeAction expected[MAX_COMPUTE];
    int64_t count =
        torch_compute_order(s->kind, s->pp, s->n_micro, s->stages_per_rank, rank, expected);
    int64_t stages = s->pp * s->stages_per_rank, computed = 0;
    const Dsv3PipeAction *list = &s->actions[s->first[rank]];
    int64_t length = s->first[rank + 1] - s->first[rank];
    for (int64_t i = 0; i < length; i++) {
        const Dsv3PipeAction *a = &list[i];
        char text[ACTION_TEXT_CAPACITY];
        dsv3_pipe_action_text(a, text, sizeof text);
        if (a->op == DSV3_PIPE_F || a->op == DSV3_PIPE_B) {
            assert_true(computed < count);
            if (!same_action(a, &expected[computed]))
                fail_msg("rank %lld computation %lld is %s", (long long)rank, (long long)computed,
                         text);
            computed++;
            int sends = a->op == DSV3_PIPE_F ? a->stage < stages - 1 : a->stage > 0;
            if (sends) {
                assert_true(i + 1 < length);
                assert_int_equal(list[i + 1].op,
                                 a->op == DSV3_PIPE_F ? DSV3_PIPE_SEND_F : DSV3_PIPE_SEND_B);
                assert_int_equal(list[i + 1].micro, a->micro);
                assert_int_equal(list[i + 1].stage, a->stage);
            }
        } else if (a->op == DSV3_PIPE_RECV_F || a->op == DSV3_PIPE_RECV_B) {
            // A RECV sits right before the computation ahead of its consumer, so its consumer
            // is the next but one; only the first computation's RECV comes before it, first.
            Dsv3PipeAction consumer = {.op = a->op == DSV3_PIPE_RECV_F ? DSV3_PIPE_F : DSV3_PIPE_B,
                                       .micro = a->micro,
                                       .stage = a->stage};
            int64_t at = i == 0 && same_action(&expected[0], &consumer) ? 0 : computed + 1;
            if (at >= count || !same_action(&expected[at], &consumer))
                fail_msg("rank %lld: %s is not one computation ahead of its consumer",
                         (long long)rank, text);
        }
    }
    assert_int_equal(computed, count);
}

// The numbers of each action a rank's list must hold: n_micro F and B per local stage and one
// message each way per stage boundary.
static void check_rank_counts(const Dsv3PipeSchedule *s, int64_t rank) {
    assert_true(s->stages_per_rank <= SWEEP_MAX_V);
    int64_t v = s->stages_per_rank;
    int64_t per_stage[SWEEP_MAX_V][2] = {{0}}, recv_f = 0, send_f = 0, recv_b = 0, send_b = 0;
    for (int64_t i = s->first[rank]; i < s->first[rank + 1]; i++) {
        const Dsv3PipeAction *a = &s->actions[i];
        int64_t k;
        assert_int_equal(dsv3_pipe_rank_of(s, a->stage, &k), rank);
        if (a->op == DSV3_PIPE_F || a->op == DSV3_PIPE_B) per_stage[k][a->op == DSV3_PIPE_B]++;
        recv_f += a->op == DSV3_PIPE_RECV_F;
        send_f += a->op == DSV3_PIPE_SEND_F;
        recv_b += a->op == DSV3_PIPE_RECV_B;
        send_b += a->op == DSV3_PIPE_SEND_B;
    }
    int64_t first_stage = rank == 0, last_stage = rank == s->pp - 1;
    for (int64_t k = 0; k < v; k++) {
        assert_int_equal(per_stage[k][0], s->n_micro);
        assert_int_equal(per_stage[k][1], s->n_micro);
    }
    // Only the first stage (rank 0's local stage 0) receives no activations and sends no
    // gradients; only the last (the last rank's last local stage) the other way round.
    assert_int_equal(recv_f, s->n_micro * (v - first_stage));
    assert_int_equal(send_b, s->n_micro * (v - first_stage));
    assert_int_equal(send_f, s->n_micro * (v - last_stage));
    assert_int_equal(recv_b, s->n_micro * (v - last_stage));
    assert_int_equal(s->first[rank + 1] - s->first[rank],
                     2 * v * s->n_micro + recv_f + send_f + recv_b + send_b);
}

static void expect_bubble(const Dsv3PipeSchedule *s, const Dsv3PipeSimulation *sim) {
    double formula = dsv3_pipe_schedule_bubble(s);
    if (sim->idle_fraction - formula > BUBBLE_TOLERANCE ||
        formula - sim->idle_fraction > BUBBLE_TOLERANCE)
        fail_msg("%s pp %lld n_micro %lld v %lld: simulated bubble %.17g, formula %.17g",
                 dsv3_pipe_kind_name(s->kind), (long long)s->pp, (long long)s->n_micro,
                 (long long)s->stages_per_rank, sim->idle_fraction, formula);
    // Every rank computes its v · n_micro forwards and backwards; the pipeline takes (rounds of)
    // pp − 1 computation pairs longer than that (ZBVZeroBubble: the idle units of the formula).
    double work = (double)(s->stages_per_rank * s->n_micro) * (T_FORWARD + T_BACKWARD);
    double idle = (double)(s->pp - 1) * (T_FORWARD + T_BACKWARD);
    if (dsv3_pipe_kind_is_v_shaped(s->kind)) {
        double short_of_full = 2.0 * (double)(2 * s->pp - 1 - s->n_micro);
        idle = short_of_full > (double)(s->pp - 1) ? short_of_full : (double)(s->pp - 1);
    }
    if (s->overlap_pairs) idle = 2.0 * (double)(s->pp - 1);
    assert_true(sim->busy_max == work);
    assert_true(sim->makespan == work + idle);
}

static void test_kind_names_round_trip(void **state) {
    (void)state;
    for (int k = 0; k < DSV3_PIPE_KIND_COUNT; k++) {
        Dsv3PipeKind parsed;
        assert_int_equal(dsv3_pipe_kind_parse(dsv3_pipe_kind_name((Dsv3PipeKind)k), &parsed),
                         DSV3_OK);
        assert_int_equal(parsed, k);
    }
    assert_string_equal(dsv3_pipe_kind_name(DSV3_PIPE_GPIPE), "GPipe");
    assert_string_equal(dsv3_pipe_kind_name(DSV3_PIPE_1F1B), "1F1B");
    assert_string_equal(dsv3_pipe_kind_name(DSV3_PIPE_INTERLEAVED_1F1B), "Interleaved1F1B");
    assert_string_equal(dsv3_pipe_kind_name(DSV3_PIPE_ZBV), "ZBVZeroBubble");
    assert_false(dsv3_pipe_kind_is_looped(DSV3_PIPE_GPIPE));
    assert_false(dsv3_pipe_kind_is_looped(DSV3_PIPE_1F1B));
    assert_true(dsv3_pipe_kind_is_looped(DSV3_PIPE_INTERLEAVED_1F1B));
    assert_false(dsv3_pipe_kind_is_looped(DSV3_PIPE_ZBV));
    assert_string_equal(dsv3_pipe_kind_name(DSV3_PIPE_DUALPIPEV), "DualPipeV");
    for (int k = 0; k < DSV3_PIPE_KIND_COUNT; k++) {
        int v = k == DSV3_PIPE_ZBV || k == DSV3_PIPE_DUALPIPEV;
        assert_int_equal(dsv3_pipe_kind_is_v_shaped((Dsv3PipeKind)k), v);
        assert_int_equal(dsv3_pipe_kind_splits_backward((Dsv3PipeKind)k), v);
        assert_int_equal(dsv3_pipe_name_is_v_shaped(dsv3_pipe_kind_name((Dsv3PipeKind)k)), v);
    }
    assert_false(dsv3_pipe_name_is_v_shaped("zbvzerobubble"));
    Dsv3PipeKind kind;
    expect_error(dsv3_pipe_kind_parse("ZeroBubble", &kind), DSV3_ERR_CONFIG,
                 "parallelism.pipeline_parallel_schedule is \"ZeroBubble\", but it must be one "
                 "of GPipe, 1F1B, Interleaved1F1B, ZBVZeroBubble or DualPipeV");
    // Names are exact, as the config's choices are.
    expect_error(dsv3_pipe_kind_parse("gpipe", &kind), DSV3_ERR_CONFIG,
                 "parallelism.pipeline_parallel_schedule is \"gpipe\", but it must be one of "
                 "GPipe, 1F1B, Interleaved1F1B, ZBVZeroBubble or DualPipeV");
}

static void test_action_texts(void **state) {
    (void)state;
    static const struct {
        Dsv3PipeAction action;
        const char *text;
    } cases[] = {
        {{DSV3_PIPE_F, 3, 1}, "F3.1"},       {{DSV3_PIPE_B, 3, 1}, "B3.1"},
        {{DSV3_PIPE_RECV_F, 3, 1}, "RF3.1"}, {{DSV3_PIPE_SEND_F, 3, 1}, "SF3.1"},
        {{DSV3_PIPE_RECV_B, 3, 1}, "RB3.1"}, {{DSV3_PIPE_SEND_B, 3, 1}, "SB3.1"},
        {{DSV3_PIPE_I, 3, 1}, "I3.1"},       {{DSV3_PIPE_W, 3, 1}, "W3.1"},
        {{DSV3_PIPE_F, 12, 7}, "F12.7"},
    };
    char text[ACTION_TEXT_CAPACITY];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dsv3_pipe_action_text(&cases[i].action, text, sizeof text);
        assert_string_equal(text, cases[i].text);
    }
    // A short buffer gets the start of the text, terminated.
    char small[4];
    dsv3_pipe_action_text(&cases[2].action, small, sizeof small);
    assert_string_equal(small, "RF3");
}

static void test_stage_and_rank_of_interleaved(void **state) {
    (void)state;
    Dsv3PipeSchedule s = create_or_fail(DSV3_PIPE_INTERLEAVED_1F1B, 4, 4, 3);
    for (int64_t r = 0; r < 4; r++) {
        for (int64_t k = 0; k < 3; k++) {
            int64_t stage = dsv3_pipe_stage_of(&s, r, k), local = -1;
            assert_int_equal(stage, k * 4 + r);
            assert_int_equal(dsv3_pipe_rank_of(&s, stage, &local), r);
            assert_int_equal(local, k);
            assert_int_equal(dsv3_pipe_rank_of(&s, stage, NULL), r);
        }
    }
    dsv3_pipe_schedule_destroy(&s);
    assert_null(s.first);
    assert_null(s.actions);
}

// The v: rank r holds stage r on the way down and 2·pp − 1 − r on the way up.
static void test_stage_and_rank_of_v(void **state) {
    (void)state;
    Dsv3PipeSchedule s = create_or_fail(DSV3_PIPE_ZBV, 4, 8, 2);
    for (int64_t r = 0; r < 4; r++) {
        for (int64_t k = 0; k < 2; k++) {
            int64_t stage = dsv3_pipe_stage_of(&s, r, k), local = -1;
            assert_int_equal(stage, k == 0 ? r : 7 - r);
            assert_int_equal(dsv3_pipe_rank_of(&s, stage, &local), r);
            assert_int_equal(local, k);
        }
    }
    dsv3_pipe_schedule_destroy(&s);
}

static void test_create_names_the_bad_keys(void **state) {
    (void)state;
    Dsv3PipeSchedule s;
    expect_error(dsv3_pipe_schedule_create(&s, DSV3_PIPE_1F1B, 0, 4, 1, 0), DSV3_ERR_CONFIG,
                 "parallelism.pipeline_parallel_degree is 0, but a pipeline needs at least 1 rank");
    expect_error(dsv3_pipe_schedule_create(&s, DSV3_PIPE_GPIPE, 2, 0, 1, 0), DSV3_ERR_CONFIG,
                 "the pipeline gets 0 micro-batches (training.local_batch_size / "
                 "parallelism.pipeline_parallel_microbatch_size), but it needs at least 1");
    expect_error(dsv3_pipe_schedule_create(&s, DSV3_PIPE_1F1B, 2, 4, 2, 0), DSV3_ERR_CONFIG,
                 "pipeline schedule 1F1B runs one stage per rank, but it was given 2 "
                 "(parallelism.pipeline_parallel_layers_per_stage)");
    expect_error(dsv3_pipe_schedule_create(&s, DSV3_PIPE_GPIPE, 2, 4, 0, 0), DSV3_ERR_CONFIG,
                 "pipeline schedule GPipe runs one stage per rank, but it was given 0 "
                 "(parallelism.pipeline_parallel_layers_per_stage)");
    expect_error(dsv3_pipe_schedule_create(&s, DSV3_PIPE_ZBV, 2, 4, 3, 0), DSV3_ERR_CONFIG,
                 "pipeline schedule ZBVZeroBubble runs 2 stages per rank, but it was given 3 "
                 "(parallelism.pipeline_parallel_layers_per_stage)");
    expect_error(dsv3_pipe_schedule_create(&s, DSV3_PIPE_DUALPIPEV, 2, 3, 2, 0), DSV3_ERR_CONFIG,
                 "pipeline schedule DualPipeV needs at least as many micro-batches as stages, 2 × "
                 "parallelism.pipeline_parallel_degree 2 = 4, but it gets 3 "
                 "(training.local_batch_size / parallelism.pipeline_parallel_microbatch_size)");
    expect_error(dsv3_pipe_schedule_create(&s, DSV3_PIPE_INTERLEAVED_1F1B, 2, 4, 1, 0),
                 DSV3_ERR_CONFIG,
                 "pipeline schedule Interleaved1F1B runs at least 2 stages per rank, but it was "
                 "given 1 (parallelism.pipeline_parallel_layers_per_stage)");
    expect_error(dsv3_pipe_schedule_create(&s, DSV3_PIPE_INTERLEAVED_1F1B, 4, 6, 2, 0),
                 DSV3_ERR_CONFIG,
                 "pipeline schedule Interleaved1F1B needs a multiple of "
                 "parallelism.pipeline_parallel_degree 4 micro-batches, but it gets 6 "
                 "(training.local_batch_size / parallelism.pipeline_parallel_microbatch_size)");
    // Fewer micro-batches than ranks are only bubbly for the single-stage schedules, and
    // impossible for the interleaved one.
    expect_error(dsv3_pipe_schedule_create(&s, DSV3_PIPE_INTERLEAVED_1F1B, 4, 2, 2, 0),
                 DSV3_ERR_CONFIG,
                 "pipeline schedule Interleaved1F1B needs a multiple of "
                 "parallelism.pipeline_parallel_degree 4 micro-batches, but it gets 2 "
                 "(training.local_batch_size / parallelism.pipeline_parallel_microbatch_size)");
    expect_error(dsv3_pipe_schedule_create(&s, DSV3_PIPE_1F1B, 1 << 16, 1 << 16, 1, 0),
                 DSV3_ERR_CONFIG,
                 "a pipeline of parallelism.pipeline_parallel_degree 65536 × 1 stages per rank "
                 "and 65536 micro-batches has more than 1073741824 (stage, micro-batch) pairs to "
                 "schedule");
    expect_error(dsv3_pipe_schedule_create(NULL, DSV3_PIPE_1F1B, 2, 2, 1, 0), DSV3_ERR_USAGE,
                 "dsv3_pipe_schedule_create: out is NULL");
}

static void test_simulate_checks_its_arguments(void **state) {
    (void)state;
    Dsv3PipeSchedule s = create_or_fail(DSV3_PIPE_1F1B, 2, 2, 1);
    Dsv3PipeSimulation sim;
    expect_error(dsv3_pipe_schedule_simulate(&s, 0.0, 2.0, &sim), DSV3_ERR_USAGE,
                 "dsv3_pipe_schedule_simulate: t_forward 0 and t_backward 2 must be positive");
    expect_error(dsv3_pipe_schedule_simulate(&s, 1.0, 2.0, NULL), DSV3_ERR_USAGE,
                 "dsv3_pipe_schedule_simulate: the schedule or out is NULL");
    dsv3_pipe_schedule_destroy(&s);
}

// The lists in full for small pipelines, worked out by hand from torch's schedules and the
// placement rule.
static void test_small_lists_worked_out_by_hand(void **state) {
    (void)state;
    Dsv3PipeSchedule s = create_or_fail(DSV3_PIPE_GPIPE, 2, 2, 1);
    static const char *const gpipe[] = {
        "F0.0 SF0.0 RB0.0 F1.0 SF1.0 RB1.0 B0.0 B1.0",
        "RF0.1 RF1.1 F0.1 F1.1 B0.1 SB0.1 B1.1 SB1.1",
    };
    expect_lists(&s, gpipe);
    dsv3_pipe_schedule_destroy(&s);

    s = create_or_fail(DSV3_PIPE_1F1B, 2, 3, 1);
    static const char *const one_f_one_b[] = {
        "F0.0 SF0.0 RB0.0 F1.0 SF1.0 B0.0 RB1.0 F2.0 SF2.0 RB2.0 B1.0 B2.0",
        "RF0.1 F0.1 RF1.1 B0.1 SB0.1 F1.1 RF2.1 B1.1 SB1.1 F2.1 B2.1 SB2.1",
    };
    expect_lists(&s, one_f_one_b);
    dsv3_pipe_schedule_destroy(&s);

    // Rank 0 warms up (v − 1)·pp + 2·(pp − 1) = 4 forwards (all of them), rank 1 two.
    s = create_or_fail(DSV3_PIPE_INTERLEAVED_1F1B, 2, 2, 2);
    static const char *const interleaved[] = {
        "F0.0 SF0.0 RF0.2 F1.0 SF1.0 RF1.2 F0.2 SF0.2 RB0.2 F1.2 SF1.2 RB1.2 B0.2 SB0.2 RB0.0 "
        "B1.2 SB1.2 RB1.0 B0.0 B1.0",
        "RF0.1 RF1.1 F0.1 SF0.1 RF0.3 F1.1 SF1.1 F0.3 RF1.3 B0.3 SB0.3 F1.3 RB0.1 B1.3 SB1.3 "
        "RB1.1 B0.1 SB0.1 B1.1 SB1.1",
    };
    expect_lists(&s, interleaved);
    dsv3_pipe_schedule_destroy(&s);
}

// GPipe and 1F1B for every pp and n_micro of the sweep: the lists, the slots, and a simulated
// bubble equal to (pp − 1) / (n_micro + pp − 1).
static void test_gpipe_and_1f1b_meet_the_bubble_formula(void **state) {
    (void)state;
    static const Dsv3PipeKind kinds[] = {DSV3_PIPE_GPIPE, DSV3_PIPE_1F1B};
    for (size_t kind = 0; kind < sizeof kinds / sizeof kinds[0]; kind++) {
        for (int p = 0; p < SWEEP_PP_COUNT; p++) {
            for (int64_t n = 1; n <= SWEEP_MAX_MICRO; n++) {
                int64_t pp = SWEEP_PP[p];
                Dsv3PipeSchedule s = create_or_fail(kinds[kind], pp, n, 1);
                for (int64_t r = 0; r < pp; r++) {
                    check_rank_counts(&s, r);
                    check_rank_list(&s, r);
                    int64_t slots = n;
                    if (kinds[kind] == DSV3_PIPE_1F1B && pp - r < n) slots = pp - r;
                    assert_int_equal(dsv3_pipe_schedule_slots(&s, r, 0), slots);
                }
                Dsv3PipeSimulation sim = simulate_or_fail(&s);
                expect_bubble(&s, &sim);
                dsv3_pipe_schedule_destroy(&s);
            }
        }
    }
}

// Interleaved 1F1B with 2 and 3 stages per rank. With this cost model torch's schedule meets
// (pp − 1) / (v · n_micro + pp − 1) exactly: every rank idles pp − 1 forward-backward pairs.
static void test_interleaved_meets_the_bubble_formula(void **state) {
    (void)state;
    for (int64_t v = 2; v <= SWEEP_MAX_V; v++) {
        for (int p = 0; p < SWEEP_PP_COUNT; p++) {
            int64_t pp = SWEEP_PP[p];
            // Multiples of pp up to SWEEP_MAX_MICRO, and at least two rounds.
            int64_t most = 2 * pp > SWEEP_MAX_MICRO ? 2 * pp : SWEEP_MAX_MICRO;
            for (int64_t n = pp; n <= most; n += pp) {
                Dsv3PipeSchedule s = create_or_fail(DSV3_PIPE_INTERLEAVED_1F1B, pp, n, v);
                for (int64_t r = 0; r < pp; r++) {
                    check_rank_counts(&s, r);
                    check_rank_list(&s, r);
                    for (int64_t k = 0; k < v; k++) {
                        int64_t slots = dsv3_pipe_schedule_slots(&s, r, k);
                        assert_true(slots >= 1 && slots <= n);
                    }
                }
                // The first stage holds up to two rounds of pp micro-batches before its first
                // backward comes back; the very last stage runs each backward right after its
                // forward.
                assert_int_equal(dsv3_pipe_schedule_slots(&s, 0, 0), n < 2 * pp ? n : 2 * pp);
                assert_int_equal(dsv3_pipe_schedule_slots(&s, pp - 1, v - 1), 1);
                Dsv3PipeSimulation sim = simulate_or_fail(&s);
                expect_bubble(&s, &sim);
                dsv3_pipe_schedule_destroy(&s);
            }
        }
    }
}

// Whether computation c consumes what RECV r receives: the F, or the B or I, of its pair.
static int consumes(const Dsv3PipeAction *r, const Dsv3PipeAction *c) {
    return c->micro == r->micro && c->stage == r->stage &&
           (r->op == DSV3_PIPE_RECV_F ? c->op == DSV3_PIPE_F
                                      : c->op == DSV3_PIPE_B || c->op == DSV3_PIPE_I);
}

// Whether compute `c` sends a message: an F before the last stage, a B or I after the first.
static int sends(const Dsv3PipeAction *c, int64_t stages) {
    return c->op == DSV3_PIPE_F ? c->stage < stages - 1 : c->op != DSV3_PIPE_W && c->stage > 0;
}

// The computations and messages of `rank`'s list obey the placement rule: a unit is one
// computation, or a paired F with the B of another stage right after it; the unit's SENDs
// follow it at once, in its order; a RECV is one unit ahead of its consumer's, or before the
// first. Each local stage has its n_micro F, I and W (a B counting as both) in micro-batch order
// with W after I.
static void check_split_list(const Dsv3PipeSchedule *s, int64_t rank) {
    const Dsv3PipeAction *list = &s->actions[s->first[rank]];
    int64_t length = s->first[rank + 1] - s->first[rank], stages = 2 * s->pp;
    Dsv3PipeAction compute[MAX_COMPUTE];
    int64_t unit[MAX_COMPUTE]; // each computation's unit
    int64_t count = 0, units = 0, next[2][3] = {{0}};
    for (int64_t i = 0; i < length; i++) {
        const Dsv3PipeAction *a = &list[i];
        if (a->op == DSV3_PIPE_RECV_F || a->op == DSV3_PIPE_SEND_F || a->op == DSV3_PIPE_RECV_B ||
            a->op == DSV3_PIPE_SEND_B)
            continue;
        assert_true(count < MAX_COMPUTE);
        int second = i > 0 && list[i - 1].paired; // the B of a pair
        unit[count] = second ? units - 1 : units++;
        compute[count++] = *a;
        int64_t k;
        assert_int_equal(dsv3_pipe_rank_of(s, a->stage, &k), rank);
        int first = a->op == DSV3_PIPE_F ? 0 : a->op == DSV3_PIPE_W ? 2 : 1;
        int last = a->op == DSV3_PIPE_B ? 2 : first;
        for (int phase = first; phase <= last; phase++) {
            assert_int_equal(a->micro, next[k][phase]++);
            if (phase > 0) assert_true(next[k][phase] <= next[k][phase - 1]);
        }
        if (a->paired) {
            assert_int_equal(a->op, DSV3_PIPE_F);
            assert_true(i + 1 < length);
            assert_int_equal(list[i + 1].op, DSV3_PIPE_B);
            assert_true(list[i + 1].stage != a->stage);
        }
        if (second) continue;
        int64_t end = a->paired ? i + 1 : i, at = end + 1;
        for (int64_t c = i; c <= end; c++) {
            if (!sends(&list[c], stages)) continue;
            assert_true(at < length);
            assert_int_equal(list[at].op,
                             list[c].op == DSV3_PIPE_F ? DSV3_PIPE_SEND_F : DSV3_PIPE_SEND_B);
            assert_int_equal(list[at].micro, list[c].micro);
            assert_int_equal(list[at].stage, list[c].stage);
            at++;
        }
    }
    for (int k = 0; k < 2; k++)
        for (int phase = 0; phase < 3; phase++)
            assert_int_equal(next[k][phase], s->n_micro);
    int64_t done = 0; // units listed before this action
    for (int64_t i = 0; i < length; i++) {
        const Dsv3PipeAction *a = &list[i];
        if (a->op != DSV3_PIPE_RECV_F && a->op != DSV3_PIPE_RECV_B) {
            int compute_op = a->op != DSV3_PIPE_SEND_F && a->op != DSV3_PIPE_SEND_B;
            done += compute_op && !(i > 0 && list[i - 1].paired);
            continue;
        }
        int64_t consumer = 0;
        while (consumer < count && !consumes(a, &compute[consumer]))
            consumer++;
        char text[ACTION_TEXT_CAPACITY];
        dsv3_pipe_action_text(a, text, sizeof text);
        if (consumer == count || (unit[consumer] != done + 1 && (done > 0 || unit[consumer] != 0)))
            fail_msg("rank %lld: %s is not one computation ahead of its consumer", (long long)rank,
                     text);
    }
}

// ZBVZeroBubble in full for pp 2 and 4 micro-batches, the computations worked out by hand from
// torch's ScheduleZBVZeroBubble: rank 0 runs 3 forwards down, then 2 up each with its I and W
// at once, the steady F-I-W pairs, and holds back two W of stage 0 to the end; rank 1 holds
// back W2.1, W3.2 and W3.1. The local hand-over from stage 1 to stage 2 on rank 1 is a message
// to itself.
static void test_zbv_list_worked_out_by_hand(void **state) {
    (void)state;
    Dsv3PipeSchedule s = create_or_fail(DSV3_PIPE_ZBV, 2, 4, 2);
    static const char *const zbv[] = {
        "F0.0 SF0.0 F1.0 SF1.0 RF0.3 F2.0 SF2.0 F0.3 I0.3 SB0.3 RF1.3 W0.3 F1.3 I1.3 SB1.3 W1.3 "
        "RB0.0 F3.0 SF3.0 I0.0 RF2.3 W0.0 F2.3 I2.3 SB2.3 RB1.0 W2.3 I1.0 RF3.3 W1.0 F3.3 I3.3 "
        "SB3.3 RB2.0 W3.3 I2.0 RB3.0 W2.0 I3.0 W3.0",
        "RF0.1 RF0.2 F0.1 SF0.1 RF1.1 F0.2 SF0.2 RF1.2 F1.1 SF1.1 RB0.2 F1.2 SF1.2 I0.2 SB0.2 "
        "RF2.1 W0.2 RB0.1 F2.1 SF2.1 I0.1 SB0.1 RF2.2 W0.1 RB1.2 F2.2 SF2.2 I1.2 SB1.2 RF3.1 "
        "W1.2 RB1.1 F3.1 SF3.1 I1.1 SB1.1 RF3.2 W1.1 RB2.2 F3.2 SF3.2 I2.2 SB2.2 RB2.1 W2.2 "
        "RB3.2 I2.1 SB2.1 RB3.1 I3.2 SB3.2 I3.1 SB3.1 W2.1 W3.2 W3.1",
    };
    expect_lists(&s, zbv);
    assert_int_equal(dsv3_pipe_schedule_slots(&s, 0, 0), 4);
    assert_int_equal(dsv3_pipe_schedule_slots(&s, 0, 1), 1);
    assert_int_equal(dsv3_pipe_schedule_slots(&s, 1, 0), 3);
    assert_int_equal(dsv3_pipe_schedule_slots(&s, 1, 1), 2);
    dsv3_pipe_schedule_destroy(&s);
}

// DualPipeV in full for pp 2 and 4 micro-batches, the computations worked out by hand from
// torch's ScheduleDualPipeV: rank 0 runs 2 forwards down, a pair down and up, I W F up, one main
// round (F3.0 with B1.3, F2.3 with B0.0), B2.3 with the pair F3.3 B1.0, then B3.3 and the split
// I2.0 I3.0 with their W; rank 1 (the last) starts the main part with F2.1 and B0.2 unpaired and
// ends with I3.2 I3.1 and their W. Without expert servers a pair is an F and a B in turn.
static void test_dualpipev_list_worked_out_by_hand(void **state) {
    (void)state;
    Dsv3PipeSchedule s = create_or_fail(DSV3_PIPE_DUALPIPEV, 2, 4, 2);
    static const char *const dualpipev[] = {
        "F0.0 SF0.0 F1.0 SF1.0 RF0.3 F2.0 SF2.0 F0.3 I0.3 SB0.3 RF1.3 W0.3 F1.3 F3.0 SF3.0 RF2.3 "
        "B1.3 SB1.3 RB0.0 F2.3 B0.0 RF3.3 B2.3 SB2.3 RB1.0 F3.3 B1.0 RB2.0 B3.3 SB3.3 I2.0 RB3.0 "
        "W2.0 I3.0 W3.0",
        "RF0.1 RF0.2 F0.1 SF0.1 RF1.1 F0.2 SF0.2 RF1.2 F1.1 SF1.1 RF2.1 F1.2 SF1.2 RB0.2 F2.1 "
        "SF2.1 RF2.2 B0.2 SB0.2 RB0.1 F2.2 SF2.2 RF3.1 B0.1 SB0.1 RB1.2 F3.1 SF3.1 RF3.2 B1.2 "
        "SB1.2 RB1.1 F3.2 SF3.2 RB2.2 B1.1 SB1.1 RB2.1 B2.2 SB2.2 RB3.2 B2.1 SB2.1 RB3.1 I3.2 "
        "SB3.2 I3.1 SB3.1 W3.2 W3.1",
    };
    expect_lists(&s, dualpipev);
    dsv3_pipe_schedule_destroy(&s);
}

// The same with expert servers: each pair is one unit, its F listed paired (PF), both RECVs
// before it, one unit ahead, and both SENDs after it; torch's unpaired F2.1 B0.2 stay apart.
static void test_dualpipev_overlapped_list_worked_out_by_hand(void **state) {
    (void)state;
    Dsv3PipeSchedule s = create_overlap_or_fail(DSV3_PIPE_DUALPIPEV, 2, 4, 2, 1);
    static const char *const dualpipev[] = {
        "F0.0 SF0.0 F1.0 SF1.0 RF0.3 F2.0 SF2.0 F0.3 I0.3 SB0.3 RF1.3 W0.3 F1.3 RF2.3 RB0.0 PF3.0 "
        "B1.3 SF3.0 SB1.3 PF2.3 B0.0 RF3.3 RB1.0 B2.3 SB2.3 PF3.3 B1.0 RB2.0 B3.3 SB3.3 I2.0 "
        "RB3.0 W2.0 I3.0 W3.0",
        "RF0.1 RF0.2 F0.1 SF0.1 RF1.1 F0.2 SF0.2 RF1.2 F1.1 SF1.1 RF2.1 F1.2 SF1.2 RB0.2 F2.1 "
        "SF2.1 RF2.2 RB0.1 B0.2 SB0.2 RF3.1 RB1.2 PF2.2 B0.1 SF2.2 SB0.1 RF3.2 RB1.1 PF3.1 B1.2 "
        "SF3.1 SB1.2 RB2.2 PF3.2 B1.1 SF3.2 SB1.1 RB2.1 B2.2 SB2.2 RB3.2 B2.1 SB2.1 RB3.1 I3.2 "
        "SB3.2 I3.1 SB3.1 W3.2 W3.1",
    };
    expect_lists(&s, dualpipev);
    dsv3_pipe_schedule_destroy(&s);
}

// ZBVZeroBubble and DualPipeV for every pp and n_micro of the sweep (DualPipeV from 2·pp on):
// the placement rule, slots within n_micro, and a simulated bubble equal to idle / (6 · n_micro
// + idle): ZBVZeroBubble and DualPipeV in turn idle = max(pp − 1, 2 · (2·pp − 1 − n_micro)),
// DualPipeV overlapped (whose pairs start once both their messages are in and send once both
// are done) DeepSeek's (pp − 1) · (F&B + B − 3·W) = 2 · (pp − 1) with F&B = F + B.
static void test_v_schedules_meet_the_bubble_formula(void **state) {
    (void)state;
    static const Dsv3PipeKind kinds[] = {DSV3_PIPE_ZBV, DSV3_PIPE_DUALPIPEV, DSV3_PIPE_DUALPIPEV};
    for (size_t kind = 0; kind < sizeof kinds / sizeof kinds[0]; kind++) {
        int overlap = kind == 2;
        for (int p = 0; p < SWEEP_PP_COUNT; p++) {
            int64_t pp = SWEEP_PP[p], least = kinds[kind] == DSV3_PIPE_ZBV ? 1 : 2 * pp;
            int64_t most = least > SWEEP_MAX_MICRO ? least : SWEEP_MAX_MICRO;
            for (int64_t n = least; n <= most; n++) {
                Dsv3PipeSchedule s = create_overlap_or_fail(kinds[kind], pp, n, 2, overlap);
                for (int64_t r = 0; r < pp; r++) {
                    check_split_list(&s, r);
                    for (int64_t k = 0; k < 2; k++) {
                        int64_t slots = dsv3_pipe_schedule_slots(&s, r, k);
                        assert_true(slots >= 1 && slots <= n);
                    }
                }
                // The first stage holds the 2·pp − 1 warm-up forwards and one more before its first
                // I and W; the last stage (on rank 0 too) runs each W right after its forward.
                assert_int_equal(dsv3_pipe_schedule_slots(&s, 0, 0), n < 2 * pp ? n : 2 * pp);
                assert_int_equal(dsv3_pipe_schedule_slots(&s, 0, 1), 1);
                Dsv3PipeSimulation sim = simulate_or_fail(&s);
                expect_bubble(&s, &sim);
                dsv3_pipe_schedule_destroy(&s);
            }
        }
    }
}

// Lists that break the pipeline's rules; the simulator names the rank and the action.
static void test_simulator_finds_deadlocks(void **state) {
    (void)state;
    // Rank 0 holds its activations back until its backward, which needs them downstream first.
    static const char *const held_back[] = {"F0.0 RB0.0 B0.0 SF0.0", "RF0.1 F0.1 B0.1 SB0.1"};
    expect_broken(DSV3_PIPE_1F1B, 2, 1, 1, held_back,
                  "pipeline schedule 1F1B (pp 2, n_micro 1) deadlocks: every unfinished rank "
                  "waits for a message that no rank can send: rank 0 at B0.0 for SB0.1 of rank 1, "
                  "rank 1 at F0.1 for SF0.0 of rank 0");
    // Both ranks start by posting receives and waiting for them: rank 0 runs stage 2 before
    // stage 0, whose activations rank 1 waits for to feed stage 2 in turn.
    static const char *const both_wait[] = {
        "RF0.2 RF1.2 F0.2 SF0.2 F0.0 SF0.0 F1.0 SF1.0 F1.2 SF1.2 RB0.2 RB1.2 B0.2 SB0.2 RB0.0 "
        "B1.2 SB1.2 RB1.0 B0.0 B1.0",
        "RF0.1 RF1.1 F0.1 SF0.1 RF0.3 F1.1 SF1.1 F0.3 RF1.3 B0.3 SB0.3 F1.3 RB0.1 B1.3 SB1.3 "
        "RB1.1 B0.1 SB0.1 B1.1 SB1.1",
    };
    expect_broken(DSV3_PIPE_INTERLEAVED_1F1B, 2, 2, 2, both_wait,
                  "pipeline schedule Interleaved1F1B (pp 2, n_micro 2) deadlocks: every "
                  "unfinished rank waits for a message that no rank can send: rank 0 at F0.2 for "
                  "SF0.1 of rank 1, rank 1 at F0.1 for SF0.0 of rank 0");
}

static void test_simulator_rejects_broken_lists(void **state) {
    (void)state;
    static const char *const b_first[] = {"B0.0 F0.0"};
    expect_broken(DSV3_PIPE_GPIPE, 1, 1, 1, b_first, "rank 0 runs B0.0 before F0.0");
    // A pair's two computations run at once: they need two models.
    static const char *const paired_alone[] = {"PF0.0 B0.0"};
    expect_broken(DSV3_PIPE_GPIPE, 1, 1, 1, paired_alone,
                  "rank 0 lists PF0.0, which is not an F followed by the B of another stage");
    static const char *const slot_reused[] = {"F0.0 F1.0 B1.0 F2.0 B0.0 B2.0"};
    expect_broken(DSV3_PIPE_GPIPE, 1, 3, 1, slot_reused,
                  "rank 0 runs F2.0 in activation slot 0 of 2, which micro-batch 0 still holds "
                  "(its B has not run)");
    static const char *const sends_swapped[] = {
        "F0.0 F1.0 SF1.0 SF0.0 RB0.0 RB1.0 B0.0 B1.0",
        "RF0.1 RF1.1 F0.1 F1.1 B0.1 SB0.1 B1.1 SB1.1",
    };
    expect_broken(DSV3_PIPE_GPIPE, 2, 2, 1, sends_swapped,
                  "rank 1: RF0.1 of F0.1 is matched with SF1.0 of rank 0: the sends of that "
                  "channel come in another order than its receives");
    static const char *const receives_swapped[] = {
        "F0.0 SF0.0 F1.0 SF1.0 RB1.0 RB0.0 B0.0 B1.0",
        "RF0.1 RF1.1 F0.1 F1.1 B0.1 SB0.1 B1.1 SB1.1",
    };
    expect_broken(DSV3_PIPE_GPIPE, 2, 2, 1, receives_swapped,
                  "rank 0: RB0.0 of B0.0 is matched with SB1.1 of rank 1: the sends of that "
                  "channel come in another order than its receives");
    static const char *const recv_late[] = {"F0.0 SF0.0 RB0.0 B0.0", "F0.1 RF0.1 B0.1 SB0.1"};
    expect_broken(DSV3_PIPE_1F1B, 2, 1, 1, recv_late, "rank 1 runs F0.1 before it posts RF0.1");
    static const char *const send_early[] = {"SF0.0 F0.0 RB0.0 B0.0", "RF0.1 F0.1 B0.1 SB0.1"};
    expect_broken(DSV3_PIPE_1F1B, 2, 1, 1, send_early, "rank 0 runs SF0.0 before F0.0");
    static const char *const missing[] = {"F0.0 SF0.0 RB0.0 B0.0", "RF0.1 F0.1 B0.1"};
    expect_broken(DSV3_PIPE_1F1B, 2, 1, 1, missing, "rank 1 does not list SB0.1");
    static const char *const repeated[] = {"F0.0 F0.0 B0.0"};
    expect_broken(DSV3_PIPE_GPIPE, 1, 1, 1, repeated, "rank 0 lists F0.0 twice");
    static const char *const wrong_rank[] = {"F0.0 SF0.0 F0.1 RB0.0 B0.0", "RF0.1 B0.1 SB0.1"};
    expect_broken(DSV3_PIPE_1F1B, 2, 1, 1, wrong_rank,
                  "rank 0 lists F0.1, but stage 1 runs on rank 1");
    static const char *const past_end[] = {"F0.0 SF0.0 B0.0"};
    expect_broken(DSV3_PIPE_GPIPE, 1, 1, 1, past_end,
                  "rank 0 lists SF0.0, a message past the end of the pipeline");
    // One rank in a v: stage 0 hands over to stage 1 on the same rank.
    static const char *const w_first[] = {"F0.0 SF0.0 W0.0 RF0.1 F0.1 RB0.0 I0.1 SB0.1 W0.1 I0.0"};
    expect_broken(DSV3_PIPE_ZBV, 1, 1, 2, w_first, "rank 0 runs W0.0 before I0.0");
    static const char *const b_and_i[] = {"F0.0 SF0.0 RF0.1 F0.1 B0.1 SB0.1 RB0.0 I0.0 W0.0 B0.0"};
    expect_broken(DSV3_PIPE_ZBV, 1, 1, 2, b_and_i,
                  "rank 0 lists B and I or W of micro-batch 0 on stage 0: a backward is a B, or "
                  "an I and a W");
    static const char *const i_alone[] = {"F0.0 SF0.0 RF0.1 F0.1 B0.1 SB0.1 RB0.0 I0.0"};
    expect_broken(DSV3_PIPE_ZBV, 1, 1, 2, i_alone,
                  "rank 0 lists I without W of micro-batch 0 on stage 0: a backward is a B, or an "
                  "I and a W");
    static const char *const no_backward[] = {"F0.0 SF0.0 RF0.1 F0.1 B0.1 SB0.1 RB0.0"};
    expect_broken(DSV3_PIPE_ZBV, 1, 1, 2, no_backward,
                  "rank 0 does not list B0.0 (or its I and W)");
    static const char *const i_in_whole[] = {"F0.0 I0.0 W0.0"};
    expect_broken(DSV3_PIPE_GPIPE, 1, 1, 1, i_in_whole,
                  "rank 0 lists I0.0, but schedule GPipe runs each backward whole (B)");
    static const char *const slot_held[] = {
        "F0.0 SF0.0 F1.0 SF1.0 RF0.1 F0.1 RB0.0 I0.1 SB0.1 W0.1 RF1.1 F1.1 RB1.0 I1.1 SB1.1 W1.1 "
        "I1.0 W1.0 F2.0 SF2.0 RF2.1 F2.1 RB2.0 I2.1 SB2.1 W2.1 I2.0 W2.0 I0.0 W0.0"};
    expect_broken(DSV3_PIPE_ZBV, 1, 3, 2, slot_held,
                  "rank 0 runs F2.0 in activation slot 0 of 2, which micro-batch 0 still holds "
                  "(its W has not run)");
    static const char *const out_of_range[] = {"F0.0 F5.0 B0.0"};
    expect_broken(DSV3_PIPE_GPIPE, 1, 1, 1, out_of_range,
                  "rank 0 lists F5.0, which is outside micro-batches [0, 1) and stages [0, 1)");
}

// A valid list that is not one of the built schedules runs too, with its own timing.
static void test_simulator_times_a_hand_made_list(void **state) {
    (void)state;
    // GPipe on two ranks but backwards in reverse order: rank 0 waits for micro-batch 1's
    // gradient, which rank 1 computes first.
    static const char *const reversed[] = {
        "F0.0 SF0.0 F1.0 SF1.0 RB1.0 RB0.0 B1.0 B0.0",
        "RF0.1 RF1.1 F0.1 F1.1 B1.1 SB1.1 B0.1 SB0.1",
    };
    HandSchedule h;
    hand_schedule(&h, DSV3_PIPE_GPIPE, 2, 2, 1, reversed);
    Dsv3PipeSimulation sim;
    assert_int_equal(dsv3_pipe_schedule_simulate(&h.s, T_FORWARD, T_BACKWARD, &sim), DSV3_OK);
    // Forwards end at 1, 2 (rank 0) and 2, 3 (rank 1); rank 1's backwards end at 5 and 7, rank
    // 0's at 7 and 9.
    assert_true(sim.makespan == 9.0);
    assert_true(sim.busy_max == 6.0);
    assert_true(sim.idle_fraction == 1.0 - 12.0 / 18.0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        LEAK_CHECKED(test_kind_names_round_trip),
        LEAK_CHECKED(test_action_texts),
        LEAK_CHECKED(test_stage_and_rank_of_interleaved),
        LEAK_CHECKED(test_stage_and_rank_of_v),
        LEAK_CHECKED(test_create_names_the_bad_keys),
        LEAK_CHECKED(test_simulate_checks_its_arguments),
        LEAK_CHECKED(test_small_lists_worked_out_by_hand),
        LEAK_CHECKED(test_gpipe_and_1f1b_meet_the_bubble_formula),
        LEAK_CHECKED(test_interleaved_meets_the_bubble_formula),
        LEAK_CHECKED(test_zbv_list_worked_out_by_hand),
        LEAK_CHECKED(test_dualpipev_list_worked_out_by_hand),
        LEAK_CHECKED(test_dualpipev_overlapped_list_worked_out_by_hand),
        LEAK_CHECKED(test_v_schedules_meet_the_bubble_formula),
        LEAK_CHECKED(test_simulator_finds_deadlocks),
        LEAK_CHECKED(test_simulator_rejects_broken_lists),
        LEAK_CHECKED(test_simulator_times_a_hand_made_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
