// pipeline_schedule: the per-rank action lists of GPipe, 1F1B, Interleaved 1F1B, ZBVZeroBubble
// and DualPipeV, and a simulator that runs them and checks every dependency; see
// pipeline_schedule.h.
#include "pipeline_schedule.h"

#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"

static const char *const KIND_NAMES[] = {"GPipe", "1F1B", "Interleaved1F1B", "ZBVZeroBubble",
                                         "DualPipeV"};
_Static_assert(sizeof KIND_NAMES / sizeof KIND_NAMES[0] == DSV3_PIPE_KIND_COUNT,
               "one name per schedule kind");

// Action texts are "<prefix><micro>.<stage>"; the prefixes follow Dsv3PipeOp's order.
static const char *const OP_PREFIXES[] = {"F", "B", "RF", "SF", "RB", "SB", "I", "W"};
enum { PIPE_OP_COUNT = sizeof OP_PREFIXES / sizeof OP_PREFIXES[0] };

// Room for one action text: a prefix and two int32 numbers.
enum { PIPE_TEXT_CAPACITY = 32 };

// Blocked ranks a deadlock message lists before it stops with "…", and room for each
// ("rank <r> at <action> for <action> of rank <r>").
enum { PIPE_DEADLOCK_LISTED = 8, PIPE_WAIT_CAPACITY = 4 * PIPE_TEXT_CAPACITY };

// The most (micro-batch, stage) pairs a schedule lists. Far beyond any job; it keeps micro-batch
// and stage numbers in the int32 fields of Dsv3PipeAction and every count and size in range.
#define PIPE_MAX_UNITS ((int64_t)1 << 30)

// Per (micro-batch, stage) pair: one F and one B (or an I and a W), and for every stage boundary
// it crosses one SEND and one RECV each way. Over V stages: n_micro · (c·V + 4·(V − 1)) actions,
// c computations per pair.
enum { PIPE_MESSAGES_PER_BOUNDARY = 4 };

// The phases of a pair's computations the simulator tracks: the forward, the input gradients
// (B or I) and the weight gradients (B or W).
enum { PIPE_PHASE_F, PIPE_PHASE_INPUT, PIPE_PHASE_WEIGHT, PIPE_PHASE_COUNT };

// The two directions of a channel between neighbouring ranks: activations and gradients.
enum { PIPE_DIR_F, PIPE_DIR_B, PIPE_DIR_COUNT };

Dsv3Err dsv3_pipe_kind_parse(const char *name, Dsv3PipeKind *out) {
    DSV3_CHECK(name != NULL && out != NULL, DSV3_ERR_USAGE,
               "dsv3_pipe_kind_parse: name or out is NULL");
    for (int k = 0; k < DSV3_PIPE_KIND_COUNT; k++) {
        if (strcmp(name, KIND_NAMES[k]) == 0) {
            *out = (Dsv3PipeKind)k;
            return DSV3_OK;
        }
    }
    DSV3_RAISE(DSV3_ERR_CONFIG,
               "parallelism.pipeline_parallel_schedule is \"%s\", but it must be one of %s, %s, "
               "%s, %s or %s",
               name, KIND_NAMES[0], KIND_NAMES[1], KIND_NAMES[2], KIND_NAMES[3], KIND_NAMES[4]);
}

const char *dsv3_pipe_kind_name(Dsv3PipeKind kind) {
    return (int)kind >= 0 && (int)kind < DSV3_PIPE_KIND_COUNT ? KIND_NAMES[kind] : "unknown";
}

int dsv3_pipe_kind_is_looped(Dsv3PipeKind kind) { return kind == DSV3_PIPE_INTERLEAVED_1F1B; }

int dsv3_pipe_kind_is_v_shaped(Dsv3PipeKind kind) {
    return kind == DSV3_PIPE_ZBV || kind == DSV3_PIPE_DUALPIPEV;
}

// The v schedules are the ones whose models split backward.
int dsv3_pipe_kind_splits_backward(Dsv3PipeKind kind) { return dsv3_pipe_kind_is_v_shaped(kind); }

int dsv3_pipe_name_is_v_shaped(const char *name) {
    for (int k = 0; k < DSV3_PIPE_KIND_COUNT; k++)
        if (strcmp(name, KIND_NAMES[k]) == 0) return dsv3_pipe_kind_is_v_shaped((Dsv3PipeKind)k);
    return 0;
}

int64_t dsv3_pipe_stage_of(const Dsv3PipeSchedule *s, int64_t rank, int64_t k) {
    if (dsv3_pipe_kind_is_v_shaped(s->kind)) return k == 0 ? rank : 2 * s->pp - 1 - rank;
    return k * s->pp + rank;
}

int64_t dsv3_pipe_rank_of(const Dsv3PipeSchedule *s, int64_t stage, int64_t *local) {
    if (dsv3_pipe_kind_is_v_shaped(s->kind)) {
        if (local != NULL) *local = stage >= s->pp;
        return stage < s->pp ? stage : 2 * s->pp - 1 - stage;
    }
    if (local != NULL) *local = stage / s->pp;
    return stage % s->pp;
}

// The most computations per (micro-batch, stage) pair: F and B, or F, I and W.
static int64_t pipe_compute_per_unit(Dsv3PipeKind kind) {
    return dsv3_pipe_kind_splits_backward(kind) ? 3 : 2;
}

void dsv3_pipe_action_text(const Dsv3PipeAction *a, char *out, size_t capacity) {
    const char *prefix = (int)a->op >= 0 && (int)a->op < PIPE_OP_COUNT ? OP_PREFIXES[a->op] : "?";
    snprintf(out, capacity, "%s%s%d.%d", a->paired ? "P" : "", prefix, (int)a->micro,
             (int)a->stage);
}

int64_t dsv3_pipe_stage_count(const Dsv3PipeSchedule *s) { return s->pp * s->stages_per_rank; }

