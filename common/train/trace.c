// trace: per-phase timers and the merged Chrome trace.
#include "trace.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/config.h"
#include "common/core/log.h"
#include "kernels/kernels.h"

// Events kept before the buffer first grows: a step of a few micro-batches fits.
enum { TRACE_INITIAL_CAPACITY = 64 };

// A path under job.dump_folder plus the temporary suffix.
enum { TRACE_PATH_CAPACITY = DSV3_CONFIG_STRING_CAPACITY + 64 };

static const double MICROSECONDS = 1e6;

#define PHASE_NAME(id, name, cat) name,
#define PHASE_CATEGORY(id, name, cat) cat,
static const char *const phase_names[DSV3_PHASE_COUNT] = {DSV3_PHASES(PHASE_NAME)};
static const char *const phase_categories[DSV3_PHASE_COUNT] = {DSV3_PHASES(PHASE_CATEGORY)};
#undef PHASE_NAME
#undef PHASE_CATEGORY

const char *dsv3_phase_name(int phase) {
    return phase >= 0 && phase < DSV3_PHASE_COUNT ? phase_names[phase] : NULL;
}

const char *dsv3_phase_category(int phase) {
    return phase >= 0 && phase < DSV3_PHASE_COUNT ? phase_categories[phase] : NULL;
}

void dsv3_trace_step_start(Dsv3Trace *t, int recording) {
    memset(t->seconds, 0, sizeof t->seconds);
    t->count = 0;
    t->recording = recording;
    t->origin = dsv3_log_seconds();
}

static Dsv3Err grow(Dsv3Trace *t) {
    int64_t capacity = t->capacity ? 2 * t->capacity : TRACE_INITIAL_CAPACITY;
    Dsv3TraceEvent *events = NULL;
    DSV3_CALL(dsv3_alloc((void **)&events, (size_t)capacity * sizeof *events, "trace events"));
    if (t->count) memcpy(events, t->events, (size_t)t->count * sizeof *events);
    dsv3_free(t->events);
    t->events = events;
    t->capacity = capacity;
    return DSV3_OK;
}

Dsv3Err dsv3_trace_add_stage(Dsv3Trace *t, Dsv3Phase phase, int32_t index, int32_t stage,
                             double start, double end) {
    DSV3_ASSERT(phase >= 0 && phase < DSV3_PHASE_COUNT);
    t->seconds[phase] += end - start;
    if (!t->recording) return DSV3_OK;
    if (t->count == t->capacity) DSV3_CALL(grow(t));
    t->events[t->count++] = (Dsv3TraceEvent){.phase = phase,
                                             .index = index,
                                             .stage = stage,
                                             .start = start - t->origin,
                                             .seconds = end - start};
    return DSV3_OK;
}

Dsv3Err dsv3_trace_add(Dsv3Trace *t, Dsv3Phase phase, int32_t index, double start, double end) {
    return dsv3_trace_add_stage(t, phase, index, -1, start, end);
}

// The kernels' op sink: one event per op call (a failed growth is counted, and reported by
// dsv3_trace_ops_end, since an op cannot fail for its trace).
static void add_op(void *trace, Dsv3Op op, double start, double end, double gemm_flops) {
    Dsv3Trace *t = trace;
    if (t->count == t->capacity && grow(t) != DSV3_OK) {
        dsv3_error_clear();
        t->ops_lost++;
        return;
    }
    t->events[t->count++] = (Dsv3TraceEvent){.phase = DSV3_TRACE_OP,
                                             .index = -1,
                                             .stage = -1,
                                             .op = (int32_t)op,
                                             .start = start - t->origin,
                                             .seconds = end - start,
                                             .gemm_flops = gemm_flops};
}

void dsv3_trace_ops_begin(Dsv3Trace *t) {
    if (!t->recording || t->ops) return;
    t->ops = 1;
    t->ops_lost = 0;
    dsv3_profile_set_sink(add_op, t);
    dsv3_profile_start();
}

static void ops_off(Dsv3Trace *t) {
    dsv3_profile_stop();
    dsv3_profile_set_sink(NULL, NULL);
    t->ops = 0;
}

