// Unit tests of comm/layout: resolving the parallel dims against a launch, mesh coordinates,
// expert servers, the pipeline split of layers and the order of roles, with every message.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/comm/layout.h"

// Asserts that `got` is `code` and the recorded message is exactly `message`.
static void expect_error(Dsv3Err got, Dsv3Err code, const char *message) {
    assert_int_equal(got, code);
    assert_string_equal(dsv3_error_message(), message);
    dsv3_error_clear();
}

static Dsv3ParallelDims dims_of(int64_t pp, int64_t dp_replicate, int64_t dp_shard, int64_t cp,
                                int64_t tp, int64_t ep) {
    return (Dsv3ParallelDims){pp, dp_replicate, dp_shard, cp, tp, ep};
}

static void test_role_names(void **state) {
    (void)state;
    assert_string_equal(dsv3_role_name(DSV3_ROLE_COORDINATOR), "coordinator");
    assert_string_equal(dsv3_role_name(DSV3_ROLE_STAGE), "stage");
    assert_string_equal(dsv3_role_name(DSV3_ROLE_EXPERT), "expert");
    assert_string_equal(dsv3_role_program(DSV3_ROLE_COORDINATOR), "dsv3-coordinator");
    assert_string_equal(dsv3_role_program(DSV3_ROLE_STAGE), "dsv3-stage");
    assert_string_equal(dsv3_role_program(DSV3_ROLE_EXPERT), "dsv3-expert");
}

static void test_resolve_explicit(void **state) {
    (void)state;
    Dsv3ParallelDims dims = dims_of(2, 1, 2, 1, 2, 1);
    assert_int_equal(dsv3_layout_resolve(&dims, 8, 0), DSV3_OK);
    assert_int_equal(dims.dp_shard, 2);
    assert_int_equal(dsv3_layout_stage_count(&dims), 8);
    assert_int_equal(dsv3_layout_expert_count(&dims), 0);

    dims = dims_of(2, 1, 1, 1, 2, 2);
    assert_int_equal(dsv3_layout_resolve(&dims, 4, 4), DSV3_OK);
    assert_int_equal(dsv3_layout_expert_count(&dims), 4);

    dims = dims_of(1, 1, 1, 1, 1, 1);
    assert_int_equal(dsv3_layout_resolve(&dims, 1, 0), DSV3_OK);
}

static void test_resolve_fill(void **state) {
    (void)state;
    Dsv3ParallelDims dims = dims_of(2, 2, -1, 1, 2, 1);
    assert_int_equal(dsv3_layout_resolve(&dims, 24, 0), DSV3_OK);
    assert_int_equal(dims.dp_shard, 3);
    // Resolving again changes nothing.
    Dsv3ParallelDims again = dims;
    assert_int_equal(dsv3_layout_resolve(&again, 24, 0), DSV3_OK);
    assert_memory_equal(&again, &dims, sizeof dims);

    dims = dims_of(1, 1, -1, 1, 1, 1);
    assert_int_equal(dsv3_layout_resolve(&dims, 5, 0), DSV3_OK);
    assert_int_equal(dims.dp_shard, 5);
}

