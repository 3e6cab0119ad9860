// plan: every rank's share adds up to the model. Shares of stage ranks cover each pipeline
// stage's parameters exactly once per data-parallel replica (up to the padding of one element
// per shard and flat buffer); expert servers split the routed experts exactly.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/comm/plan.h"

static Dsv3ModelArgs flavor(const char *name) {
    Dsv3ModelArgs a;
    assert_int_equal(dsv3_model_args_flavor(name, &a), DSV3_OK);
    return a;
}

static Dsv3ParallelDims resolved(int64_t pp, int64_t dp_replicate, int64_t dp_shard, int64_t cp,
                                 int64_t tp, int64_t ep) {
    Dsv3ParallelDims d = {pp, dp_replicate, dp_shard, cp, tp, ep};
    int64_t n_expert = ep > 1 ? pp * ep : 0;
    assert_int_equal(dsv3_layout_resolve(&d, pp * dp_replicate * dp_shard * cp * tp, n_expert),
                     DSV3_OK);
    return d;
}

static void test_one_stage_rank_holds_everything(void **state) {
    (void)state;
    Dsv3ModelArgs a = flavor("debugmodel");
    Dsv3ParallelDims d = resolved(1, 1, 1, 1, 1, 1);
    Dsv3RankShare s;
    assert_int_equal(dsv3_plan_rank(&a, &d, 1, &s), DSV3_OK);
    assert_int_equal(s.role, DSV3_ROLE_STAGE);
    assert_int_equal(s.params, 33014016);
    assert_true(s.has_embedding && s.has_head);
    assert_int_equal(s.first_layer, 0);
    assert_int_equal(s.layer_count, 6);
}

static void test_coordinator_owns_nothing(void **state) {
    (void)state;
    Dsv3ModelArgs a = flavor("debugmodel");
    Dsv3ParallelDims d = resolved(2, 1, 2, 1, 1, 2);
    Dsv3RankShare s;
    assert_int_equal(dsv3_plan_rank(&a, &d, 0, &s), DSV3_OK);
    assert_int_equal(s.role, DSV3_ROLE_COORDINATOR);
    assert_int_equal(s.params, 0);
    char line[512];
    dsv3_plan_describe(&s, line, sizeof line);
    assert_non_null(strstr(line, "coordinator"));
}

static void test_rank_outside_the_job_is_an_error(void **state) {
    (void)state;
    Dsv3ModelArgs a = flavor("debugmodel");
    Dsv3ParallelDims d = resolved(1, 1, 2, 1, 1, 1);
    Dsv3RankShare s;
    assert_int_equal(dsv3_plan_rank(&a, &d, 3, &s), DSV3_ERR_USAGE);
    assert_non_null(strstr(dsv3_error_message(), "outside a job of 3 ranks"));
    dsv3_error_clear();
}

// Sums the shares of one data-parallel replica (dp_replicate coordinate 0) and of all expert
// servers, and checks them against the model's counts.
static void check_shares_cover_model(const char *name, Dsv3ParallelDims d) {
    Dsv3ModelArgs a = flavor(name);
    Dsv3ParamCounts counts;
    dsv3_model_param_counts(&a, &counts);
    int64_t n_stage = dsv3_layout_stage_count(&d), n_expert = dsv3_layout_expert_count(&d);
    int64_t stage_sum = 0, expert_sum = 0;
    for (int64_t r = 1; r <= n_stage + n_expert; r++) {
        Dsv3RankShare s;
        assert_int_equal(dsv3_plan_rank(&a, &d, r, &s), DSV3_OK);
        if (s.role == DSV3_ROLE_EXPERT)
            expert_sum += s.params;
        else if (s.coord.dp_replicate == 0)
            stage_sum += s.params;
    }
    int64_t shards = d.dp_shard * d.cp * d.tp;
    // Flat buffers: one per layer, plus embedding and head; each pads by < shards elements.
    int64_t max_padding = (a.n_layers * (n_expert ? 1 : 2) + 2) * (shards - 1) * d.pp;
    int64_t expected_stage = n_expert ? counts.total - counts.routed_experts : counts.total;
    assert_true(stage_sum >= expected_stage);
    assert_true(stage_sum - expected_stage <= max_padding);
    assert_int_equal(expert_sum, n_expert ? counts.routed_experts : 0);
}

static void test_shares_cover_the_model(void **state) {
    (void)state;
    check_shares_cover_model("debugmodel", resolved(1, 1, 1, 1, 1, 1));
    check_shares_cover_model("debugmodel", resolved(2, 2, 2, 1, 2, 1));
    check_shares_cover_model("debugmodel", resolved(3, 1, 2, 1, 1, 4));
    check_shares_cover_model("16B", resolved(4, 1, 4, 1, 2, 8));
    check_shares_cover_model("671B", resolved(16, 2, 8, 2, 8, 32));
}

static void test_expert_servers_hold_whole_experts(void **state) {
    (void)state;
    Dsv3ModelArgs a = flavor("671B");
    Dsv3ParallelDims d = resolved(16, 1, 32, 1, 8, 32);
    Dsv3RankShare s;
    int64_t last = 1 + dsv3_layout_stage_count(&d) + dsv3_layout_expert_count(&d) - 1;
    assert_int_equal(dsv3_plan_rank(&a, &d, last, &s), DSV3_OK);
    assert_int_equal(s.role, DSV3_ROLE_EXPERT);
    assert_int_equal(s.pp_stage, 15);
    assert_int_equal(s.ep_rank, 31);
    assert_int_equal(s.first_expert, 248);
    assert_int_equal(s.expert_count, 8);
    // Layers 58-60 are MoE layers: 3 layers × 8 experts × 3 matrices × 2048 × 7168.
    assert_int_equal(s.params, 3LL * 8 * 3 * 2048 * 7168);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_stage_rank_holds_everything),
        cmocka_unit_test(test_coordinator_owns_nothing),
        cmocka_unit_test(test_rank_outside_the_job_is_an_error),
        cmocka_unit_test(test_shares_cover_the_model),
        cmocka_unit_test(test_expert_servers_hold_whole_experts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
