// plan: every rank's share, from the parameter table as the rank's store lays it out, adds up
// to the model: tensor parallelism cuts what torchtitan's plan cuts, the dp_shard × cp ranks
// of a stage split every tensor (FSDP: their real rows add up to the piece, their padded
// shards are equal), dp_replicate replicas hold the same, expert servers split the routed
// experts exactly.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/comm/plan.h"

// One sequence of 16 tokens, no activation checkpointing, the default reshard policy, one
// micro-batch through the pp stages of `d` under 1F1B, torchtitan's default split.
static const Dsv3PlanOptions *plan_for(const Dsv3ParallelDims *d) {
    static Dsv3PlanOptions plan;
    plan = (Dsv3PlanOptions){
        .model = {.batch = 1, .seq_len = 16, .eos_id = -1, .loss_chunk = 1024, .slots = 1},
        .reshard = DSV3_RESHARD_DEFAULT,
        .pipe = {.kind = DSV3_PIPE_1F1B,
                 .stages_per_rank = 1,
                 .n_micro = 1,
                 .micro_batch = 1,
                 .split = {.n_stages = d->pp, .input_weight = 1, .output_weight = 1}}};
    return &plan;
}

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
    assert_int_equal(dsv3_plan_rank(&a, &d, plan_for(&d), 1, &s), DSV3_OK);
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
    assert_int_equal(dsv3_plan_rank(&a, &d, plan_for(&d), 0, &s), DSV3_OK);
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
    assert_int_equal(dsv3_plan_rank(&a, &d, plan_for(&d), 3, &s), DSV3_ERR_USAGE);
    assert_non_null(strstr(dsv3_error_message(), "outside a job of 3 ranks"));
    dsv3_error_clear();
}

// Parameters of a stage that tensor parallelism does not cut (torchtitan's DeepSeek-V3 plan:
// norms, wq_a, wkv_a and the router gate are replicated; routed experts too, when the stage
// ranks hold them), written out independently of the parameter table.
static int64_t replicated_over_tp(const Dsv3ModelArgs *a, int64_t first, int64_t count, int last,
                                  int local_experts) {
    int64_t D = a->dim, C = a->kv_lora_rank, R = a->qk_rope_head_dim, Q = a->q_lora_rank;
    int64_t n = last ? D : 0; // the final norm
    for (int64_t l = first; l < first + count; l++) {
        n += 2 * D + (C + R) * D + C; // attention_norm, ffn_norm, wkv_a, kv_norm
        if (Q > 0) n += Q * D + Q;    // wq_a, q_norm
        if (l < a->n_dense_layers) continue;
        n += a->num_experts * D; // the router gate
        if (local_experts) n += 3 * a->num_experts * a->moe_inter_dim * D;
    }
    return n;
}

// Elements of the real rows (the boxes) of the groups the stage rank at `s` holds.
static int64_t real_elements(const Dsv3ModelArgs *a, const Dsv3ParallelDims *d,
                             const Dsv3RankShare *s, int64_t n_expert) {
    Dsv3StageRange range = {.first_layer = s->first_layer,
                            .n_layers = s->layer_count,
                            .first = s->has_embedding,
                            .last = s->has_head,
                            .dense = 1,
                            .routed = n_expert == 0};
    Dsv3ShardSpec spec = dsv3_plan_stage_spec(d, &s->coord);
    int n = dsv3_param_stage_group_count(a, &range);
    Dsv3ParamGroup *groups = calloc((size_t)n, sizeof *groups);
    assert_non_null(groups);
    assert_int_equal(dsv3_param_stage_groups(a, &range, &spec, groups), DSV3_OK);
    int64_t real = 0, shards = 0;
    for (int g = 0; g < n; g++) {
        shards += groups[g].shard_numel;
        for (int p = 0; p < DSV3_PARAM_SLOT_COUNT; p++)
            if (groups[g].params[p].numel)
                real += dsv3_box_numel(&groups[g].params[p].box, groups[g].params[p].ndim);
    }
    free(groups);
    assert_int_equal(shards, s->params); // the plan counts the padded shards the store holds
    return real;
}

