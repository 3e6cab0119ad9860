// layout: the process layout of a job as plain arithmetic; see layout.h.
#include "layout.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

// MPI ranks are ints, so no mesh or job can be larger than this.
#define LAYOUT_MAX_PROCS ((int64_t)INT_MAX)

// Room for the "launched: …" summary of a role check; at most this many runs are listed.
enum { LAYOUT_SUMMARY_CAPACITY = 512, LAYOUT_SUMMARY_MAX_RUNS = 8 };

// Where the user learns how a job is launched; appended to every role-order error.
#define LAYOUT_LAUNCH_HINT                                                                         \
    "launch `mpiexec -n 1 dsv3-coordinator … : -n S dsv3-stage … [: -n E dsv3-expert …]`"

const char *dsv3_role_name(Dsv3Role role) {
    switch (role) {
    case DSV3_ROLE_COORDINATOR: return "coordinator";
    case DSV3_ROLE_STAGE: return "stage";
    case DSV3_ROLE_EXPERT: return "expert";
    }
    return "unknown";
}

const char *dsv3_role_program(Dsv3Role role) {
    switch (role) {
    case DSV3_ROLE_COORDINATOR: return "dsv3-coordinator";
    case DSV3_ROLE_STAGE: return "dsv3-stage";
    case DSV3_ROLE_EXPERT: return "dsv3-expert";
    }
    return "unknown";
}

// Checks one degree read from the config: ≥ 1 and small enough for an MPI job.
static Dsv3Err layout_check_degree(const char *key, int64_t value) {
    DSV3_CHECK(value >= 1, DSV3_ERR_CONFIG, "parallelism.%s is %lld, but it must be at least 1",
               key, (long long)value);
    DSV3_CHECK(value <= LAYOUT_MAX_PROCS, DSV3_ERR_CONFIG,
               "parallelism.%s is %lld, more than an MPI job can hold (%lld ranks)", key,
               (long long)value, (long long)LAYOUT_MAX_PROCS);
    return DSV3_OK;
}

// *out = a × b, or a config error when the product cannot be an MPI job. Both are ≤ INT_MAX,
// so the product itself never overflows int64.
static Dsv3Err layout_multiply(int64_t a, int64_t b, int64_t *out) {
    *out = a * b;
    DSV3_CHECK(*out <= LAYOUT_MAX_PROCS, DSV3_ERR_CONFIG,
               "parallelism: the product of the parallel degrees exceeds the largest MPI job "
               "(%lld ranks)",
               (long long)LAYOUT_MAX_PROCS);
    return DSV3_OK;
}

static const char *layout_plural(int64_t n, const char *one, const char *many) {
    return n == 1 ? one : many;
}

