// Numerics test of the LR schedule: the lr of every step of every case that
// tests/reference/lr_schedule_case.py drove through torch's LambdaLR, against
// optimizer.lr × dsv3_lr_factor, to MAX_RELATIVE_ERROR each.
//   test_lr_schedule CASE_DIR
#include <math.h>
#include <stdio.h>

#include "case.h"
#include "common/train/lr_schedule.h"

// The port computes the same double operations in the same order, so only libm may differ.
static const double MAX_RELATIVE_ERROR = 1e-12;

// Columns of params.npy (see the reference script).
enum { COL_WARMUP, COL_TOTAL, COL_HAS_RATIO, COL_RATIO, COL_DECAY_TYPE, COL_MIN_LR, NUM_COLS };

enum { NAME_CAPACITY = 64 };

// Compares one case, counting its mismatching steps as failures of c.
static Dsv3Err check_case(Dsv3Case *c, int64_t index, const double *row, double base_lr) {
    Dsv3LrScheduleParams params = {
        .warmup_steps = (int64_t)row[COL_WARMUP],
        .total_steps = (int64_t)row[COL_TOTAL],
        .has_decay_ratio = row[COL_HAS_RATIO] != 0.0,
        .decay_ratio = row[COL_RATIO],
        .decay_type = (Dsv3LrDecayType)(int)row[COL_DECAY_TYPE],
        .min_lr_factor = row[COL_MIN_LR],
    };
    Dsv3LrSchedule schedule;
    DSV3_CALL(dsv3_lr_schedule_init(&schedule, &params));
    char name[NAME_CAPACITY];
    snprintf(name, sizeof name, "lr_%lld", (long long)index);
    double *expected = NULL;
    int64_t steps = 0;
    DSV3_CALL(dsv3_case_read_f64(c, &expected, &steps, name));
    for (int64_t step = 1; step <= steps; step++) {
        double want = expected[step - 1], got = base_lr * dsv3_lr_factor(&schedule, step);
        // Relative, so an lr of exactly 0 must come out exactly 0.
        if (!(fabs(got - want) <= MAX_RELATIVE_ERROR * fabs(want))) {
            fprintf(stderr,
                    "case %lld (warmup %lld, total %lld, decay_ratio %s%g, %s, min_lr_factor %g) "
                    "step %lld: "
                    "lr %.17g, torch %.17g\n",
                    (long long)index, (long long)params.warmup_steps, (long long)params.total_steps,
                    params.has_decay_ratio ? "" : "unset ", params.decay_ratio,
                    dsv3_lr_decay_type_name(params.decay_type), params.min_lr_factor,
                    (long long)step, got, want);
            c->failures++;
        }
    }
    return DSV3_OK;
}

static Dsv3Err run(Dsv3Case *c, int64_t *cases) {
    Dsv3Npy params;
    double *base = NULL;
    int64_t base_count = 0;
    DSV3_CALL(dsv3_case_read(c, &params, "params"));
    DSV3_CHECK(params.type == DSV3_NPY_F64 && params.ndim == 2 && params.shape[1] == NUM_COLS,
               DSV3_ERR_IO, "%s/params.npy must be float64 of shape (cases, %d)", c->root,
               NUM_COLS);
    DSV3_CALL(dsv3_case_read_f64(c, &base, &base_count, "base_lr"));
    DSV3_CHECK(base_count == 1, DSV3_ERR_IO, "%s/base_lr.npy must hold one value", c->root);
    *cases = params.shape[0];
    for (int64_t i = 0; i < *cases; i++)
        DSV3_CALL(check_case(c, i, (const double *)params.data + i * NUM_COLS, base[0]));
    return DSV3_OK;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASE_DIR\n", argv[0]);
        return 2;
    }
    // Only reads: the mismatching steps are printed here and counted as failures.
    Dsv3Case c;
    dsv3_case_init(&c, argv[1], 0.0, DSV3_CASE_LINE_VERDICT, 0, 0);
    int64_t cases = 0;
    Dsv3Err err = run(&c, &cases);
    dsv3_case_end(&c, DSV3_OK);
    if (err != DSV3_OK) {
        fprintf(stderr, "%s\n", dsv3_error_text());
        return 1;
    }
    printf("lr schedule: %lld cases, %lld mismatching steps\n", (long long)cases,
           (long long)c.failures);
    return c.failures == 0 && cases > 0 ? 0 : 1;
}