Dsv3Err dsv3_trace_ops_end(Dsv3Trace *t) {
    if (!t->ops) return DSV3_OK;
    ops_off(t);
    DSV3_CHECK(t->ops_lost == 0, DSV3_ERR_MEMORY,
               "cannot grow the trace's event buffer: %lld op events were lost",
               (long long)t->ops_lost);
    return DSV3_OK;
}

void dsv3_trace_destroy(Dsv3Trace *t) {
    if (t->ops) ops_off(t);
    dsv3_free(t->events);
    memset(t, 0, sizeof *t);
}

// The JSON string of a track name: only printable ASCII without quotes or backslashes is kept.
static void write_name(FILE *f, const char *name) {
    fputc('"', f);
    for (const char *c = name; *c; c++)
        if (*c >= ' ' && *c <= '~' && *c != '"' && *c != '\\') fputc(*c, f);
    fputc('"', f);
}

static void write_events(FILE *f, int64_t step, const Dsv3TraceTrack *tracks, int64_t n_tracks) {
    fprintf(f,
            "{\"displayTimeUnit\": \"ms\", \"otherData\": {\"step\": %" PRId64
            "},\n \"traceEvents\": [",
            step);
    const char *sep = "\n  ";
    for (int64_t r = 0; r < n_tracks; r++) {
        fprintf(f,
                "%s{\"ph\": \"M\", \"name\": \"process_name\", \"pid\": %" PRId64
                ", \"tid\": 0, \"args\": {\"name\": ",
                sep, r);
        write_name(f, tracks[r].name);
        fprintf(f,
                "}},\n  {\"ph\": \"M\", \"name\": \"process_sort_index\", \"pid\": %" PRId64
                ", \"tid\": 0, \"args\": {\"sort_index\": %" PRId64 "}}",
                r, r);
        sep = ",\n  ";
        for (int64_t i = 0; i < tracks[r].count; i++) {
            const Dsv3TraceEvent *e = &tracks[r].events[i];
            const int is_op = e->phase == DSV3_TRACE_OP;
            const char *name =
                is_op ? (e->op >= 0 && e->op < DSV3_OP_COUNT ? dsv3_op_name(e->op) : NULL)
                      : dsv3_phase_name(e->phase);
            if (!name) continue; // a corrupt event from a peer: skip it rather than fail the step
            fprintf(f,
                    "%s{\"ph\": \"X\", \"name\": \"%s\", \"cat\": \"%s\", \"pid\": %" PRId64
                    ", \"tid\": 0, \"ts\": %.3f, \"dur\": %.3f",
                    sep, name, is_op ? "op" : dsv3_phase_category(e->phase), r,
                    e->start * MICROSECONDS, e->seconds * MICROSECONDS);
            if (is_op && e->gemm_flops > 0)
                fprintf(f, ", \"args\": {\"gemm_gflop\": %.6g, \"gemm_gflop_per_s\": %.6g}",
                        e->gemm_flops * 1e-9,
                        e->seconds > 0 ? e->gemm_flops * 1e-9 / e->seconds : 0.0);
            else if (e->index >= 0 && e->stage >= 0)
                fprintf(f, ", \"args\": {\"micro_batch\": %d, \"stage\": %d}", (int)e->index,
                        (int)e->stage);
            else if (e->index >= 0)
                fprintf(f, ", \"args\": {\"micro_batch\": %d}", (int)e->index);
            fputc('}', f);
        }
    }
    fputs("\n]}\n", f);
}

Dsv3Err dsv3_trace_write_chrome(const char *path, int64_t step, const Dsv3TraceTrack *tracks,
                                int64_t n_tracks) {
    char tmp[TRACE_PATH_CAPACITY];
    DSV3_CHECK((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) < sizeof tmp, DSV3_ERR_IO,
               "trace path '%s' is too long", path);
    FILE *f = fopen(tmp, "w");
    DSV3_CHECK(f, DSV3_ERR_IO, "cannot write the trace %s: %s", tmp, strerror(errno));
    write_events(f, step, tracks, n_tracks);
    int failed = ferror(f);
    failed |= fclose(f) != 0;
    DSV3_CHECK(!failed, DSV3_ERR_IO, "writing the trace %s failed: %s", tmp, strerror(errno));
    DSV3_CHECK(rename(tmp, path) == 0, DSV3_ERR_IO, "cannot rename %s to %s: %s", tmp, path,
               strerror(errno));
    return DSV3_OK;
}