// The checks of dsv3_pipe_schedule_create, with the config keys each number comes from.
static Dsv3Err pipe_check_shape(Dsv3PipeKind kind, int64_t pp, int64_t n_micro,
                                int64_t stages_per_rank) {
    const char *name = dsv3_pipe_kind_name(kind);
    DSV3_CHECK((int)kind >= 0 && (int)kind < DSV3_PIPE_KIND_COUNT, DSV3_ERR_USAGE,
               "pipeline schedule kind %d is not a Dsv3PipeKind", (int)kind);
    DSV3_CHECK(pp >= 1, DSV3_ERR_CONFIG,
               "parallelism.pipeline_parallel_degree is %lld, but a pipeline needs at least 1 rank",
               (long long)pp);
    DSV3_CHECK(n_micro >= 1, DSV3_ERR_CONFIG,
               "the pipeline gets %lld micro-batches (training.local_batch_size / "
               "parallelism.pipeline_parallel_microbatch_size), but it needs at least 1",
               (long long)n_micro);
    if (dsv3_pipe_kind_is_v_shaped(kind)) {
        DSV3_CHECK(stages_per_rank == 2, DSV3_ERR_CONFIG,
                   "pipeline schedule %s runs 2 stages per rank, but it was given %lld "
                   "(parallelism.pipeline_parallel_layers_per_stage)",
                   name, (long long)stages_per_rank);
        // torch's DualPipeV needs as many micro-batches as stages for its main part.
        DSV3_CHECK(kind != DSV3_PIPE_DUALPIPEV || n_micro >= 2 * pp, DSV3_ERR_CONFIG,
                   "pipeline schedule %s needs at least as many micro-batches as stages, 2 × "
                   "parallelism.pipeline_parallel_degree %lld = %lld, but it gets %lld "
                   "(training.local_batch_size / parallelism.pipeline_parallel_microbatch_size)",
                   name, (long long)pp, (long long)(2 * pp), (long long)n_micro);
    } else if (dsv3_pipe_kind_is_looped(kind)) {
        DSV3_CHECK(stages_per_rank >= 2, DSV3_ERR_CONFIG,
                   "pipeline schedule %s runs at least 2 stages per rank, but it was given %lld "
                   "(parallelism.pipeline_parallel_layers_per_stage)",
                   name, (long long)stages_per_rank);
        // torch's interleaved rounds take pp micro-batches each (microbatches_per_round).
        DSV3_CHECK(n_micro % pp == 0, DSV3_ERR_CONFIG,
                   "pipeline schedule %s needs a multiple of parallelism.pipeline_parallel_degree "
                   "%lld micro-batches, but it gets %lld (training.local_batch_size / "
                   "parallelism.pipeline_parallel_microbatch_size)",
                   name, (long long)pp, (long long)n_micro);
    } else {
        DSV3_CHECK(stages_per_rank == 1, DSV3_ERR_CONFIG,
                   "pipeline schedule %s runs one stage per rank, but it was given %lld "
                   "(parallelism.pipeline_parallel_layers_per_stage)",
                   name, (long long)stages_per_rank);
    }
    // Dividing keeps the products from overflowing before they are compared.
    DSV3_CHECK(pp <= PIPE_MAX_UNITS / stages_per_rank &&
                   n_micro <= PIPE_MAX_UNITS / (pp * stages_per_rank),
               DSV3_ERR_CONFIG,
               "a pipeline of parallelism.pipeline_parallel_degree %lld × %lld stages per rank "
               "and %lld micro-batches has more than %lld (stage, micro-batch) pairs to schedule",
               (long long)pp, (long long)stages_per_rank, (long long)n_micro,
               (long long)PIPE_MAX_UNITS);
    return DSV3_OK;
}

// Forwards a rank runs before its first backward. GPipe runs all of them. 1F1B lets the
// micro-batches reach the last stage (one fewer per rank towards it); the last rank starts
// backwards at once. Interleaved 1F1B follows torch's _get_warmup_ops: the last rank fills its
// first v − 1 local stages for one round of pp micro-batches, and each rank before it runs two
// more per hop.
static int64_t pipe_warmup(const Dsv3PipeSchedule *s, int64_t rank) {
    int64_t n = s->n_micro, v = s->stages_per_rank, pp = s->pp, most = v * n, warmup = n;
    if (s->kind == DSV3_PIPE_1F1B)
        warmup = pp - 1 - rank;
    else if (s->kind == DSV3_PIPE_INTERLEAVED_1F1B)
        warmup = (v - 1) * pp + 2 * (pp - 1 - rank);
    return warmup < most ? warmup : most;
}

// The compute action of forward step i (backward step j): steps go in rounds of pp
// micro-batches, forwards through the local stages upwards, backwards downwards; each stage
// takes its micro-batches in order (torch's forward_stage_index and backward_stage_index with
// microbatches_per_round = pp). With one stage per rank this is micro-batch i on it.
static Dsv3PipeAction pipe_compute_step(const Dsv3PipeSchedule *s, int64_t rank, Dsv3PipeOp op,
                                        int64_t step) {
    int64_t pp = s->pp, v = s->stages_per_rank, round = step / pp;
    int64_t k = round % v;
    if (op == DSV3_PIPE_B) k = v - 1 - k;
    return (Dsv3PipeAction){.op = op,
                            .micro = (int32_t)((round / v) * pp + step % pp),
                            .stage = (int32_t)dsv3_pipe_stage_of(s, rank, k)};
}

// The computations of one rank of a v, as torch's ScheduleZBVZeroBubble and ScheduleDualPipeV
// order them: chunk 0 is the rank's stage on the way down, chunk 1 the one on the way up.
typedef struct {
    const Dsv3PipeSchedule *s;
    int64_t rank;
    Dsv3PipeAction *out;
    int64_t used;
    int64_t f[2], i[2], w[2]; // the next micro-batch of F, of B or I, and of W (or B) per chunk
    int64_t queued;           // out[queued …] holds the I whose W has not been listed
} VOrder;

// Appends `op` (F, B, I or W) of chunk k's next micro-batch for that op, unless the pipeline
// has no such micro-batch (ZBVZeroBubble's order is built for at least 2·pp − 1 of them and cut
// back). A B counts as an I and a W.
static void v_push(VOrder *z, Dsv3PipeOp op, int k) {
    int64_t *next = op == DSV3_PIPE_F ? &z->f[k] : op == DSV3_PIPE_W ? &z->w[k] : &z->i[k];
    int64_t micro = (*next)++;
    if (op == DSV3_PIPE_B) z->w[k]++;
    if (micro >= z->s->n_micro) return;
    z->out[z->used++] = (Dsv3PipeAction){
        .op = op, .micro = (int32_t)micro, .stage = (int32_t)dsv3_pipe_stage_of(z->s, z->rank, k)};
}