static void test_resolve_bad_degrees(void **state) {
    (void)state;
    static const struct {
        Dsv3ParallelDims dims;
        const char *message;
    } cases[] = {
        {{0, 1, 1, 1, 1, 1},
         "parallelism.pipeline_parallel_degree is 0, but it must be at least 1"},
        {{1, -2, 1, 1, 1, 1},
         "parallelism.data_parallel_replicate_degree is -2, but it must be at least 1"},
        {{1, 1, 0, 1, 1, 1},
         "parallelism.data_parallel_shard_degree is 0, but it must be at least 1, or -1 to fill "
         "it from the number of stage processes"},
        {{1, 1, -3, 1, 1, 1},
         "parallelism.data_parallel_shard_degree is -3, but it must be at least 1, or -1 to fill "
         "it from the number of stage processes"},
        {{1, 1, 1, 0, 1, 1}, "parallelism.context_parallel_degree is 0, but it must be at least 1"},
        {{1, 1, 1, 1, 0, 1}, "parallelism.tensor_parallel_degree is 0, but it must be at least 1"},
        {{1, 1, 1, 1, 1, 0}, "parallelism.expert_parallel_degree is 0, but it must be at least 1"},
        {{1, 1, 1, 1, 4294967296LL, 1},
         "parallelism.tensor_parallel_degree is 4294967296, more than an MPI job can hold "
         "(2147483647 ranks)"},
        {{65536, 1, 1, 1, 65536, 1},
         "parallelism: the product of the parallel degrees exceeds the largest MPI job "
         "(2147483647 ranks)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Dsv3ParallelDims dims = cases[i].dims;
        expect_error(dsv3_layout_resolve(&dims, 1, 0), DSV3_ERR_CONFIG, cases[i].message);
        assert_memory_equal(&dims, &cases[i].dims, sizeof dims); // unchanged on failure
    }
}

static void test_resolve_stage_mismatch(void **state) {
    (void)state;
    Dsv3ParallelDims dims = dims_of(2, 1, 2, 1, 2, 1);
    expect_error(dsv3_layout_resolve(&dims, 6, 0), DSV3_ERR_LAUNCH,
                 "parallelism: pp 2 × dp_replicate 1 × dp_shard 2 × cp 1 × tp 2 = 8, but 6 stage "
                 "processes were launched (pipeline_parallel_degree × "
                 "data_parallel_replicate_degree × data_parallel_shard_degree × "
                 "context_parallel_degree × tensor_parallel_degree must equal the number of "
                 "dsv3-stage processes)");
    assert_int_equal(dims.dp_shard, 2);

    dims = dims_of(1, 2, 1, 1, 1, 1);
    expect_error(dsv3_layout_resolve(&dims, 1, 0), DSV3_ERR_LAUNCH,
                 "parallelism: pp 1 × dp_replicate 2 × dp_shard 1 × cp 1 × tp 1 = 2, but 1 stage "
                 "process was launched (pipeline_parallel_degree × "
                 "data_parallel_replicate_degree × data_parallel_shard_degree × "
                 "context_parallel_degree × tensor_parallel_degree must equal the number of "
                 "dsv3-stage processes)");

    dims = dims_of(1, 1, 1, 1, 1, 1);
    expect_error(dsv3_layout_resolve(&dims, 0, 0), DSV3_ERR_LAUNCH,
                 "parallelism: no dsv3-stage process was launched, but a job needs at least one");
}

static void test_resolve_fill_mismatch(void **state) {
    (void)state;
    Dsv3ParallelDims dims = dims_of(4, 1, -1, 1, 1, 1);
    expect_error(dsv3_layout_resolve(&dims, 6, 0), DSV3_ERR_LAUNCH,
                 "parallelism: cannot fill data_parallel_shard_degree: 6 stage processes are not "
                 "a multiple of pp 4 × dp_replicate 1 × cp 1 × tp 1 = 4; launch a multiple of 4 "
                 "dsv3-stage processes or change pipeline_parallel_degree, "
                 "data_parallel_replicate_degree, context_parallel_degree or "
                 "tensor_parallel_degree");
    assert_int_equal(dims.dp_shard, -1);

    dims = dims_of(1, 1, -1, 2, 1, 1);
    expect_error(dsv3_layout_resolve(&dims, 1, 0), DSV3_ERR_LAUNCH,
                 "parallelism: cannot fill data_parallel_shard_degree: 1 stage process is not "
                 "a multiple of pp 1 × dp_replicate 1 × cp 2 × tp 1 = 2; launch a multiple of 2 "
                 "dsv3-stage processes or change pipeline_parallel_degree, "
                 "data_parallel_replicate_degree, context_parallel_degree or "
                 "tensor_parallel_degree");
}

static void test_resolve_expert_mismatch(void **state) {
    (void)state;
    Dsv3ParallelDims dims = dims_of(2, 1, 1, 1, 1, 2);
    expect_error(dsv3_layout_resolve(&dims, 2, 3), DSV3_ERR_LAUNCH,
                 "parallelism: expert_parallel_degree 2 × pipeline_parallel_degree 2 = 4 expert "
                 "servers expected, but 3 were launched");
    expect_error(dsv3_layout_resolve(&dims, 2, 0), DSV3_ERR_LAUNCH,
                 "parallelism: expert_parallel_degree 2 × pipeline_parallel_degree 2 = 4 expert "
                 "servers expected, but 0 were launched");

    dims = dims_of(2, 1, 1, 1, 1, 1);
    expect_error(dsv3_layout_resolve(&dims, 2, 2), DSV3_ERR_LAUNCH,
                 "parallelism: expert_parallel_degree is 1, so the job takes no expert servers, "
                 "but 2 were launched (set expert_parallel_degree to the number of expert servers "
                 "per pipeline stage to use them)");
    expect_error(dsv3_layout_resolve(&dims, 2, 1), DSV3_ERR_LAUNCH,
                 "parallelism: expert_parallel_degree is 1, so the job takes no expert servers, "
                 "but 1 was launched (set expert_parallel_degree to the number of expert servers "
                 "per pipeline stage to use them)");

    // Stage counts are checked before expert counts; dp_shard is not filled on failure.
    dims = dims_of(2, 1, -1, 1, 1, 2);
    assert_int_equal(dsv3_layout_resolve(&dims, 4, 1), DSV3_ERR_LAUNCH);
    dsv3_error_clear();
    assert_int_equal(dims.dp_shard, -1);
}

static void test_stage_coord_order(void **state) {
    (void)state;
    Dsv3ParallelDims dims = dims_of(2, 3, 2, 2, 2, 1);
    assert_int_equal(dsv3_layout_resolve(&dims, 48, 0), DSV3_OK);
    // Row-major [pp][dp_replicate][dp_shard][cp][tp]: tp is fastest, pp slowest.
    int64_t index = 0;
    for (int64_t p = 0; p < 2; p++)
        for (int64_t r = 0; r < 3; r++)
            for (int64_t d = 0; d < 2; d++)
                for (int64_t c = 0; c < 2; c++)
                    for (int64_t t = 0; t < 2; t++, index++) {
                        Dsv3StageCoord coord;
                        assert_int_equal(dsv3_layout_stage_coord(&dims, index, &coord), DSV3_OK);
                        assert_int_equal(coord.pp, p);
                        assert_int_equal(coord.dp_replicate, r);
                        assert_int_equal(coord.dp_shard, d);
                        assert_int_equal(coord.cp, c);
                        assert_int_equal(coord.tp, t);
                        int64_t back = -1;
                        assert_int_equal(dsv3_layout_stage_index(&dims, &coord, &back), DSV3_OK);
                        assert_int_equal(back, index);
                    }
    Dsv3StageCoord coord;
    assert_int_equal(dsv3_layout_stage_coord(&dims, 37, &coord), DSV3_OK);
    // Strides are pp 24, dp_replicate 8, dp_shard 4, cp 2, tp 1: 37 = 24 + 8 + 4 + 1.
    assert_int_equal(coord.pp, 1);
    assert_int_equal(coord.dp_replicate, 1);
    assert_int_equal(coord.dp_shard, 1);
    assert_int_equal(coord.cp, 0);
    assert_int_equal(coord.tp, 1);
}

static void test_stage_coord_errors(void **state) {
    (void)state;
    Dsv3ParallelDims dims = dims_of(2, 1, 2, 1, 2, 1);
    Dsv3StageCoord coord;
    expect_error(dsv3_layout_stage_coord(&dims, 8, &coord), DSV3_ERR_USAGE,
                 "stage index 8 is out of range [0, 8)");
    expect_error(dsv3_layout_stage_coord(&dims, -1, &coord), DSV3_ERR_USAGE,
                 "stage index -1 is out of range [0, 8)");
    coord = (Dsv3StageCoord){0, 0, 2, 0, 0};
    int64_t index;
    expect_error(dsv3_layout_stage_index(&dims, &coord, &index), DSV3_ERR_USAGE,
                 "stage coordinates (pp 0, dp_replicate 0, dp_shard 2, cp 0, tp 0) are outside "
                 "the mesh [2][1][2][1][2]");
    Dsv3ParallelDims unresolved = dims_of(2, 1, -1, 1, 2, 1);
    expect_error(dsv3_layout_stage_coord(&unresolved, 0, &coord), DSV3_ERR_USAGE,
                 "parallel dims are not resolved (pp 2, dp_replicate 1, dp_shard -1, cp 1, tp 2, "
                 "ep 1); call dsv3_layout_resolve first");
}

static void test_expert_coord(void **state) {
    (void)state;
    Dsv3ParallelDims dims = dims_of(3, 1, 1, 1, 2, 4);
    assert_int_equal(dsv3_layout_resolve(&dims, 6, 12), DSV3_OK);
    for (int64_t j = 0; j < 12; j++) {
        int64_t stage = -1, ep_rank = -1;
        assert_int_equal(dsv3_layout_expert_coord(&dims, j, &stage, &ep_rank), DSV3_OK);
        assert_int_equal(stage, j / 4);
        assert_int_equal(ep_rank, j % 4);
    }
    int64_t stage, ep_rank;
    expect_error(dsv3_layout_expert_coord(&dims, 12, &stage, &ep_rank), DSV3_ERR_USAGE,
                 "expert server index 12 is out of range [0, 12) (expert_parallel_degree 4 × "
                 "pipeline_parallel_degree 3)");
    dims = dims_of(3, 1, 1, 1, 2, 1);
    expect_error(dsv3_layout_expert_coord(&dims, 0, &stage, &ep_rank), DSV3_ERR_USAGE,
                 "expert server index 0 is out of range [0, 0) (expert_parallel_degree 1 × "
                 "pipeline_parallel_degree 3; a job with expert_parallel_degree 1 has no expert "
                 "servers)");
}

static void test_stage_layers(void **state) {
    (void)state;
    // torchtitan's example: 7 layers over 3 stages are 9 effective layers, 3 per stage; the
    // embedding and the head each take one layer's place.
    static const int64_t want_first[3] = {0, 2, 5}, want_count[3] = {2, 3, 2};
    Dsv3PipeSplit split = {.n_stages = 3, .input_weight = 1, .output_weight = 1};
    for (int64_t s = 0; s < 3; s++) {
        int64_t first = -1, count = -1;
        assert_int_equal(dsv3_layout_stage_layers(7, &split, s, &first, &count), DSV3_OK);
        assert_int_equal(first, want_first[s]);
        assert_int_equal(count, want_count[s]);
    }
    // 6 layers on 2 stages: 4 effective layers each.
    split = (Dsv3PipeSplit){.n_stages = 2, .input_weight = 1, .output_weight = 1};
    int64_t first, count;
    assert_int_equal(dsv3_layout_stage_layers(6, &split, 1, &first, &count), DSV3_OK);
    assert_int_equal(first, 3);
    assert_int_equal(count, 3);
    // One stage runs everything, whatever the weights.
    split = (Dsv3PipeSplit){.n_stages = 1, .input_weight = 5, .output_weight = 5};
    assert_int_equal(dsv3_layout_stage_layers(3, &split, 0, &first, &count), DSV3_OK);
    assert_int_equal(first, 0);
    assert_int_equal(count, 3);
    // Every valid split covers all layers contiguously; without weights the counts differ by
    // at most one, the larger ones first.
    for (int64_t n = 1; n <= 20; n++)
        for (int64_t stages = 1; stages <= n + 2; stages++)
            for (int64_t w = 0; w <= 2; w++) {
                split = (Dsv3PipeSplit){.n_stages = stages, .input_weight = w, .output_weight = w};
                int64_t base = (n + 2 * w) / stages;
                if (stages > n + 2 * w || (stages > 1 && w > base)) continue;
                int64_t next = 0, previous = n;
                for (int64_t s = 0; s < stages; s++) {
                    assert_int_equal(dsv3_layout_stage_layers(n, &split, s, &first, &count),
                                     DSV3_OK);
                    assert_int_equal(first, next);
                    assert_true(count >= 0);
                    if (w == 0) {
                        assert_true(count <= previous);
                        assert_true(count == n / stages || count == n / stages + 1);
                    }
                    next += count;
                    previous = count;
                }
                assert_int_equal(next, n);
            }
}

static void test_stage_layers_errors(void **state) {
    (void)state;
    int64_t first, count;
    Dsv3PipeSplit split = {.n_stages = 6, .input_weight = 1, .output_weight = 1};
    expect_error(dsv3_layout_stage_layers(3, &split, 0, &first, &count), DSV3_ERR_CONFIG,
                 "6 pipeline stages are more than the 5 effective layers (model.n_layers 3 + "
                 "pipeline_parallel_first_stage_less_layers 1 + "
                 "pipeline_parallel_last_stage_less_layers 1); lower "
                 "parallelism.pipeline_parallel_degree or the stages per rank");
    split = (Dsv3PipeSplit){.n_stages = 2, .input_weight = 4, .output_weight = 1};
    expect_error(dsv3_layout_stage_layers(2, &split, 0, &first, &count), DSV3_ERR_CONFIG,
                 "parallelism.pipeline_parallel_first_stage_less_layers 4 or "
                 "pipeline_parallel_last_stage_less_layers 1 exceeds the 3 effective layers of "
                 "the smallest of the 2 pipeline stages (model.n_layers 2)");
    split = (Dsv3PipeSplit){.n_stages = 1, .input_weight = 1, .output_weight = 1};
    expect_error(dsv3_layout_stage_layers(0, &split, 0, &first, &count), DSV3_ERR_CONFIG,
                 "model.n_layers is 0, but a model needs at least one layer");
    split.n_stages = 0;
    expect_error(dsv3_layout_stage_layers(4, &split, 0, &first, &count), DSV3_ERR_CONFIG,
                 "the pipeline has 0 stages, but it needs at least one");
    split.n_stages = 2;
    expect_error(dsv3_layout_stage_layers(4, &split, 2, &first, &count), DSV3_ERR_USAGE,
                 "pipeline stage 2 is out of range [0, 2)");
}

enum { C = DSV3_ROLE_COORDINATOR, S = DSV3_ROLE_STAGE, E = DSV3_ROLE_EXPERT };

#define LAUNCH_HINT                                                                                \
    "launch `mpiexec -n 1 dsv3-coordinator … : -n S dsv3-stage … [: -n E dsv3-expert …]`"

static void test_roles_valid(void **state) {
    (void)state;
    static const int mpmd[] = {C, S, S, S, S, E, E, E, E};
    int64_t n_stage = -1, n_expert = -1;
    assert_int_equal(dsv3_layout_check_roles(mpmd, 9, &n_stage, &n_expert), DSV3_OK);
    assert_int_equal(n_stage, 4);
    assert_int_equal(n_expert, 4);
    static const int no_experts[] = {C, S};
    assert_int_equal(dsv3_layout_check_roles(no_experts, 2, &n_stage, &n_expert), DSV3_OK);
    assert_int_equal(n_stage, 1);
    assert_int_equal(n_expert, 0);
}

static void test_roles_errors(void **state) {
    (void)state;
    int64_t n_stage, n_expert;
    static const int none[] = {S, S, S};
    expect_error(
        dsv3_layout_check_roles(none, 3, &n_stage, &n_expert), DSV3_ERR_LAUNCH,
        "no dsv3-coordinator was launched (launched: job ranks 0-2 dsv3-stage); " LAUNCH_HINT);
    static const int two[] = {C, S, C, S};
    expect_error(dsv3_layout_check_roles(two, 4, &n_stage, &n_expert), DSV3_ERR_LAUNCH,
                 "2 dsv3-coordinator processes were launched, but a job takes exactly one "
                 "(launched: job rank 0 dsv3-coordinator, job rank 1 dsv3-stage, job rank 2 "
                 "dsv3-coordinator, job rank 3 dsv3-stage); " LAUNCH_HINT);
    static const int late[] = {S, S, S, C};
    expect_error(dsv3_layout_check_roles(late, 4, &n_stage, &n_expert), DSV3_ERR_LAUNCH,
                 "job rank 3 is dsv3-coordinator, but the coordinator must be the first app of "
                 "the mpiexec line (launched: job ranks 0-2 dsv3-stage, job rank 3 "
                 "dsv3-coordinator); " LAUNCH_HINT);
    static const int no_stage[] = {C, E, E};
    expect_error(dsv3_layout_check_roles(no_stage, 3, &n_stage, &n_expert), DSV3_ERR_LAUNCH,
                 "no dsv3-stage was launched (launched: job rank 0 dsv3-coordinator, job ranks "
                 "1-2 dsv3-expert); " LAUNCH_HINT);
    static const int swapped[] = {C, E, E, S, S};
    expect_error(
        dsv3_layout_check_roles(swapped, 5, &n_stage, &n_expert), DSV3_ERR_LAUNCH,
        "job rank 3 is dsv3-stage, but job rank 2 before it is dsv3-expert: the stages "
        "must come before the expert servers on the mpiexec line (launched: job rank 0 "
        "dsv3-coordinator, job ranks 1-2 dsv3-expert, job ranks 3-4 dsv3-stage); " LAUNCH_HINT);
    static const int foreign[] = {C, S, 7};
    expect_error(dsv3_layout_check_roles(foreign, 3, &n_stage, &n_expert), DSV3_ERR_LAUNCH,
                 "job rank 2 reported role 7, which is not a dsv3 role; every process of the job "
                 "must be dsv3-coordinator, dsv3-stage or dsv3-expert");
}

static void test_roles_long_summary(void **state) {
    (void)state;
    // Alternating roles make many runs; the summary stops after eight of them.
    int roles[20];
    roles[0] = S;
    for (int r = 1; r < 20; r++)
        roles[r] = r % 2 ? C : S;
    int64_t n_stage, n_expert;
    assert_int_equal(dsv3_layout_check_roles(roles, 20, &n_stage, &n_expert), DSV3_ERR_LAUNCH);
    assert_non_null(strstr(dsv3_error_message(), "job rank 7 dsv3-coordinator, …)"));
    dsv3_error_clear();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_role_names),
        cmocka_unit_test(test_resolve_explicit),
        cmocka_unit_test(test_resolve_fill),
        cmocka_unit_test(test_resolve_bad_degrees),
        cmocka_unit_test(test_resolve_stage_mismatch),
        cmocka_unit_test(test_resolve_fill_mismatch),
        cmocka_unit_test(test_resolve_expert_mismatch),
        cmocka_unit_test(test_stage_coord_order),
        cmocka_unit_test(test_stage_coord_errors),
        cmocka_unit_test(test_expert_coord),
        cmocka_unit_test(test_stage_layers),
        cmocka_unit_test(test_stage_layers_errors),
        cmocka_unit_test(test_roles_valid),
        cmocka_unit_test(test_roles_errors),
        cmocka_unit_test(test_roles_long_summary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