Dsv3Err dsv3_layout_resolve(Dsv3ParallelDims *dims, int64_t n_stage_procs, int64_t n_expert_procs) {
    DSV3_CHECK(dims != NULL, DSV3_ERR_USAGE, "dsv3_layout_resolve: dims is NULL");
    DSV3_CALL(layout_check_degree("pipeline_parallel_degree", dims->pp));
    DSV3_CALL(layout_check_degree("data_parallel_replicate_degree", dims->dp_replicate));
    DSV3_CHECK(dims->dp_shard >= 1 || dims->dp_shard == DSV3_LAYOUT_FILL, DSV3_ERR_CONFIG,
               "parallelism.data_parallel_shard_degree is %lld, but it must be at least 1, or -1 "
               "to fill it from the number of stage processes",
               (long long)dims->dp_shard);
    if (dims->dp_shard != DSV3_LAYOUT_FILL)
        DSV3_CALL(layout_check_degree("data_parallel_shard_degree", dims->dp_shard));
    DSV3_CALL(layout_check_degree("context_parallel_degree", dims->cp));
    DSV3_CALL(layout_check_degree("tensor_parallel_degree", dims->tp));
    DSV3_CALL(layout_check_degree("expert_parallel_degree", dims->ep));
    DSV3_CHECK(n_expert_procs >= 0, DSV3_ERR_USAGE, "dsv3_layout_resolve: n_expert_procs is %lld",
               (long long)n_expert_procs);
    DSV3_CHECK(n_stage_procs >= 1, DSV3_ERR_LAUNCH,
               "parallelism: no dsv3-stage process was launched, but a job needs at least one");

    // The product of every degree but dp_shard, which is either given or filled from it.
    int64_t others;
    DSV3_CALL(layout_multiply(dims->pp, dims->dp_replicate, &others));
    DSV3_CALL(layout_multiply(others, dims->cp, &others));
    DSV3_CALL(layout_multiply(others, dims->tp, &others));

    int64_t dp_shard = dims->dp_shard;
    if (dp_shard == DSV3_LAYOUT_FILL) {
        DSV3_CHECK(n_stage_procs % others == 0, DSV3_ERR_LAUNCH,
                   "parallelism: cannot fill data_parallel_shard_degree: %lld stage %s not a "
                   "multiple of pp %lld × dp_replicate %lld × cp %lld × tp %lld = %lld; launch a "
                   "multiple of %lld dsv3-stage processes or change pipeline_parallel_degree, "
                   "data_parallel_replicate_degree, context_parallel_degree or "
                   "tensor_parallel_degree",
                   (long long)n_stage_procs,
                   layout_plural(n_stage_procs, "process is", "processes are"), (long long)dims->pp,
                   (long long)dims->dp_replicate, (long long)dims->cp, (long long)dims->tp,
                   (long long)others, (long long)others);
        dp_shard = n_stage_procs / others;
    }
    int64_t mesh;
    DSV3_CALL(layout_multiply(others, dp_shard, &mesh));
    DSV3_CHECK(mesh == n_stage_procs, DSV3_ERR_LAUNCH,
               "parallelism: pp %lld × dp_replicate %lld × dp_shard %lld × cp %lld × tp %lld = "
               "%lld, but %lld stage %s launched (pipeline_parallel_degree × "
               "data_parallel_replicate_degree × data_parallel_shard_degree × "
               "context_parallel_degree × tensor_parallel_degree must equal the number of "
               "dsv3-stage processes)",
               (long long)dims->pp, (long long)dims->dp_replicate, (long long)dp_shard,
               (long long)dims->cp, (long long)dims->tp, (long long)mesh, (long long)n_stage_procs,
               layout_plural(n_stage_procs, "process was", "processes were"));

    if (dims->ep == 1) {
        DSV3_CHECK(n_expert_procs == 0, DSV3_ERR_LAUNCH,
                   "parallelism: expert_parallel_degree is 1, so the job takes no expert servers, "
                   "but %lld %s launched (set expert_parallel_degree to the number of expert "
                   "servers per pipeline stage to use them)",
                   (long long)n_expert_procs, layout_plural(n_expert_procs, "was", "were"));
    } else {
        int64_t expected;
        DSV3_CALL(layout_multiply(dims->ep, dims->pp, &expected));
        DSV3_CHECK(n_expert_procs == expected, DSV3_ERR_LAUNCH,
                   "parallelism: expert_parallel_degree %lld × pipeline_parallel_degree %lld = "
                   "%lld expert servers expected, but %lld %s launched",
                   (long long)dims->ep, (long long)dims->pp, (long long)expected,
                   (long long)n_expert_procs, layout_plural(n_expert_procs, "was", "were"));
    }
    dims->dp_shard = dp_shard;
    return DSV3_OK;
}

int64_t dsv3_layout_stage_count(const Dsv3ParallelDims *dims) {
    return dims->pp * dims->dp_replicate * dims->dp_shard * dims->cp * dims->tp;
}

int64_t dsv3_layout_expert_count(const Dsv3ParallelDims *dims) {
    return dims->ep > 1 ? dims->pp * dims->ep : 0;
}

