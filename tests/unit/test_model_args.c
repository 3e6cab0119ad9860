// Unit tests for model_args: the flavors, their parameter counts and FLOPs against numbers
// derived by hand from torchtitan's module structure, and every validation failure.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/model/model_args.h"

// Loads a flavor that must exist.
static Dsv3ModelArgs load_flavor(const char *name) {
    Dsv3ModelArgs a;
    memset(&a, 0, sizeof a);
    Dsv3Err err = dsv3_model_args_flavor(name, &a);
    if (err != DSV3_OK) fail_msg("flavor %s: %s", name, dsv3_error_text());
    return a;
}

// Fails unless the current error message contains `needle`; then clears the record.
static void expect_message_contains(const char *needle) {
    const char *msg = dsv3_error_message();
    if (strstr(msg, needle) == NULL) fail_msg("message '%s' does not name '%s'", msg, needle);
    dsv3_error_clear();
}

// ---------------------------------------------------------------------------------------------
// Flavors

static void test_flavor_names(void **state) {
    (void)state;
    const char *expected[] = {"debugmodel", "16B", "236B", "671B"};
    size_t n = 0;
    while (dsv3_model_flavor_names[n] != NULL)
        n++;
    assert_int_equal(n, sizeof expected / sizeof expected[0]);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(dsv3_model_flavor_names[i], expected[i]);
        Dsv3ModelArgs a = load_flavor(dsv3_model_flavor_names[i]);
        if (dsv3_model_args_validate(&a) != DSV3_OK)
            fail_msg("flavor %s does not validate: %s", expected[i], dsv3_error_text());
    }
}

static void test_flavor_unknown_lists_known(void **state) {
    (void)state;
    Dsv3ModelArgs a;
    assert_int_equal(dsv3_model_args_flavor("debug_model", &a), DSV3_ERR_CONFIG);
    const char *msg = dsv3_error_message();
    assert_non_null(strstr(msg, "model.flavor"));
    assert_non_null(strstr(msg, "debug_model"));
    for (size_t i = 0; dsv3_model_flavor_names[i] != NULL; i++)
        if (strstr(msg, dsv3_model_flavor_names[i]) == NULL)
            fail_msg("message '%s' does not list %s", msg, dsv3_model_flavor_names[i]);
    dsv3_error_clear();

    assert_int_equal(dsv3_model_args_flavor(NULL, &a), DSV3_ERR_CONFIG);
    expect_message_contains("model.flavor");
    assert_int_equal(dsv3_model_args_flavor("16B", NULL), DSV3_ERR_USAGE);
    dsv3_error_clear();
}