// Warm-up: 2·(pp − r) − 1 forwards down, r pairs of forwards up and down, pp − r forwards up
// each followed at once by its I and W. Steady: F down, I W down, F up, I W up while forwards
// remain. Cool-down: r pairs of I down and up, pp − r of I and a held-back W down, then every
// held-back W, up before down. Writes 3 · 2 · n_micro actions.
static int64_t zbv_compute_order(const Dsv3PipeSchedule *s, int64_t rank, Dsv3PipeAction *out) {
    int64_t pp = s->pp, n = s->n_micro > 2 * pp - 1 ? s->n_micro : 2 * pp - 1;
    VOrder z = {.s = s, .rank = rank, .out = out};
    for (int64_t j = 0; j < 2 * (pp - rank) - 1; j++)
        v_push(&z, DSV3_PIPE_F, 0);
    for (int64_t j = 0; j < rank; j++) {
        v_push(&z, DSV3_PIPE_F, 1);
        v_push(&z, DSV3_PIPE_F, 0);
    }
    for (int64_t j = 0; j < pp - rank; j++) {
        v_push(&z, DSV3_PIPE_F, 1);
        v_push(&z, DSV3_PIPE_I, 1);
        v_push(&z, DSV3_PIPE_W, 1);
    }
    while (z.f[1] < z.f[0] || z.f[0] < n) {
        if (z.f[0] < n) v_push(&z, DSV3_PIPE_F, 0);
        v_push(&z, DSV3_PIPE_I, 0);
        v_push(&z, DSV3_PIPE_W, 0);
        v_push(&z, DSV3_PIPE_F, 1);
        v_push(&z, DSV3_PIPE_I, 1);
        v_push(&z, DSV3_PIPE_W, 1);
    }
    for (int64_t j = 0; j < rank; j++) {
        v_push(&z, DSV3_PIPE_I, 0);
        v_push(&z, DSV3_PIPE_I, 1);
    }
    for (int64_t j = 0; j < pp - rank; j++) {
        v_push(&z, DSV3_PIPE_I, 0);
        v_push(&z, DSV3_PIPE_W, 0);
    }
    while (z.w[1] < z.i[1])
        v_push(&z, DSV3_PIPE_W, 1);
    while (z.w[0] < z.i[0])
        v_push(&z, DSV3_PIPE_W, 0);
    return z.used;
}

// DualPipeV's W of the oldest I still without one, if any.
static void dualpipev_weight(VOrder *z) {
    while (z->queued < z->used && z->out[z->queued].op != DSV3_PIPE_I)
        z->queued++;
    if (z->queued == z->used) return;
    const Dsv3PipeAction *i = &z->out[z->queued++];
    int64_t k;
    dsv3_pipe_rank_of(z->s, i->stage, &k);
    z->w[k]++;
    z->out[z->used++] = (Dsv3PipeAction){.op = DSV3_PIPE_W, .micro = i->micro, .stage = i->stage};
}

// DualPipeV's pair: the forward of chunk f's next micro-batch, marked paired where pairs
// overlap (and `overlap` allows), and the whole backward of chunk b's right after it.
static void dualpipev_pair(VOrder *z, int f, int b, int overlap) {
    int64_t before = z->used;
    v_push(z, DSV3_PIPE_F, f);
    v_push(z, DSV3_PIPE_B, b);
    if (z->used == before + 2 && z->s->overlap_pairs && overlap) z->out[before].paired = 1;
}

// torch's ScheduleDualPipeV, with n_micro ≥ 2·pp: (pp − r − 1)·2 forwards down; r + 1 pairs of
// forwards down and up; pp − r − 1 of I up, a pending W, F up; the main part, n − 2·pp + r + 1
// times a forward down with a backward up (on the last rank the first time not as a pair) and
// a forward up with a backward down; pp − r − 1 of B up with a pair F up B down; r + 1 of
// backwards up and down, the second half of them as I; pp − r − 1 of a pending W and a backward
// down; the pending W.
static int64_t dualpipev_compute_order(const Dsv3PipeSchedule *s, int64_t rank,
                                       Dsv3PipeAction *out) {
    int64_t pp = s->pp, n = s->n_micro;
    VOrder z = {.s = s, .rank = rank, .out = out};
    for (int64_t j = 0; j < 2 * (pp - rank - 1); j++)
        v_push(&z, DSV3_PIPE_F, 0);
    for (int64_t j = 0; j < rank + 1; j++) {
        v_push(&z, DSV3_PIPE_F, 0);
        v_push(&z, DSV3_PIPE_F, 1);
    }
    for (int64_t j = 0; j < pp - rank - 1; j++) {
        v_push(&z, DSV3_PIPE_I, 1);
        dualpipev_weight(&z);
        v_push(&z, DSV3_PIPE_F, 1);
    }
    for (int64_t j = 0; j < n - 2 * pp + rank + 1; j++) {
        // torch does not overlap the first forward down with its backward up on the last rank.
        dualpipev_pair(&z, 0, 1, j > 0 || rank < pp - 1);
        dualpipev_pair(&z, 1, 0, 1);
    }
    for (int64_t j = 0; j < pp - rank - 1; j++) {
        v_push(&z, DSV3_PIPE_B, 1);
        dualpipev_pair(&z, 1, 0, 1);
    }
    // From the middle of these on (up first on odd ranks, down first on even ones) backwards
    // split, and their W fill what follows.
    int split = 0;
    for (int64_t j = 0; j < rank + 1; j++) {
        if (j == (rank + 1) / 2 && rank % 2 == 1) split = 1;
        v_push(&z, split ? DSV3_PIPE_I : DSV3_PIPE_B, 1);
        if (j == (rank + 1) / 2 && rank % 2 == 0) split = 1;
        v_push(&z, split ? DSV3_PIPE_I : DSV3_PIPE_B, 0);
    }
    for (int64_t j = 0; j < pp - rank - 1; j++) {
        dualpipev_weight(&z);
        v_push(&z, split ? DSV3_PIPE_I : DSV3_PIPE_B, 0);
    }
    while (z.queued < z.used)
        dualpipev_weight(&z);
    return z.used;
}