// Guards the coordinate functions against dims that dsv3_layout_resolve never saw.
static Dsv3Err layout_check_resolved(const Dsv3ParallelDims *dims) {
    DSV3_CHECK(dims != NULL, DSV3_ERR_USAGE, "parallel dims are NULL");
    DSV3_CHECK(dims->pp >= 1 && dims->dp_replicate >= 1 && dims->dp_shard >= 1 && dims->cp >= 1 &&
                   dims->tp >= 1 && dims->ep >= 1,
               DSV3_ERR_USAGE,
               "parallel dims are not resolved (pp %lld, dp_replicate %lld, dp_shard %lld, cp "
               "%lld, tp %lld, ep %lld); call dsv3_layout_resolve first",
               (long long)dims->pp, (long long)dims->dp_replicate, (long long)dims->dp_shard,
               (long long)dims->cp, (long long)dims->tp, (long long)dims->ep);
    return DSV3_OK;
}

Dsv3Err dsv3_layout_stage_coord(const Dsv3ParallelDims *dims, int64_t index, Dsv3StageCoord *out) {
    DSV3_CALL(layout_check_resolved(dims));
    int64_t count = dsv3_layout_stage_count(dims);
    DSV3_CHECK(index >= 0 && index < count, DSV3_ERR_USAGE,
               "stage index %lld is out of range [0, %lld)", (long long)index, (long long)count);
    // Peel the mixed-radix digits off from the fastest (tp) to the slowest (pp).
    int64_t rest = index;
    out->tp = rest % dims->tp;
    rest /= dims->tp;
    out->cp = rest % dims->cp;
    rest /= dims->cp;
    out->dp_shard = rest % dims->dp_shard;
    rest /= dims->dp_shard;
    out->dp_replicate = rest % dims->dp_replicate;
    out->pp = rest / dims->dp_replicate;
    return DSV3_OK;
}

Dsv3Err dsv3_layout_stage_index(const Dsv3ParallelDims *dims, const Dsv3StageCoord *coord,
                                int64_t *index) {
    DSV3_CALL(layout_check_resolved(dims));
    DSV3_CHECK(coord->pp >= 0 && coord->pp < dims->pp && coord->dp_replicate >= 0 &&
                   coord->dp_replicate < dims->dp_replicate && coord->dp_shard >= 0 &&
                   coord->dp_shard < dims->dp_shard && coord->cp >= 0 && coord->cp < dims->cp &&
                   coord->tp >= 0 && coord->tp < dims->tp,
               DSV3_ERR_USAGE,
               "stage coordinates (pp %lld, dp_replicate %lld, dp_shard %lld, cp %lld, tp %lld) "
               "are outside the mesh [%lld][%lld][%lld][%lld][%lld]",
               (long long)coord->pp, (long long)coord->dp_replicate, (long long)coord->dp_shard,
               (long long)coord->cp, (long long)coord->tp, (long long)dims->pp,
               (long long)dims->dp_replicate, (long long)dims->dp_shard, (long long)dims->cp,
               (long long)dims->tp);
    *index = (((coord->pp * dims->dp_replicate + coord->dp_replicate) * dims->dp_shard +
               coord->dp_shard) *
                  dims->cp +
              coord->cp) *
                 dims->tp +
             coord->tp;
    return DSV3_OK;
}

Dsv3Err dsv3_layout_expert_coord(const Dsv3ParallelDims *dims, int64_t index, int64_t *pp_stage,
                                 int64_t *ep_rank) {
    DSV3_CALL(layout_check_resolved(dims));
    int64_t count = dsv3_layout_expert_count(dims);
    DSV3_CHECK(index >= 0 && index < count, DSV3_ERR_USAGE,
               "expert server index %lld is out of range [0, %lld) (expert_parallel_degree %lld × "
               "pipeline_parallel_degree %lld%s)",
               (long long)index, (long long)count, (long long)dims->ep, (long long)dims->pp,
               dims->ep == 1 ? "; a job with expert_parallel_degree 1 has no expert servers" : "");
    *pp_stage = index / dims->ep;
    *ep_rank = index % dims->ep;
    return DSV3_OK;
}

