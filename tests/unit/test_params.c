// params: every slot's FQN and shape follow torchtitan's module tree, and initialisation
// follows torchtitan's init_weights — norms ones, embeddings N(0, 1), most weights trunc-normal
// with std 0.02, depth-scaled std for wo/w2/w3/router/expert w2,w3, the output head
// trunc-normal at ±3σ — deterministic in (seed, FQN, index).
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/model/params.h"

static Dsv3ModelArgs debug_args(void) {
    Dsv3ModelArgs a;
    assert_int_equal(dsv3_model_args_flavor("debugmodel", &a), DSV3_OK);
    return a;
}

static void moments(const Dsv3Param *p, double *mean, double *std, double *max_abs) {
    double s = 0, s2 = 0;
    *max_abs = 0;
    for (int64_t i = 0; i < p->numel; i++) {
        s += p->data[i];
        s2 += (double)p->data[i] * p->data[i];
        *max_abs = fmax(*max_abs, fabs(p->data[i]));
    }
    *mean = s / (double)p->numel;
    *std = sqrt(s2 / (double)p->numel - *mean * *mean);
}

static void test_layer_slots_follow_torchtitan(void **state) {
    (void)state;
    Dsv3ModelArgs a = debug_args();
    Dsv3ParamGroup dense, moe;
    assert_int_equal(dsv3_param_group_create(&dense, &a, DSV3_GROUP_LAYER, 0), DSV3_OK);
    assert_int_equal(dsv3_param_group_create(&moe, &a, DSV3_GROUP_LAYER, 3), DSV3_OK);
    assert_string_equal(dense.params[DSV3_P_WQ].fqn, "layers.0.attention.wq.weight");
    assert_int_equal(dense.params[DSV3_P_WQ].shape[0], 16 * 192);
    assert_int_equal(dense.params[DSV3_P_WQ_A].numel, 0); // q_lora_rank 0: a single wq
    assert_string_equal(dense.params[DSV3_P_FF_W2].fqn, "layers.0.feed_forward.w2.weight");
    assert_int_equal(dense.params[DSV3_P_GATE].numel, 0);
    assert_string_equal(moe.params[DSV3_P_EXPERTS_W2].fqn, "layers.3.moe.experts.w2");
    assert_int_equal(moe.params[DSV3_P_EXPERTS_W2].ndim, 3); // (E, D, F)
    assert_int_equal(moe.params[DSV3_P_EXPERTS_W2].shape[0], 8);
    assert_int_equal(moe.params[DSV3_P_EXPERTS_W2].shape[1], 256);
    assert_int_equal(moe.params[DSV3_P_SHARED_W1].shape[0], 512); // F × num_shared_experts
    assert_int_equal(moe.params[DSV3_P_FF_W1].numel, 0);
    // Every layer's flat buffer holds exactly the layer's parameters, back to back.
    assert_int_equal(dense.numel, dsv3_model_layer_params(&a, 0).dense);
    assert_int_equal(moe.numel,
                     dsv3_model_layer_params(&a, 3).dense + dsv3_model_layer_params(&a, 3).routed);
    dsv3_param_group_destroy(&dense);
    dsv3_param_group_destroy(&moe);
}

static void test_q_lora_slots(void **state) {
    (void)state;
    Dsv3ModelArgs a = debug_args();
    a.q_lora_rank = 32;
    Dsv3ParamGroup g;
    assert_int_equal(dsv3_param_group_create(&g, &a, DSV3_GROUP_LAYER, 1), DSV3_OK);
    assert_int_equal(g.params[DSV3_P_WQ].numel, 0);
    assert_string_equal(g.params[DSV3_P_Q_NORM].fqn, "layers.1.attention.q_norm.weight");
    assert_int_equal(g.params[DSV3_P_WQ_B].shape[1], 32);
    dsv3_param_group_destroy(&g);
}