// The computations of `rank` in order: warm-up forwards, then one forward and one backward
// while forwards remain, then the remaining backwards (the v schedules: their own orders).
// Writes at most pipe_compute_per_unit · v · n_micro actions and returns their count.
static int64_t pipe_compute_order(const Dsv3PipeSchedule *s, int64_t rank, Dsv3PipeAction *out) {
    if (s->kind == DSV3_PIPE_ZBV) return zbv_compute_order(s, rank, out);
    if (s->kind == DSV3_PIPE_DUALPIPEV) return dualpipev_compute_order(s, rank, out);
    int64_t total = s->stages_per_rank * s->n_micro, warmup = pipe_warmup(s, rank);
    int64_t used = 0, f = 0, b = 0;
    while (f < warmup)
        out[used++] = pipe_compute_step(s, rank, DSV3_PIPE_F, f++);
    while (f < total) {
        out[used++] = pipe_compute_step(s, rank, DSV3_PIPE_F, f++);
        out[used++] = pipe_compute_step(s, rank, DSV3_PIPE_B, b++);
    }
    while (b < total)
        out[used++] = pipe_compute_step(s, rank, DSV3_PIPE_B, b++);
    return used;
}

// Whether compute `c` takes a message from a neighbour (an F after the first stage, a B or I
// before the last), and whether it gives one (an F before the last stage, a B or I after the
// first). A W takes and gives none.
static int pipe_receives(const Dsv3PipeSchedule *s, const Dsv3PipeAction *c) {
    if (c->op == DSV3_PIPE_W) return 0;
    return c->op == DSV3_PIPE_F ? c->stage > 0 : c->stage < dsv3_pipe_stage_count(s) - 1;
}

static int pipe_sends(const Dsv3PipeSchedule *s, const Dsv3PipeAction *c) {
    if (c->op == DSV3_PIPE_W) return 0;
    return c->op == DSV3_PIPE_F ? c->stage < dsv3_pipe_stage_count(s) - 1 : c->stage > 0;
}

static Dsv3PipeAction pipe_with_op(const Dsv3PipeAction *c, Dsv3PipeOp op) {
    return (Dsv3PipeAction){.op = op, .micro = c->micro, .stage = c->stage};
}

// Appends compute c's RECV, if it takes a message.
static void pipe_emit_recv(const Dsv3PipeSchedule *s, const Dsv3PipeAction *c, Dsv3PipeAction *out,
                           int64_t *used) {
    if (pipe_receives(s, c))
        out[(*used)++] =
            pipe_with_op(c, c->op == DSV3_PIPE_F ? DSV3_PIPE_RECV_F : DSV3_PIPE_RECV_B);
}

// Appends compute c's SEND, if it gives a message.
static void pipe_emit_send(const Dsv3PipeSchedule *s, const Dsv3PipeAction *c, Dsv3PipeAction *out,
                           int64_t *used) {
    if (pipe_sends(s, c))
        out[(*used)++] =
            pipe_with_op(c, c->op == DSV3_PIPE_F ? DSV3_PIPE_SEND_F : DSV3_PIPE_SEND_B);
}

// Appends rank's computations with their messages: each SEND right after its compute, each RECV
// one compute ahead of its consumer (before the compute that precedes it, or first) so that
// the transfer overlaps that compute. A paired F and its B count as one compute: both RECVs
// before them, both SENDs after.
static void pipe_emit(const Dsv3PipeSchedule *s, const Dsv3PipeAction *compute, int64_t count,
                      Dsv3PipeAction *out, int64_t *used) {
    for (int64_t i = 0; i < count; i++) {
        int64_t last = compute[i].paired ? i + 1 : i; // the unit's last compute
        int64_t ahead = last + 1 < count && compute[last + 1].paired ? last + 2 : last + 1;
        for (int64_t c = i == 0 ? 0 : last + 1; c <= ahead && c < count; c++)
            pipe_emit_recv(s, &compute[c], out, used);
        for (int64_t c = i; c <= last; c++)
            out[(*used)++] = compute[c];
        for (int64_t c = i; c <= last; c++)
            pipe_emit_send(s, &compute[c], out, used);
        i = last;
    }
}

Dsv3Err dsv3_pipe_schedule_create(Dsv3PipeSchedule *out, Dsv3PipeKind kind, int64_t pp,
                                  int64_t n_micro, int64_t stages_per_rank, int overlap_pairs) {
    DSV3_CHECK(out != NULL, DSV3_ERR_USAGE, "dsv3_pipe_schedule_create: out is NULL");
    *out = (Dsv3PipeSchedule){0};
    DSV3_CALL(pipe_check_shape(kind, pp, n_micro, stages_per_rank));
    Dsv3PipeSchedule s = {.kind = kind,
                          .pp = pp,
                          .n_micro = n_micro,
                          .stages_per_rank = stages_per_rank,
                          .overlap_pairs = kind == DSV3_PIPE_DUALPIPEV && overlap_pairs};
    // Room for the most computations (a split backward everywhere) and every message.
    int64_t stages = dsv3_pipe_stage_count(&s), per_unit = pipe_compute_per_unit(kind),
            per_rank = per_unit * stages_per_rank * n_micro;
    int64_t messages = n_micro * PIPE_MESSAGES_PER_BOUNDARY * (stages - 1);
    int64_t n_actions = n_micro * per_unit * stages + messages, computed = 0;
    Dsv3PipeAction *compute = NULL;
    Dsv3Err err;
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&s.first, (size_t)pp + 1, sizeof *s.first,
                               "pipeline schedule offsets"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&s.actions, (size_t)n_actions, sizeof *s.actions,
                               "pipeline schedule actions"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&compute, (size_t)per_rank, sizeof *compute,
                               "pipeline schedule computations"));
    int64_t used = 0;
    for (int64_t r = 0; r < pp; r++) {
        s.first[r] = used;
        int64_t count = pipe_compute_order(&s, r, compute);
        pipe_emit(&s, compute, count, s.actions, &used);
        computed += count;
    }
    s.first[pp] = used;
    DSV3_CHECK_GOTO(err, fail, used - computed == messages, DSV3_ERR_INTERNAL,
                    "pipeline schedule %s (pp %lld, %lld micro-batches, %lld stages per rank) "
                    "lists %lld messages, but %lld were expected",
                    KIND_NAMES[kind], (long long)pp, (long long)n_micro, (long long)stages_per_rank,
                    (long long)(used - computed), (long long)messages);
    dsv3_free(compute);
    *out = s;
    return DSV3_OK;
fail:
    dsv3_free(compute);
    dsv3_pipe_schedule_destroy(&s);
    return err;
}