// The real rows of the dp_replicate = 0 ranks cover every pipeline stage once per tp rank:
// together the model, plus (tp − 1) copies of what tp does not cut; expert servers split the
// routed experts exactly. The ranks of an FSDP group hold equal (padded) shards, and every
// dp_replicate replica the same as its dp_replicate = 0 peer.
static void check_shares_cover_model(const char *name, Dsv3ParallelDims d) {
    Dsv3ModelArgs a = flavor(name);
    Dsv3ParamCounts counts;
    dsv3_model_param_counts(&a, &counts);
    int64_t n_stage = dsv3_layout_stage_count(&d), n_expert = dsv3_layout_expert_count(&d);
    int64_t stage_sum = 0, expert_sum = 0, extra = 0;
    for (int64_t r = 1; r <= n_stage + n_expert; r++) {
        Dsv3RankShare s;
        assert_int_equal(dsv3_plan_rank(&a, &d, plan_for(&d), r, &s), DSV3_OK);
        if (s.role == DSV3_ROLE_EXPERT) {
            expert_sum += s.params;
            continue;
        }
        Dsv3StageCoord peer = s.coord;
        peer.dp_replicate = peer.dp_shard = peer.cp = 0;
        int64_t index = 0;
        assert_int_equal(dsv3_layout_stage_index(&d, &peer, &index), DSV3_OK);
        Dsv3RankShare first;
        assert_int_equal(dsv3_plan_rank(&a, &d, plan_for(&d), 1 + index, &first), DSV3_OK);
        assert_int_equal(s.params, first.params);
        assert_int_equal(s.fsdp, d.dp_shard * d.cp);
        if (s.coord.dp_replicate) continue;
        stage_sum += real_elements(&a, &d, &s, n_expert);
        if (s.coord.tp == 0 && s.coord.dp_shard == 0 && s.coord.cp == 0)
            extra += (d.tp - 1) * replicated_over_tp(&a, s.first_layer, s.layer_count, s.has_head,
                                                     n_expert == 0);
    }
    int64_t expected_stage = n_expert ? counts.total - counts.routed_experts : counts.total;
    assert_int_equal(stage_sum, expected_stage + extra);
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
    assert_int_equal(dsv3_plan_rank(&a, &d, plan_for(&d), last, &s), DSV3_OK);
    assert_int_equal(s.role, DSV3_ROLE_EXPERT);
    assert_int_equal(s.pp_stage, 15);
    assert_int_equal(s.ep_rank, 31);
    assert_int_equal(s.first_expert, 248);
    assert_int_equal(s.expert_count, 8);
    // The last of 16 stages of 63 effective layers runs layers 59-60 and the head: 2 MoE
    // layers × 8 experts × 3 matrices × 2048 × 7168.
    assert_int_equal(s.first_layer, 59);
    assert_int_equal(s.layer_count, 2);
    assert_int_equal(s.params, 2LL * 8 * 3 * 2048 * 7168);
}

// torchtitan's policies: default keeps only the head gathered after forward (and everything
// under pipeline parallelism), always keeps nothing, never keeps everything.
static void test_reshard_policies(void **state) {
    (void)state;
    Dsv3ReshardPolicy p;
    assert_int_equal(dsv3_reshard_policy_parse("never", &p), DSV3_OK);
    assert_int_equal(p, DSV3_RESHARD_NEVER);
    assert_int_equal(dsv3_reshard_policy_parse("sometimes", &p), DSV3_ERR_CONFIG);
    assert_non_null(strstr(dsv3_error_message(), "expected default, always or never"));
    dsv3_error_clear();
    for (int kind = 0; kind < DSV3_GROUP_KIND_COUNT; kind++) {
        int head = kind == DSV3_GROUP_HEAD;
        assert_int_equal(dsv3_reshard_after_forward(DSV3_RESHARD_DEFAULT, kind, 0), !head);
        assert_int_equal(dsv3_reshard_after_forward(DSV3_RESHARD_DEFAULT, kind, 1), 0);
        assert_int_equal(dsv3_reshard_after_forward(DSV3_RESHARD_ALWAYS, kind, 0), 1);
        assert_int_equal(dsv3_reshard_after_forward(DSV3_RESHARD_NEVER, kind, 0), 0);
    }
}