// The values torchtitan's flavor table sets, and the dataclass defaults it leaves.
static void test_flavor_values(void **state) {
    (void)state;
    Dsv3ModelArgs d = load_flavor("debugmodel");
    assert_int_equal(d.vocab_size, 2048);
    assert_int_equal(d.dim, 256);
    assert_int_equal(d.inter_dim, 1024);
    assert_int_equal(d.moe_inter_dim, 256);
    assert_int_equal(d.n_layers, 6);
    assert_int_equal(d.n_dense_layers, 1);
    assert_int_equal(d.n_heads, 16);
    assert_int_equal(d.num_experts, 8);
    assert_int_equal(d.num_shared_experts, 2);
    assert_int_equal(d.top_k, 3);
    assert_int_equal(d.score_func, DSV3_SCORE_SOFTMAX);
    assert_int_equal(d.route_norm, 0);
    assert_true(d.route_scale == 1.0);
    assert_int_equal(d.num_expert_groups, 0);
    assert_int_equal(d.num_limited_groups, 0);
    assert_true(d.load_balance_coeff == 1e-3);
    assert_int_equal(d.q_lora_rank, 0);
    assert_int_equal(d.kv_lora_rank, 512);
    assert_int_equal(d.qk_nope_head_dim, 128);
    assert_int_equal(d.qk_rope_head_dim, 64);
    assert_int_equal(d.v_head_dim, 128);
    assert_int_equal(d.attn_mask_type, DSV3_MASK_CAUSAL);
    assert_true(d.norm_eps == 1e-5);
    assert_int_equal(d.original_seq_len, 4096);
    assert_true(d.rope_theta == 10000.0);
    assert_true(d.rope_factor == 40.0);
    assert_true(d.beta_fast == 32.0);
    assert_true(d.beta_slow == 1.0);
    assert_true(d.mscale == 0.70);

    Dsv3ModelArgs s = load_flavor("16B");
    assert_int_equal(s.vocab_size, 102400);
    assert_int_equal(s.dim, 2048);
    assert_int_equal(s.inter_dim, 10944);
    assert_int_equal(s.moe_inter_dim, 1408);
    assert_int_equal(s.n_layers, 27);
    assert_int_equal(s.num_experts, 64);
    assert_int_equal(s.top_k, 6);
    assert_int_equal(s.score_func, DSV3_SCORE_SOFTMAX);
    assert_int_equal(s.attn_mask_type, DSV3_MASK_BLOCK_CAUSAL);
    assert_true(s.mscale == 0.70);

    Dsv3ModelArgs m = load_flavor("236B");
    assert_int_equal(m.dim, 5120);
    assert_int_equal(m.n_heads, 128);
    assert_int_equal(m.num_experts, 160);
    assert_int_equal(m.num_expert_groups, 8);
    assert_int_equal(m.num_limited_groups, 3);
    assert_int_equal(m.q_lora_rank, 1536);
    assert_true(m.route_scale == 16.0);
    assert_true(m.mscale == 1.0);
    assert_int_equal(m.attn_mask_type, DSV3_MASK_BLOCK_CAUSAL);

    Dsv3ModelArgs l = load_flavor("671B");
    assert_int_equal(l.vocab_size, 129280);
    assert_int_equal(l.dim, 7168);
    assert_int_equal(l.inter_dim, 18432);
    assert_int_equal(l.moe_inter_dim, 2048);
    assert_int_equal(l.n_layers, 61);
    assert_int_equal(l.n_dense_layers, 3);
    assert_int_equal(l.num_experts, 256);
    assert_int_equal(l.num_shared_experts, 1);
    assert_int_equal(l.top_k, 8);
    assert_int_equal(l.num_expert_groups, 8);
    assert_int_equal(l.num_limited_groups, 4);
    assert_int_equal(l.score_func, DSV3_SCORE_SIGMOID);
    assert_int_equal(l.route_norm, 1);
    assert_true(l.route_scale == 2.5);
    assert_true(l.mscale == 1.0);
    assert_true(l.rope_factor == 40.0);
}

// ---------------------------------------------------------------------------------------------
// Counts

typedef struct {
    const char *flavor;
    int64_t total;
    int64_t active;
} ExpectedCounts;

static const ExpectedCounts expected_counts[] = {
    {"debugmodel", INT64_C(33014016), INT64_C(28098816)},
    {"16B", INT64_C(15706484224), INT64_C(2661150208)},
    {"236B", INT64_C(235741434880), INT64_C(21375800320)},
    {"671B", INT64_C(671026404352), INT64_C(37552282624)},
};

static void test_counts_total_active(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof expected_counts / sizeof expected_counts[0]; i++) {
        const ExpectedCounts *e = &expected_counts[i];
        Dsv3ModelArgs a = load_flavor(e->flavor);
        Dsv3ParamCounts c;
        dsv3_model_param_counts(&a, &c);
        if (c.total != e->total || c.active != e->active)
            fail_msg("%s: total %lld active %lld, expected %lld / %lld", e->flavor,
                     (long long)c.total, (long long)c.active, (long long)e->total,
                     (long long)e->active);
        assert_int_equal(c.embedding, a.vocab_size * a.dim);
    }
}