void dsv3_pipe_schedule_destroy(Dsv3PipeSchedule *s) {
    if (s == NULL) return;
    dsv3_free(s->first);
    dsv3_free(s->actions);
    *s = (Dsv3PipeSchedule){0};
}

int64_t dsv3_pipe_schedule_slots(const Dsv3PipeSchedule *s, int64_t rank, int64_t k) {
    int64_t stage = dsv3_pipe_stage_of(s, rank, k), held = 0, most = 0;
    for (int64_t i = s->first[rank]; i < s->first[rank + 1]; i++) {
        const Dsv3PipeAction *a = &s->actions[i];
        if (a->stage != stage) continue;
        if (a->op == DSV3_PIPE_F && ++held > most) most = held;
        // A B or W ahead of its F (a broken list, which the simulator rejects) frees no slot.
        if ((a->op == DSV3_PIPE_B || a->op == DSV3_PIPE_W) && held > 0) held--;
    }
    return most;
}

double dsv3_pipe_schedule_bubble(const Dsv3PipeSchedule *s) {
    double pp = (double)s->pp, units = (double)(s->stages_per_rank * s->n_micro);
    if (s->overlap_pairs) { // (pp − 1)·(F&B + B − 3·W), F&B = F + B
        double idle = (pp - 1.0) * 2.0;
        return idle / (3.0 * units + idle);
    }
    if (dsv3_pipe_kind_splits_backward(s->kind)) { // in units of one forward (see the header)
        double short_of_full = 2.0 * (2.0 * pp - 1.0 - (double)s->n_micro);
        double idle = short_of_full > pp - 1.0 ? short_of_full : pp - 1.0;
        return idle / (3.0 * units + idle);
    }
    return (pp - 1.0) / (units + pp - 1.0);
}

// ---- Simulation ----

// A SEND that ran: what it carried and when.
typedef struct {
    int32_t micro, stage;
    double time;
} PipeMessage;

// The state of a simulation. Pairs (m, s) index as m · V + s; a channel, (source rank,
// destination rank, direction), as (source · pp + destination) · PIPE_DIR_COUNT + direction.
typedef struct {
    const Dsv3PipeSchedule *s;
    int64_t stages, units; // V and n_micro · V
    int64_t channels;      // pp · pp · PIPE_DIR_COUNT
    double t_forward, t_backward;
    uint8_t *seen;        // (PIPE_OP_COUNT, units): how often each action is listed
    uint8_t *done;        // (PIPE_PHASE_COUNT, units): which phases of a pair ran
    int64_t *posted_at;   // (PIPE_DIR_COUNT, units): the channel position of the pair's RECV, or -1
    PipeMessage *sent;    // (channels, v · n_micro): each channel's SENDs in order
    int64_t *n_sent;      // (channels)
    int64_t *n_posted;    // (channels): RECVs posted on each channel
    int64_t *slots;       // (pp, v)
    int64_t *holder;      // (pp, v, n_micro): the micro-batch in each activation slot, or -1
    int64_t *pc;          // (pp): the next action of each rank
    double *clock, *busy; // (pp): when each rank's last action ended; its compute time
} PipeSim;

static void pipe_sim_free(PipeSim *sim) {
    dsv3_free(sim->seen);
    dsv3_free(sim->done);
    dsv3_free(sim->posted_at);
    dsv3_free(sim->sent);
    dsv3_free(sim->n_sent);
    dsv3_free(sim->n_posted);
    dsv3_free(sim->slots);
    dsv3_free(sim->holder);
    dsv3_free(sim->pc);
    dsv3_free(sim->clock);
    dsv3_free(sim->busy);
}

// Allocates the state; pipe_sim_free releases it also after a failure here.
static Dsv3Err pipe_sim_alloc(PipeSim *sim) {
    const Dsv3PipeSchedule *s = sim->s;
    size_t units = (size_t)sim->units, pp = (size_t)s->pp, v = (size_t)s->stages_per_rank;
    size_t n = (size_t)s->n_micro, channels = (size_t)sim->channels;
    DSV3_CALL(
        dsv3_calloc((void **)&sim->seen, PIPE_OP_COUNT * units, 1, "simulated action counts"));
    DSV3_CALL(
        dsv3_calloc((void **)&sim->done, PIPE_PHASE_COUNT * units, 1, "simulated computations"));
    DSV3_CALL(dsv3_calloc((void **)&sim->posted_at, PIPE_DIR_COUNT * units, sizeof *sim->posted_at,
                          "simulated receives"));
    DSV3_CALL(dsv3_calloc((void **)&sim->sent, channels * v * n, sizeof *sim->sent,
                          "simulated messages"));
    DSV3_CALL(dsv3_calloc((void **)&sim->n_sent, channels, sizeof *sim->n_sent,
                          "simulated channel sends"));
    DSV3_CALL(dsv3_calloc((void **)&sim->n_posted, channels, sizeof *sim->n_posted,
                          "simulated channel receives"));
    DSV3_CALL(dsv3_calloc((void **)&sim->slots, pp * v, sizeof *sim->slots, "simulated slots"));
    DSV3_CALL(dsv3_calloc((void **)&sim->holder, pp * v * n, sizeof *sim->holder,
                          "simulated slot holders"));
    DSV3_CALL(dsv3_calloc((void **)&sim->pc, pp, sizeof *sim->pc, "simulated ranks"));
    DSV3_CALL(dsv3_calloc((void **)&sim->clock, pp, sizeof *sim->clock, "simulated clocks"));
    DSV3_CALL(dsv3_calloc((void **)&sim->busy, pp, sizeof *sim->busy, "simulated busy times"));
    return DSV3_OK;
}

static int64_t pipe_unit(const PipeSim *sim, const Dsv3PipeAction *a) {
    return (int64_t)a->micro * sim->stages + a->stage;
}

// Whether a pipeline has action `op` on `stage`: F on every stage, messages only across the
// boundaries between stages (nothing comes before the first or after the last). A backward is
// B, or I and W where the schedule splits it (pipe_check_backward).
static int pipe_exists(const PipeSim *sim, Dsv3PipeOp op, int64_t stage) {
    if (op == DSV3_PIPE_RECV_F || op == DSV3_PIPE_SEND_B) return stage > 0;
    if (op == DSV3_PIPE_SEND_F || op == DSV3_PIPE_RECV_B) return stage < sim->stages - 1;
    return op == DSV3_PIPE_F;
}