Dsv3BatchPart dsv3_layout_batch_part(const Dsv3ParallelDims *dims, const Dsv3StageCoord *coord) {
    int first = coord->pp == 0, last = coord->pp == (dims->pp_v_shaped ? 0 : dims->pp - 1);
    if (first && last) return DSV3_BATCH_WINDOWS;
    if (first) return DSV3_BATCH_TOKENS;
    return last ? DSV3_BATCH_LABELS : DSV3_BATCH_NONE;
}

Dsv3Err dsv3_layout_stage_layers(int64_t n_layers, const Dsv3PipeSplit *split, int64_t stage,
                                 int64_t *first, int64_t *count) {
    int64_t n = split->n_stages, in = split->input_weight, out = split->output_weight;
    DSV3_CHECK(n_layers >= 1, DSV3_ERR_CONFIG,
               "model.n_layers is %lld, but a model needs at least one layer", (long long)n_layers);
    DSV3_CHECK(n >= 1, DSV3_ERR_CONFIG, "the pipeline has %lld stages, but it needs at least one",
               (long long)n);
    DSV3_CHECK(stage >= 0 && stage < n, DSV3_ERR_USAGE,
               "pipeline stage %lld is out of range [0, %lld)", (long long)stage, (long long)n);
    if (n == 1) {
        *first = 0;
        *count = n_layers;
        return DSV3_OK;
    }
    DSV3_CHECK(in >= 0 && out >= 0, DSV3_ERR_CONFIG,
               "parallelism.pipeline_parallel_first_stage_less_layers %lld and "
               "pipeline_parallel_last_stage_less_layers %lld must not be negative",
               (long long)in, (long long)out);
    int64_t effective = n_layers + in + out;
    DSV3_CHECK(n <= effective, DSV3_ERR_CONFIG,
               "%lld pipeline stages are more than the %lld effective layers (model.n_layers %lld "
               "+ pipeline_parallel_first_stage_less_layers %lld + "
               "pipeline_parallel_last_stage_less_layers %lld); lower "
               "parallelism.pipeline_parallel_degree or the stages per rank",
               (long long)n, (long long)effective, (long long)n_layers, (long long)in,
               (long long)out);
    int64_t base = effective / n, extra = effective % n; // the first `extra` stages take one more
    DSV3_CHECK(in <= base && out <= base, DSV3_ERR_CONFIG,
               "parallelism.pipeline_parallel_first_stage_less_layers %lld or "
               "pipeline_parallel_last_stage_less_layers %lld exceeds the %lld effective layers "
               "of the smallest of the %lld pipeline stages (model.n_layers %lld)",
               (long long)in, (long long)out, (long long)base, (long long)n, (long long)n_layers);
    // Effective layers before `stage`, less the embedding's weight, are the layers before it.
    int64_t before = stage * base + (stage < extra ? stage : extra);
    int64_t mine = base + (stage < extra ? 1 : 0);
    int64_t start = stage == 0 ? 0 : before - in;
    int64_t end = before + mine - in;
    if (stage == n - 1) end -= out;
    if (end > n_layers) end = n_layers;
    DSV3_CHECK(end >= start, DSV3_ERR_INTERNAL, "pipeline stage %lld of %lld gets no layer range",
               (long long)stage, (long long)n);
    *first = start;
    *count = end - start;
    return DSV3_OK;
}