// Layers + embedding + head add up to the total, and the routed parts to routed_experts.
static void test_counts_layers_sum_to_total(void **state) {
    (void)state;
    for (size_t f = 0; dsv3_model_flavor_names[f] != NULL; f++) {
        Dsv3ModelArgs a = load_flavor(dsv3_model_flavor_names[f]);
        Dsv3ParamCounts c;
        dsv3_model_param_counts(&a, &c);
        int64_t sum = dsv3_model_embedding_params(&a) + dsv3_model_head_params(&a);
        int64_t routed = 0;
        for (int64_t layer = 0; layer < a.n_layers; layer++) {
            Dsv3LayerParams p = dsv3_model_layer_params(&a, layer);
            sum += p.dense + p.routed;
            routed += p.routed;
            if (layer < a.n_dense_layers)
                assert_int_equal(p.routed, 0);
            else
                assert_true(p.routed > 0);
        }
        assert_int_equal(sum, c.total);
        assert_int_equal(routed, c.routed_experts);
        assert_int_equal(dsv3_model_head_params(&a), a.dim + a.vocab_size * a.dim);
        // Out-of-range layers hold nothing.
        Dsv3LayerParams none = dsv3_model_layer_params(&a, a.n_layers);
        assert_int_equal(none.dense + none.routed, 0);
        none = dsv3_model_layer_params(&a, -1);
        assert_int_equal(none.dense + none.routed, 0);
    }
}

// debugmodel (q_lora_rank 0), by hand:
//   attention: wq 256·16·192 = 786,432; wkv_a 256·576 = 147,456; kv_norm 512;
//              wkv_b 512·16·256 = 2,097,152; wo 16·128·256 = 524,288 → 3,555,840
//   norms 2·256 = 512
//   dense layer: + w1,w2,w3 3·256·1024 = 786,432 → 4,342,784
//   MoE layer dense part: + router 8·256 = 2,048 + shared 3·256·512 = 393,216 → 3,951,616
//   MoE layer routed: 3·8·256·256 = 1,572,864
static void test_counts_debugmodel_by_hand(void **state) {
    (void)state;
    Dsv3ModelArgs a = load_flavor("debugmodel");
    Dsv3LayerParams dense = dsv3_model_layer_params(&a, 0);
    assert_int_equal(dense.dense, 4342784);
    assert_int_equal(dense.routed, 0);
    Dsv3LayerParams moe = dsv3_model_layer_params(&a, 1);
    assert_int_equal(moe.dense, 3951616);
    assert_int_equal(moe.routed, 1572864);
    Dsv3ParamCounts c;
    dsv3_model_param_counts(&a, &c);
    assert_int_equal(c.router, 5 * 2048);
    assert_int_equal(c.shared_experts, 5 * 393216);
    assert_int_equal(c.routed_experts, 5 * 1572864);
    assert_int_equal(c.embedding, 2048 * 256);

    // No shared experts: the module is absent, five layers lose 393,216 each.
    a.num_shared_experts = 0;
    assert_int_equal(dsv3_model_args_validate(&a), DSV3_OK);
    dsv3_model_param_counts(&a, &c);
    assert_int_equal(c.shared_experts, 0);
    assert_int_equal(c.total, 33014016 - 5 * 393216);
}