// The backward of pair (m, st) is listed once: a B, or an I and a W.
static Dsv3Err pipe_check_backward(const PipeSim *sim, int64_t m, int64_t st) {
    Dsv3PipeAction a = {.op = DSV3_PIPE_B, .micro = (int32_t)m, .stage = (int32_t)st};
    int64_t unit = pipe_unit(sim, &a), rank = dsv3_pipe_rank_of(sim->s, st, NULL);
    int b = sim->seen[DSV3_PIPE_B * sim->units + unit];
    int i = sim->seen[DSV3_PIPE_I * sim->units + unit];
    int w = sim->seen[DSV3_PIPE_W * sim->units + unit];
    char text[PIPE_TEXT_CAPACITY];
    dsv3_pipe_action_text(&a, text, sizeof text);
    DSV3_CHECK(b || i || w, DSV3_ERR_INTERNAL, "rank %lld does not list %s%s", (long long)rank,
               text, dsv3_pipe_kind_splits_backward(sim->s->kind) ? " (or its I and W)" : "");
    DSV3_CHECK(b ? !i && !w : i && w, DSV3_ERR_INTERNAL,
               "rank %lld lists %s of micro-batch %lld on stage %lld: a backward is a B, or an I "
               "and a W",
               (long long)rank,
               b   ? "B and I or W"
               : i ? "I without W"
                   : "W without I",
               (long long)m, (long long)st);
    return DSV3_OK;
}

// Checks that every action is in range, on the rank of its stage and listed exactly once, and
// that every action the pipeline needs is there: F and the backward of every pair, and a SEND
// and a RECV for every message between neighbouring stages.
static Dsv3Err pipe_check_lists(PipeSim *sim) {
    const Dsv3PipeSchedule *s = sim->s;
    char text[PIPE_TEXT_CAPACITY];
    DSV3_CHECK(s->first[0] == 0, DSV3_ERR_INTERNAL,
               "rank 0's actions start at %lld, not at the first action", (long long)s->first[0]);
    for (int64_t r = 0; r < s->pp; r++) {
        DSV3_CHECK(s->first[r + 1] >= s->first[r], DSV3_ERR_INTERNAL,
                   "rank %lld's actions end at %lld, before they start at %lld", (long long)r,
                   (long long)s->first[r + 1], (long long)s->first[r]);
        for (int64_t i = s->first[r]; i < s->first[r + 1]; i++) {
            const Dsv3PipeAction *a = &s->actions[i];
            dsv3_pipe_action_text(a, text, sizeof text);
            DSV3_CHECK((int)a->op >= 0 && (int)a->op < PIPE_OP_COUNT && a->micro >= 0 &&
                           a->micro < s->n_micro && a->stage >= 0 && a->stage < sim->stages,
                       DSV3_ERR_INTERNAL,
                       "rank %lld lists %s, which is outside micro-batches [0, %lld) and stages "
                       "[0, %lld)",
                       (long long)r, text, (long long)s->n_micro, (long long)sim->stages);
            int64_t owner = dsv3_pipe_rank_of(s, a->stage, NULL);
            DSV3_CHECK(owner == r, DSV3_ERR_INTERNAL,
                       "rank %lld lists %s, but stage %d runs on rank %lld", (long long)r, text,
                       (int)a->stage, (long long)owner);
            DSV3_CHECK(dsv3_pipe_kind_splits_backward(s->kind) ||
                           (a->op != DSV3_PIPE_I && a->op != DSV3_PIPE_W),
                       DSV3_ERR_INTERNAL,
                       "rank %lld lists %s, but schedule %s runs each backward whole (B)",
                       (long long)r, text, dsv3_pipe_kind_name(s->kind));
            int compute = a->op == DSV3_PIPE_B || a->op == DSV3_PIPE_I || a->op == DSV3_PIPE_W;
            DSV3_CHECK(compute || pipe_exists(sim, a->op, a->stage), DSV3_ERR_INTERNAL,
                       "rank %lld lists %s, a message past the end of the pipeline", (long long)r,
                       text);
            uint8_t *seen = &sim->seen[a->op * sim->units + pipe_unit(sim, a)];
            DSV3_CHECK(*seen == 0, DSV3_ERR_INTERNAL, "rank %lld lists %s twice", (long long)r,
                       text);
            *seen = 1;
        }
    }
    for (int64_t m = 0; m < s->n_micro; m++) {
        for (int64_t st = 0; st < sim->stages; st++) {
            for (int op = 0; op < PIPE_OP_COUNT; op++) {
                Dsv3PipeAction a = {
                    .op = (Dsv3PipeOp)op, .micro = (int32_t)m, .stage = (int32_t)st};
                if (!pipe_exists(sim, a.op, st)) continue;
                dsv3_pipe_action_text(&a, text, sizeof text);
                DSV3_CHECK(sim->seen[op * sim->units + pipe_unit(sim, &a)], DSV3_ERR_INTERNAL,
                           "rank %lld does not list %s", (long long)dsv3_pipe_rank_of(s, st, NULL),
                           text);
            }
            DSV3_CALL(pipe_check_backward(sim, m, st));
        }
    }
    return DSV3_OK;
}

// The channel of message action `a` and its direction: from the rank of the sending stage to
// the rank of the receiving one.
static int64_t pipe_channel(const PipeSim *sim, const Dsv3PipeAction *a, int *dir) {
    int64_t from = a->stage, to = a->stage;
    *dir = a->op == DSV3_PIPE_RECV_F || a->op == DSV3_PIPE_SEND_F ? PIPE_DIR_F : PIPE_DIR_B;
    if (a->op == DSV3_PIPE_RECV_F) from = a->stage - 1;
    if (a->op == DSV3_PIPE_RECV_B) from = a->stage + 1;
    if (a->op == DSV3_PIPE_SEND_F) to = a->stage + 1;
    if (a->op == DSV3_PIPE_SEND_B) to = a->stage - 1;
    return (dsv3_pipe_rank_of(sim->s, from, NULL) * sim->s->pp +
            dsv3_pipe_rank_of(sim->s, to, NULL)) *
               PIPE_DIR_COUNT +
           *dir;
}

// The SEND whose message compute `c` consumes (SF of the stage before, SB of the stage after).
static Dsv3PipeAction pipe_producer(const Dsv3PipeAction *c) {
    if (c->op == DSV3_PIPE_F)
        return (Dsv3PipeAction){.op = DSV3_PIPE_SEND_F, .micro = c->micro, .stage = c->stage - 1};
    return (Dsv3PipeAction){.op = DSV3_PIPE_SEND_B, .micro = c->micro, .stage = c->stage + 1};
}