// The debug model at dp_shard 4: buffers sized by its largest group (the dense layer 0, whole
// on every rank once gathered); the working set, plus
// what a policy keeps before the last group (default: nothing, the head being last).
static void test_fsdp_buffers_of_the_debug_model(void **state) {
    (void)state;
    Dsv3ModelArgs a = flavor("debugmodel");
    Dsv3ParallelDims d = resolved(1, 1, 4, 1, 1, 1);
    Dsv3StageRange range = dsv3_stage_range_whole(&a);
    Dsv3ShardSpec spec = {.tp = 1, .fsdp = 4, .fsdp_rank = 3, .ep = 1};
    int n = dsv3_param_stage_group_count(&a, &range);
    Dsv3ParamGroup *groups = calloc((size_t)n, sizeof *groups);
    assert_non_null(groups);
    assert_int_equal(dsv3_param_stage_groups(&a, &range, &spec, groups), DSV3_OK);
    Dsv3FsdpBuffers b;
    dsv3_fsdp_buffers(DSV3_RESHARD_DEFAULT, 0, 0, groups, n, &b);
    assert_int_equal(groups[1].kind, DSV3_GROUP_LAYER);
    for (int g = 0; g < n; g++)
        assert_true(groups[g].numel <= groups[1].numel);
    assert_int_equal(b.buffer_numel, groups[1].numel);
    assert_int_equal(b.buffers, DSV3_FSDP_WORKING_BUFFERS);
    dsv3_fsdp_buffers(DSV3_RESHARD_ALWAYS, 0, 0, groups, n, &b);
    assert_int_equal(b.buffers, DSV3_FSDP_WORKING_BUFFERS);
    dsv3_fsdp_buffers(DSV3_RESHARD_NEVER, 0, 0, groups, n, &b);
    assert_int_equal(b.buffers, n + DSV3_FSDP_GRAD_BUFFERS);
    dsv3_fsdp_buffers(DSV3_RESHARD_DEFAULT, 1, 0, groups, n, &b); // pipelined: as never
    assert_int_equal(b.buffers, n + DSV3_FSDP_GRAD_BUFFERS);
    // A split backward keeps each of the 6 layers' gradients from its I to its W.
    dsv3_fsdp_buffers(DSV3_RESHARD_DEFAULT, 1, 1, groups, n, &b);
    assert_int_equal(b.buffers, n + DSV3_FSDP_GRAD_BUFFERS + 6);
    // The plan of that rank counts the same buffers; one rank alone has none.
    dsv3_fsdp_buffers(DSV3_RESHARD_DEFAULT, 0, 0, groups, n, &b);
    Dsv3RankShare s;
    assert_int_equal(dsv3_plan_rank(&a, &d, plan_for(&d), 4, &s), DSV3_OK);
    assert_int_equal(s.gather_bytes, dsv3_fsdp_buffer_bytes(&b));
    assert_true(s.activation_bytes > 0 && s.workspace_bytes > 0);
    Dsv3ParallelDims one = resolved(1, 1, 1, 1, 1, 1);
    assert_int_equal(dsv3_plan_rank(&a, &one, plan_for(&one), 1, &s), DSV3_OK);
    assert_int_equal(s.gather_bytes, 0);
    free(groups);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_stage_rank_holds_everything),
        cmocka_unit_test(test_coordinator_owns_nothing),
        cmocka_unit_test(test_rank_outside_the_job_is_an_error),
        cmocka_unit_test(test_shares_cover_the_model),
        cmocka_unit_test(test_expert_servers_hold_whole_experts),
        cmocka_unit_test(test_reshard_policies),
        cmocka_unit_test(test_fsdp_buffers_of_the_debug_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