// 671B (q_lora_rank 1536), by hand with D = 7168:
//   attention: wq_a 7168·1536 = 11,010,048; q_norm 1,536; wq_b 1536·128·192 = 37,748,736;
//              wkv_a 7168·576 = 4,128,768; kv_norm 512; wkv_b 512·128·256 = 16,777,216;
//              wo 128·128·7168 = 117,440,512 → 187,107,328
//   dense layer: + norms 14,336 + 3·7168·18432 = 396,361,728 → 583,483,392
//   MoE layer dense part: + norms 14,336 + router 256·7168 = 1,835,008
//                         + shared 3·7168·2048 = 44,040,192 → 232,996,864
//   MoE layer routed: 3·256·2048·7168 = 11,274,289,152
//   total: 2·129280·7168 + 7168 + 3·583,483,392 + 58·(232,996,864 + 11,274,289,152)
//        = 671,026,404,352
static void test_counts_671b_by_hand(void **state) {
    (void)state;
    Dsv3ModelArgs a = load_flavor("671B");
    Dsv3LayerParams dense = dsv3_model_layer_params(&a, 2);
    assert_int_equal(dense.dense, INT64_C(583483392));
    assert_int_equal(dense.routed, 0);
    Dsv3LayerParams moe = dsv3_model_layer_params(&a, 3);
    assert_int_equal(moe.dense, INT64_C(232996864));
    assert_int_equal(moe.routed, INT64_C(11274289152));
    Dsv3ParamCounts c;
    dsv3_model_param_counts(&a, &c);
    assert_int_equal(c.routed_experts, 58 * INT64_C(11274289152));
    assert_int_equal(c.router, 58 * INT64_C(1835008));
    assert_int_equal(c.shared_experts, 58 * INT64_C(44040192));
}

// FLOPs per token = 6 · (active − embedding)
//                 + 6 · n_layers · n_heads · (128 + 64 + 128) · seq_len.
//
// debugmodel, seq_len 2048:
//   active − embedding = 28,098,816 − 2048·256 = 27,574,528
//   attention = 6 · 16 · 320 · 2048 = 62,914,560
//   6 · (27,574,528 + 62,914,560) = 6 · 90,489,088 = 542,934,528
// 671B, seq_len 4096:
//   active − embedding = 37,552,282,624 − 129280·7168 = 37,552,282,624 − 926,679,040
//                      = 36,625,603,584
//   attention = 61 · 128 · 320 · 4096 = 10,234,101,760
//   6 · (36,625,603,584 + 10,234,101,760) = 6 · 46,859,705,344 = 281,158,232,064
static void test_flops_per_token(void **state) {
    (void)state;
    Dsv3ModelArgs d = load_flavor("debugmodel");
    assert_int_equal(dsv3_model_flops_per_token(&d, 2048), INT64_C(542934528));
    Dsv3ModelArgs l = load_flavor("671B");
    assert_int_equal(dsv3_model_flops_per_token(&l, 4096), INT64_C(281158232064));
}

// ---------------------------------------------------------------------------------------------
// Validation

// One way to break a flavor, and the key the message must name.
typedef struct {
    const char *flavor;
    void (*mutate)(Dsv3ModelArgs *);
    const char *key;
} BadArgs;

#define BREAK(name, body)                                                                          \
    static void break_##name(Dsv3ModelArgs *a) { body; }