// When the message compute `c` consumes arrived: *arrived is 0 while its SEND has not run.
// Fails when its RECV was not posted before it or the channel delivers another message first.
static Dsv3Err pipe_arrival(PipeSim *sim, int64_t rank, const Dsv3PipeAction *c, int *arrived,
                            double *time) {
    char text[PIPE_TEXT_CAPACITY], recv_text[PIPE_TEXT_CAPACITY], got_text[PIPE_TEXT_CAPACITY];
    Dsv3PipeAction recv =
        pipe_with_op(c, c->op == DSV3_PIPE_F ? DSV3_PIPE_RECV_F : DSV3_PIPE_RECV_B);
    Dsv3PipeAction want = pipe_producer(c);
    int dir;
    int64_t channel = pipe_channel(sim, &recv, &dir);
    int64_t at = sim->posted_at[dir * sim->units + pipe_unit(sim, c)];
    dsv3_pipe_action_text(c, text, sizeof text);
    dsv3_pipe_action_text(&recv, recv_text, sizeof recv_text);
    DSV3_CHECK(at >= 0, DSV3_ERR_INTERNAL, "rank %lld runs %s before it posts %s", (long long)rank,
               text, recv_text);
    *arrived = at < sim->n_sent[channel];
    if (!*arrived) return DSV3_OK;
    const PipeMessage *msg = &sim->sent[channel * sim->s->stages_per_rank * sim->s->n_micro + at];
    Dsv3PipeAction got = {.op = want.op, .micro = msg->micro, .stage = msg->stage};
    dsv3_pipe_action_text(&got, got_text, sizeof got_text);
    DSV3_CHECK(got.micro == want.micro && got.stage == want.stage, DSV3_ERR_INTERNAL,
               "rank %lld: %s of %s is matched with %s of rank %lld: the sends of that channel "
               "come in another order than its receives",
               (long long)rank, recv_text, text, got_text,
               (long long)(channel / PIPE_DIR_COUNT / sim->s->pp));
    *time = msg->time;
    return DSV3_OK;
}

// Runs rank's next action if it can: *ran is 0 while it waits for a message.
static Dsv3Err pipe_step(PipeSim *sim, int64_t rank, int *ran) {
    const Dsv3PipeSchedule *s = sim->s;
    const Dsv3PipeAction *a = &s->actions[s->first[rank] + sim->pc[rank]];
    char text[PIPE_TEXT_CAPACITY], need[PIPE_TEXT_CAPACITY];
    dsv3_pipe_action_text(a, text, sizeof text);
    int64_t unit = pipe_unit(sim, a);
    *ran = 1;
    if (a->op == DSV3_PIPE_RECV_F || a->op == DSV3_PIPE_RECV_B) {
        int dir;
        int64_t channel = pipe_channel(sim, a, &dir);
        sim->posted_at[dir * sim->units + unit] = sim->n_posted[channel]++;
    } else if (a->op == DSV3_PIPE_SEND_F || a->op == DSV3_PIPE_SEND_B) {
        int dir;
        int64_t channel = pipe_channel(sim, a, &dir);
        int whole = sim->seen[DSV3_PIPE_B * sim->units + unit]; // a B, not an I, sends it
        Dsv3PipeAction compute = pipe_with_op(a, dir == PIPE_DIR_F ? DSV3_PIPE_F
                                                 : whole           ? DSV3_PIPE_B
                                                                   : DSV3_PIPE_I);
        dsv3_pipe_action_text(&compute, need, sizeof need);
        int phase = dir == PIPE_DIR_F ? PIPE_PHASE_F : PIPE_PHASE_INPUT;
        DSV3_CHECK(sim->done[phase * sim->units + unit], DSV3_ERR_INTERNAL,
                   "rank %lld runs %s before %s", (long long)rank, text, need);
        sim->sent[channel * s->stages_per_rank * s->n_micro + sim->n_sent[channel]++] =
            (PipeMessage){.micro = a->micro, .stage = a->stage, .time = sim->clock[rank]};
    } else {
        // What the compute needs done first: B and I the pair's F, W its I.
        int needs = a->op == DSV3_PIPE_W ? PIPE_PHASE_INPUT : PIPE_PHASE_F;
        Dsv3PipeAction before = pipe_with_op(a, a->op == DSV3_PIPE_W ? DSV3_PIPE_I : DSV3_PIPE_F);
        dsv3_pipe_action_text(&before, need, sizeof need);
        DSV3_CHECK(a->op == DSV3_PIPE_F || sim->done[needs * sim->units + unit], DSV3_ERR_INTERNAL,
                   "rank %lld runs %s before %s", (long long)rank, text, need);
        double start = sim->clock[rank], arrival = start;
        if (pipe_receives(s, a)) {
            DSV3_CALL(pipe_arrival(sim, rank, a, ran, &arrival));
            if (!*ran) return DSV3_OK;
            if (arrival > start) start = arrival;
        }
        if (a->paired) { // the pair starts once both its messages are in
            const Dsv3PipeAction *b = a + 1;
            DSV3_CHECK(a->op == DSV3_PIPE_F &&
                           sim->pc[rank] + 1 < s->first[rank + 1] - s->first[rank] &&
                           b->op == DSV3_PIPE_B && b->stage != a->stage,
                       DSV3_ERR_INTERNAL,
                       "rank %lld lists %s, which is not an F followed by the B of another stage",
                       (long long)rank, text);
            if (pipe_receives(s, b)) {
                DSV3_CALL(pipe_arrival(sim, rank, b, ran, &arrival));
                if (!*ran) return DSV3_OK;
                if (arrival > start) start = arrival;
            }
        }
        int64_t k;
        dsv3_pipe_rank_of(s, a->stage, &k);
        int64_t *holder = &sim->holder[(rank * s->stages_per_rank + k) * s->n_micro];
        int64_t slots = sim->slots[rank * s->stages_per_rank + k], slot = a->micro % slots;
        if (a->op == DSV3_PIPE_B || a->op == DSV3_PIPE_W) {
            holder[slot] = -1;
        } else if (a->op == DSV3_PIPE_F) {
            DSV3_CHECK(holder[slot] < 0, DSV3_ERR_INTERNAL,
                       "rank %lld runs %s in activation slot %lld of %lld, which micro-batch %lld "
                       "still holds (its %s has not run)",
                       (long long)rank, text, (long long)slot, (long long)slots,
                       (long long)holder[slot],
                       dsv3_pipe_kind_splits_backward(s->kind) ? "W" : "B");
            holder[slot] = a->micro;
        }
        double cost = a->op == DSV3_PIPE_F   ? sim->t_forward
                      : a->op == DSV3_PIPE_B ? sim->t_backward
                                             : sim->t_backward / 2.0;
        if (a->op == DSV3_PIPE_F) sim->done[PIPE_PHASE_F * sim->units + unit] = 1;
        if (a->op != DSV3_PIPE_F && a->op != DSV3_PIPE_W)
            sim->done[PIPE_PHASE_INPUT * sim->units + unit] = 1;
        if (a->op == DSV3_PIPE_B || a->op == DSV3_PIPE_W)
            sim->done[PIPE_PHASE_WEIGHT * sim->units + unit] = 1;
        sim->clock[rank] = start + cost;
        sim->busy[rank] += cost;
    }
    sim->pc[rank]++;
    return DSV3_OK;
}