static void test_initialisation_statistics(void **state) {
    (void)state;
    Dsv3ModelArgs a = debug_args();
    Dsv3ParamGroup emb, layer, head;
    assert_int_equal(dsv3_param_group_create(&emb, &a, DSV3_GROUP_EMBEDDING, -1), DSV3_OK);
    assert_int_equal(dsv3_param_group_create(&layer, &a, DSV3_GROUP_LAYER, 3), DSV3_OK);
    assert_int_equal(dsv3_param_group_create(&head, &a, DSV3_GROUP_HEAD, -1), DSV3_OK);
    dsv3_param_group_init(&emb, &a, 7);
    dsv3_param_group_init(&layer, &a, 7);
    dsv3_param_group_init(&head, &a, 7);
    double mean, std, max_abs;
    moments(&emb.params[DSV3_P_TOK_EMBEDDINGS], &mean, &std, &max_abs);
    assert_true(fabs(mean) < 0.01 && fabs(std - 1.0) < 0.01); // normal(0, 1)
    moments(&layer.params[DSV3_P_WQ], &mean, &std, &max_abs);
    assert_true(fabs(std - 0.02) < 0.0005);
    double depth = 0.02 / sqrt(2.0 * 4); // layer 3
    moments(&layer.params[DSV3_P_WO], &mean, &std, &max_abs);
    assert_true(fabs(std - depth) < 0.0005);
    moments(&layer.params[DSV3_P_EXPERTS_W2], &mean, &std, &max_abs);
    assert_true(fabs(std - depth) < 0.0005);
    moments(&layer.params[DSV3_P_EXPERTS_W1], &mean, &std, &max_abs);
    assert_true(fabs(std - 0.02) < 0.0005);
    moments(&layer.params[DSV3_P_KV_NORM], &mean, &std, &max_abs);
    assert_true(mean == 1.0 && std == 0.0);
    double out_std = 1.0 / sqrt(256.0);
    moments(&head.params[DSV3_P_OUTPUT], &mean, &std, &max_abs);
    assert_true(max_abs <= 3.0 * out_std + 1e-7);       // cut at ±3σ
    assert_true(std < out_std && std > 0.95 * out_std); // a truncated normal's std
    dsv3_param_group_destroy(&emb);
    dsv3_param_group_destroy(&layer);
    dsv3_param_group_destroy(&head);
}

static void test_initialisation_is_a_function_of_seed(void **state) {
    (void)state;
    Dsv3ModelArgs a = debug_args();
    Dsv3ParamGroup x, y, z;
    assert_int_equal(dsv3_param_group_create(&x, &a, DSV3_GROUP_LAYER, 2), DSV3_OK);
    assert_int_equal(dsv3_param_group_create(&y, &a, DSV3_GROUP_LAYER, 2), DSV3_OK);
    assert_int_equal(dsv3_param_group_create(&z, &a, DSV3_GROUP_LAYER, 2), DSV3_OK);
    dsv3_param_group_init(&x, &a, 1);
    dsv3_param_group_init(&y, &a, 1);
    dsv3_param_group_init(&z, &a, 2);
    assert_memory_equal(x.data, y.data, (size_t)x.numel * sizeof(float));
    assert_memory_not_equal(x.data, z.data, (size_t)x.numel * sizeof(float));
    // Different tensors of the same shape get different values.
    assert_memory_not_equal(x.params[DSV3_P_EXPERTS_W1].data, x.params[DSV3_P_EXPERTS_W3].data,
                            (size_t)x.params[DSV3_P_EXPERTS_W1].numel * sizeof(float));
    dsv3_param_group_destroy(&x);
    dsv3_param_group_destroy(&y);
    dsv3_param_group_destroy(&z);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer_slots_follow_torchtitan),
        cmocka_unit_test(test_q_lora_slots),
        cmocka_unit_test(test_initialisation_statistics),
        cmocka_unit_test(test_initialisation_is_a_function_of_seed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