BREAK(vocab_size, a->vocab_size = 0)
BREAK(dim, a->dim = -256)
BREAK(inter_dim, a->inter_dim = 0)
BREAK(moe_inter_dim, a->moe_inter_dim = 0)
BREAK(n_layers, a->n_layers = 0)
BREAK(n_heads, a->n_heads = 0)
BREAK(num_experts, a->num_experts = 0)
BREAK(num_shared_experts, a->num_shared_experts = -1)
BREAK(q_lora_rank, a->q_lora_rank = -1)
BREAK(kv_lora_rank, a->kv_lora_rank = 0)
BREAK(qk_nope_head_dim, a->qk_nope_head_dim = 0)
BREAK(qk_rope_head_dim, a->qk_rope_head_dim = 0)
BREAK(qk_rope_head_dim_odd, a->qk_rope_head_dim = 63)
BREAK(v_head_dim, a->v_head_dim = 0)
BREAK(original_seq_len, a->original_seq_len = 0)
BREAK(n_dense_layers_negative, a->n_dense_layers = -1)
BREAK(n_dense_layers_too_many, a->n_dense_layers = a->n_layers + 1)
BREAK(route_norm, a->route_norm = 2)
BREAK(score_func, a->score_func = (Dsv3ScoreFunc)7)
BREAK(attn_mask_type, a->attn_mask_type = (Dsv3MaskType)7)
BREAK(top_k_zero, a->top_k = 0)
BREAK(top_k_too_many, a->top_k = a->num_experts + 1)
BREAK(groups_without_limit, a->num_limited_groups = 0)
BREAK(limit_without_groups, a->num_expert_groups = 0)
BREAK(groups_negative, a->num_expert_groups = -8)
BREAK(groups_not_dividing, a->num_expert_groups = 7)
BREAK(groups_too_small, {
    a->num_expert_groups = 256;
    a->num_limited_groups = 4;
})
BREAK(limited_over_groups, a->num_limited_groups = 9)
BREAK(top_k_over_limited, {
    a->num_expert_groups = 4;
    a->num_limited_groups = 1;
})
BREAK(norm_eps, a->norm_eps = 0)
BREAK(norm_eps_nan, a->norm_eps = NAN)
BREAK(route_scale, a->route_scale = 0)
BREAK(load_balance_coeff, a->load_balance_coeff = -1e-3)
BREAK(rope_theta, a->rope_theta = 0)
BREAK(rope_theta_one, a->rope_theta = 1)
BREAK(rope_factor, a->rope_factor = 0.5)
BREAK(beta_slow, a->beta_slow = 0)
BREAK(beta_fast, a->beta_fast = a->beta_slow)
BREAK(mscale, a->mscale = -1)
BREAK(mscale_inf, a->mscale = INFINITY)
BREAK(too_large, {
    a->dim = INT64_C(1) << 40;
    a->vocab_size = INT64_C(1) << 40;
})

static const BadArgs bad_args[] = {
    {"debugmodel", break_vocab_size, "model.vocab_size"},
    {"debugmodel", break_dim, "model.dim"},
    {"debugmodel", break_inter_dim, "model.inter_dim"},
    {"debugmodel", break_moe_inter_dim, "model.moe_inter_dim"},
    {"debugmodel", break_n_layers, "model.n_layers"},
    {"debugmodel", break_n_heads, "model.n_heads"},
    {"debugmodel", break_num_experts, "model.num_experts"},
    {"debugmodel", break_num_shared_experts, "model.num_shared_experts"},
    {"debugmodel", break_q_lora_rank, "model.q_lora_rank"},
    {"debugmodel", break_kv_lora_rank, "model.kv_lora_rank"},
    {"debugmodel", break_qk_nope_head_dim, "model.qk_nope_head_dim"},
    {"debugmodel", break_qk_rope_head_dim, "model.qk_rope_head_dim"},
    {"debugmodel", break_qk_rope_head_dim_odd, "model.qk_rope_head_dim"},
    {"debugmodel", break_v_head_dim, "model.v_head_dim"},
    {"debugmodel", break_original_seq_len, "model.original_seq_len"},
    {"debugmodel", break_n_dense_layers_negative, "model.n_dense_layers"},
    {"debugmodel", break_n_dense_layers_too_many, "model.n_dense_layers"},
    {"debugmodel", break_route_norm, "model.route_norm"},
    {"debugmodel", break_score_func, "model.score_func"},
    {"debugmodel", break_attn_mask_type, "model.attn_mask_type"},
    {"debugmodel", break_top_k_zero, "model.top_k"},
    {"debugmodel", break_top_k_too_many, "model.top_k"},
    {"671B", break_groups_without_limit, "model.num_limited_groups"},
    {"671B", break_groups_without_limit, "model.num_expert_groups"},
    {"671B", break_limit_without_groups, "model.num_expert_groups"},
    {"671B", break_groups_negative, "model.num_expert_groups"},
    {"671B", break_groups_not_dividing, "model.num_expert_groups"},
    {"671B", break_groups_too_small, "model.num_expert_groups"},
    {"671B", break_limited_over_groups, "model.num_limited_groups"},
    {"debugmodel", break_top_k_over_limited, "model.top_k"},
    {"debugmodel", break_norm_eps, "model.norm_eps"},
    {"debugmodel", break_norm_eps_nan, "model.norm_eps"},
    {"debugmodel", break_route_scale, "model.route_scale"},
    {"debugmodel", break_load_balance_coeff, "model.load_balance_coeff"},
    {"debugmodel", break_rope_theta, "model.rope_theta"},
    {"debugmodel", break_rope_theta_one, "model.rope_theta"},
    {"debugmodel", break_rope_factor, "model.rope_factor"},
    {"debugmodel", break_beta_slow, "model.beta_slow"},
    {"debugmodel", break_beta_fast, "model.beta_fast"},
    {"debugmodel", break_mscale, "model.mscale"},
    {"debugmodel", break_mscale_inf, "model.mscale"},
    {"debugmodel", break_too_large, "model.dim"},
};