// Fails naming what each unfinished rank waits for; called when no rank can move.
static Dsv3Err pipe_deadlock(const PipeSim *sim) {
    const Dsv3PipeSchedule *s = sim->s;
    char waits[PIPE_DEADLOCK_LISTED * PIPE_WAIT_CAPACITY] = "";
    size_t used = 0;
    int listed = 0;
    for (int64_t r = 0; r < s->pp; r++) {
        if (sim->pc[r] == s->first[r + 1] - s->first[r]) continue;
        const Dsv3PipeAction *a = &s->actions[s->first[r] + sim->pc[r]];
        Dsv3PipeAction want = pipe_producer(a);
        char text[PIPE_TEXT_CAPACITY], want_text[PIPE_TEXT_CAPACITY];
        dsv3_pipe_action_text(a, text, sizeof text);
        dsv3_pipe_action_text(&want, want_text, sizeof want_text);
        int written = listed == PIPE_DEADLOCK_LISTED
                          ? snprintf(waits + used, sizeof waits - used, ", …")
                          : snprintf(waits + used, sizeof waits - used,
                                     "%srank %lld at %s for %s of rank %lld", listed ? ", " : "",
                                     (long long)r, text, want_text,
                                     (long long)dsv3_pipe_rank_of(s, want.stage, NULL));
        if (written < 0 || (size_t)written >= sizeof waits - used || listed == PIPE_DEADLOCK_LISTED)
            break;
        used += (size_t)written;
        listed++;
    }
    DSV3_RAISE(DSV3_ERR_INTERNAL,
               "pipeline schedule %s (pp %lld, n_micro %lld) deadlocks: every unfinished "
               "rank waits for a message that no rank can send: %s",
               dsv3_pipe_kind_name(s->kind), (long long)s->pp, (long long)s->n_micro, waits);
}

static Dsv3Err pipe_run(PipeSim *sim) {
    const Dsv3PipeSchedule *s = sim->s;
    DSV3_CALL(pipe_check_lists(sim));
    for (int64_t i = 0; i < PIPE_DIR_COUNT * sim->units; i++)
        sim->posted_at[i] = -1;
    for (int64_t r = 0; r < s->pp; r++) {
        for (int64_t k = 0; k < s->stages_per_rank; k++) {
            // Every local stage has n_micro forwards (pipe_check_lists), so at least one slot.
            sim->slots[r * s->stages_per_rank + k] = dsv3_pipe_schedule_slots(s, r, k);
            for (int64_t m = 0; m < s->n_micro; m++)
                sim->holder[(r * s->stages_per_rank + k) * s->n_micro + m] = -1;
        }
    }
    // A rank runs until it waits for a message; the ranks take turns until all are done. A
    // compute's start depends only on its rank's clock and its message's send time, so the
    // order of the turns does not change any time.
    for (;;) {
        int moved = 0, finished = 1;
        for (int64_t r = 0; r < s->pp; r++) {
            int ran = 1;
            while (ran && sim->pc[r] < s->first[r + 1] - s->first[r]) {
                DSV3_CALL(pipe_step(sim, r, &ran));
                moved |= ran;
            }
            finished &= sim->pc[r] == s->first[r + 1] - s->first[r];
        }
        if (finished) return DSV3_OK;
        if (!moved) DSV3_CALL(pipe_deadlock(sim));
    }
}

Dsv3Err dsv3_pipe_schedule_simulate(const Dsv3PipeSchedule *s, double t_forward, double t_backward,
                                    Dsv3PipeSimulation *out) {
    DSV3_CHECK(s != NULL && out != NULL && s->first != NULL && s->actions != NULL, DSV3_ERR_USAGE,
               "dsv3_pipe_schedule_simulate: the schedule or out is NULL");
    DSV3_CHECK(t_forward > 0.0 && t_backward > 0.0, DSV3_ERR_USAGE,
               "dsv3_pipe_schedule_simulate: t_forward %g and t_backward %g must be positive",
               t_forward, t_backward);
    DSV3_CALL(pipe_check_shape(s->kind, s->pp, s->n_micro, s->stages_per_rank));
    PipeSim sim = {.s = s,
                   .stages = dsv3_pipe_stage_count(s),
                   .channels = s->pp * s->pp * PIPE_DIR_COUNT,
                   .t_forward = t_forward,
                   .t_backward = t_backward};
    sim.units = sim.stages * s->n_micro;
    Dsv3Err err;
    DSV3_CALL_GOTO(err, done, pipe_sim_alloc(&sim));
    DSV3_CALL_GOTO(err, done, pipe_run(&sim));
    double makespan = 0.0, busy_max = 0.0, busy_sum = 0.0;
    for (int64_t r = 0; r < s->pp; r++) {
        if (sim.clock[r] > makespan) makespan = sim.clock[r];
        if (sim.busy[r] > busy_max) busy_max = sim.busy[r];
        busy_sum += sim.busy[r];
    }
    *out = (Dsv3PipeSimulation){.makespan = makespan,
                                .busy_max = busy_max,
                                .idle_fraction = 1.0 - busy_sum / ((double)s->pp * makespan)};
done:
    pipe_sim_free(&sim);
    return err;
}