// Appends "ranks a-b dsv3-x" runs of equal roles to `buf`, at most LAYOUT_SUMMARY_MAX_RUNS.
static void layout_summarize_roles(const int *roles, int64_t n, char *buf, size_t size) {
    size_t used = 0;
    int runs = 0;
    buf[0] = '\0';
    for (int64_t start = 0; start < n;) {
        int64_t end = start;
        while (end + 1 < n && roles[end + 1] == roles[start])
            end++;
        const char *program = roles[start] >= 0 && roles[start] < DSV3_ROLE_COUNT
                                  ? dsv3_role_program((Dsv3Role)roles[start])
                                  : "an unknown program";
        int written;
        if (runs == LAYOUT_SUMMARY_MAX_RUNS)
            written = snprintf(buf + used, size - used, ", …");
        else if (start == end)
            written = snprintf(buf + used, size - used, "%sjob rank %lld %s", runs ? ", " : "",
                               (long long)start, program);
        else
            written = snprintf(buf + used, size - used, "%sjob ranks %lld-%lld %s",
                               runs ? ", " : "", (long long)start, (long long)end, program);
        if (written < 0 || (size_t)written >= size - used || runs == LAYOUT_SUMMARY_MAX_RUNS)
            return;
        used += (size_t)written;
        runs++;
        start = end + 1;
    }
}

Dsv3Err dsv3_layout_check_roles(const int *roles, int64_t n, int64_t *n_stage, int64_t *n_expert) {
    DSV3_CHECK(roles != NULL && n >= 1, DSV3_ERR_USAGE,
               "dsv3_layout_check_roles: needs the roles of at least one rank");
    for (int64_t r = 0; r < n; r++)
        DSV3_CHECK(roles[r] >= 0 && roles[r] < DSV3_ROLE_COUNT, DSV3_ERR_LAUNCH,
                   "job rank %lld reported role %d, which is not a dsv3 role; every process of "
                   "the job must be dsv3-coordinator, dsv3-stage or dsv3-expert",
                   (long long)r, roles[r]);

    char launched[LAYOUT_SUMMARY_CAPACITY];
    layout_summarize_roles(roles, n, launched, sizeof launched);
    int64_t counts[DSV3_ROLE_COUNT] = {0};
    int64_t last_coordinator = -1;
    for (int64_t r = 0; r < n; r++) {
        counts[roles[r]]++;
        if (roles[r] == DSV3_ROLE_COORDINATOR) last_coordinator = r;
    }
    DSV3_CHECK(counts[DSV3_ROLE_COORDINATOR] >= 1, DSV3_ERR_LAUNCH,
               "no dsv3-coordinator was launched (launched: %s); " LAYOUT_LAUNCH_HINT, launched);
    DSV3_CHECK(counts[DSV3_ROLE_COORDINATOR] == 1, DSV3_ERR_LAUNCH,
               "%lld dsv3-coordinator processes were launched, but a job takes exactly one "
               "(launched: %s); " LAYOUT_LAUNCH_HINT,
               (long long)counts[DSV3_ROLE_COORDINATOR], launched);
    DSV3_CHECK(roles[0] == DSV3_ROLE_COORDINATOR, DSV3_ERR_LAUNCH,
               "job rank %lld is dsv3-coordinator, but the coordinator must be the first app of "
               "the mpiexec line (launched: %s); " LAYOUT_LAUNCH_HINT,
               (long long)last_coordinator, launched);
    DSV3_CHECK(counts[DSV3_ROLE_STAGE] >= 1, DSV3_ERR_LAUNCH,
               "no dsv3-stage was launched (launched: %s); " LAYOUT_LAUNCH_HINT, launched);
    for (int64_t r = 2; r < n; r++)
        DSV3_CHECK(!(roles[r] == DSV3_ROLE_STAGE && roles[r - 1] == DSV3_ROLE_EXPERT),
                   DSV3_ERR_LAUNCH,
                   "job rank %lld is dsv3-stage, but job rank %lld before it is dsv3-expert: the "
                   "stages must come before the expert servers on the mpiexec line (launched: "
                   "%s); " LAYOUT_LAUNCH_HINT,
                   (long long)r, (long long)(r - 1), launched);
    *n_stage = counts[DSV3_ROLE_STAGE];
    *n_expert = counts[DSV3_ROLE_EXPERT];
    return DSV3_OK;
}
