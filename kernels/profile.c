// profile: the op and GEMM counters of kernels.h's profiling.
//
// Ops are called one at a time (from the thread that drives the model), so the op counters need
// no lock; GEMMs may run on several threads inside an op, so their table is updated under a
// critical section, and the op in progress is a plain global that those threads read.
#include <omp.h>
#include <string.h>
#include <time.h>

#include "kernels/backend.h"

int dsv3_profiling;

static Dsv3OpProfile profile_ops[DSV3_OP_COUNT];
static Dsv3GemmProfile profile_gemms[DSV3_PROFILE_MAX_GEMM_SHAPES];
static int64_t profile_n_gemms;
static Dsv3Op profile_current = DSV3_OP_COUNT; // the op in progress; DSV3_OP_COUNT: none
static double profile_current_flops;           // the GEMM FLOPs of the op in progress
static Dsv3OpSink profile_sink;
static void *profile_sink_ctx;

double dsv3_profile_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void dsv3_profile_start(void) {
    memset(profile_ops, 0, sizeof profile_ops);
    memset(profile_gemms, 0, sizeof profile_gemms);
    profile_n_gemms = 0;
    profile_current = DSV3_OP_COUNT;
    dsv3_profiling = 1;
}

void dsv3_profile_stop(void) { dsv3_profiling = 0; }

void dsv3_profile_read(Dsv3OpProfile *ops, Dsv3GemmProfile *gemms, int64_t *n_gemms) {
    memcpy(ops, profile_ops, sizeof profile_ops);
    memcpy(gemms, profile_gemms, (size_t)profile_n_gemms * sizeof *gemms);
    *n_gemms = profile_n_gemms;
}

void dsv3_profile_set_sink(Dsv3OpSink sink, void *sink_ctx) {
    profile_sink = sink;
    profile_sink_ctx = sink_ctx;
}

void dsv3_profile_enter(Dsv3Op op) {
    profile_current = op;
    profile_current_flops = 0;
}

void dsv3_profile_op(Dsv3Op op, double start, double end) {
    profile_ops[op].calls++;
    profile_ops[op].seconds += end - start;
    profile_ops[op].gemm_flops += profile_current_flops;
    profile_current = DSV3_OP_COUNT;
    if (profile_sink) profile_sink(profile_sink_ctx, op, start, end, profile_current_flops);
}

void dsv3_profile_gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, double seconds,
                       int in_parallel) {
    const double flops = 2.0 * (double)M * (double)N * (double)K;
#pragma omp critical(dsv3_profile)
    {
        if (profile_current != DSV3_OP_COUNT) profile_current_flops += flops;
        int64_t i = 0;
        while (i < profile_n_gemms &&
               !(profile_gemms[i].trans_a == trans_a && profile_gemms[i].trans_b == trans_b &&
                 profile_gemms[i].M == M && profile_gemms[i].N == N && profile_gemms[i].K == K &&
                 profile_gemms[i].in_parallel == in_parallel))
            i++;
        if (i == profile_n_gemms && i < DSV3_PROFILE_MAX_GEMM_SHAPES)
            profile_gemms[profile_n_gemms++] = (Dsv3GemmProfile){.trans_a = trans_a,
                                                                 .trans_b = trans_b,
                                                                 .M = M,
                                                                 .N = N,
                                                                 .K = K,
                                                                 .in_parallel = in_parallel};
        if (i < profile_n_gemms) {
            profile_gemms[i].calls++;
            profile_gemms[i].seconds += seconds;
        }
    }
}