static void test_validate_every_error_names_its_key(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof bad_args / sizeof bad_args[0]; i++) {
        Dsv3ModelArgs a = load_flavor(bad_args[i].flavor);
        bad_args[i].mutate(&a);
        Dsv3Err err = dsv3_model_args_validate(&a);
        if (err != DSV3_ERR_CONFIG)
            fail_msg("case %zu (%s): expected a config error, got %s", i, bad_args[i].key,
                     dsv3_error_name(err));
        expect_message_contains(bad_args[i].key);
    }
    assert_int_equal(dsv3_model_args_validate(NULL), DSV3_ERR_USAGE);
    dsv3_error_clear();
}

// Values at the edge of what is allowed.
static void test_validate_accepts_edges(void **state) {
    (void)state;
    Dsv3ModelArgs a = load_flavor("debugmodel");
    a.n_dense_layers = 0; // all MoE
    a.num_shared_experts = 0;
    a.load_balance_coeff = 0;
    a.top_k = a.num_experts;
    a.rope_factor = 1;
    assert_int_equal(dsv3_model_args_validate(&a), DSV3_OK);

    a = load_flavor("debugmodel");
    a.n_dense_layers = a.n_layers; // all dense: no routed experts at all
    assert_int_equal(dsv3_model_args_validate(&a), DSV3_OK);
    Dsv3ParamCounts c;
    dsv3_model_param_counts(&a, &c);
    assert_int_equal(c.routed_experts, 0);
    assert_int_equal(c.active, c.total);

    a = load_flavor("debugmodel");
    a.num_expert_groups = 4; // 2 experts per group
    a.num_limited_groups = 2;
    a.top_k = 4; // exactly 2 groups × 2 experts
    assert_int_equal(dsv3_model_args_validate(&a), DSV3_OK);

    a = load_flavor("debugmodel");
    a.q_lora_rank = 128; // low-rank query path
    assert_int_equal(dsv3_model_args_validate(&a), DSV3_OK);
    Dsv3LayerParams p = dsv3_model_layer_params(&a, 0);
    // wq (786,432) replaced by wq_a 256·128 + q_norm 128 + wq_b 128·16·192.
    assert_int_equal(p.dense, 4342784 - 786432 + 256 * 128 + 128 + 128 * 16 * 192);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flavor_names),
        cmocka_unit_test(test_flavor_unknown_lists_known),
        cmocka_unit_test(test_flavor_values),
        cmocka_unit_test(test_counts_total_active),
        cmocka_unit_test(test_counts_layers_sum_to_total),
        cmocka_unit_test(test_counts_debugmodel_by_hand),
        cmocka_unit_test(test_counts_671b_by_hand),
        cmocka_unit_test(test_flops_per_token),
        cmocka_unit_test(test_validate_every_error_names_its_key),
        cmocka_unit_test(test_validate_accepts_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
