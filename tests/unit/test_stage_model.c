// stage model: the model cut into pipeline stages inside one process gives the one-stage
// model's numbers bit for bit — stage 1's forward into stage 2's, backward back: the loss,
// every parameter gradient, the tokens per expert; several micro-batches in flight (activation
// slots: all forwards, then the backwards in reverse) equal them one after the other; a split
// backward (input gradients, then weight gradients) equals the plain one; a stage checks what it
// is given.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/core/rng.h"
#include "common/model/model.h"

enum { BATCH = 2, SEQ = 16, SEED = 3, EOS = 1, MAX_MICRO = 3 };

static Dsv3ModelArgs small_args(void) {
    Dsv3ModelArgs a;
    assert_int_equal(dsv3_model_args_flavor("debugmodel", &a), DSV3_OK);
    a.vocab_size = 97, a.dim = 32, a.inter_dim = 48, a.moe_inter_dim = 16, a.n_layers = 4;
    a.n_dense_layers = 1, a.n_heads = 2, a.num_experts = 4, a.top_k = 2, a.kv_lora_rank = 16;
    a.qk_nope_head_dim = 8, a.qk_rope_head_dim = 8, a.v_head_dim = 8;
    a.attn_mask_type = DSV3_MASK_BLOCK_CAUSAL;
    return a;
}

static Dsv3ModelOptions options(int64_t slots, Dsv3AcMode ac) {
    return (Dsv3ModelOptions){.batch = BATCH,
                              .seq_len = SEQ,
                              .eos_id = EOS,
                              .ac_mode = ac,
                              .loss_chunk = 7,
                              .slots = slots};
}

// Tokens and labels of micro-batch `i` (EOS here and there: documents in the mask).
static void batch(int64_t i, int32_t *tokens, int32_t *labels, int64_t vocab) {
    uint64_t key = dsv3_rng_key(SEED, "stage model batch");
    for (int64_t n = 0; n < BATCH * SEQ; n++) {
        tokens[n] =
            (int32_t)(dsv3_rng_bits(key, (uint64_t)(2 * (i * BATCH * SEQ + n))) % (uint64_t)vocab);
        labels[n] = (int32_t)(dsv3_rng_bits(key, (uint64_t)(2 * (i * BATCH * SEQ + n) + 1)) %
                              (uint64_t)vocab);
    }
    tokens[5] = EOS;
    labels[3] = DSV3_IGNORE_INDEX;
}

// A stage of layers [first, first + count) with services of its own (a local store seeded alike,
// so its values are the one-stage model's).
static Dsv3Model *stage_create(const Dsv3ModelArgs *a, const Dsv3ModelOptions *opt, int64_t first,
                               int64_t count) {
    Dsv3StageRange range = {.first_layer = first,
                            .n_layers = count,
                            .first = first == 0,
                            .last = first + count == a->n_layers,
                            .dense = 1,
                            .routed = 1};
    Dsv3Model *m = NULL;
    assert_int_equal(dsv3_model_create_local(&m, a, opt, &range, SEED, NULL), DSV3_OK);
    return m;
}

// Every gradient of `part` equals the same-named one of `whole`, bit for bit.
static void expect_same_grads(Dsv3Model *whole, Dsv3Model *part) {
    const Dsv3ParamStore *st = dsv3_model_services(part)->params;
    for (int g = 0; g < st->n_groups; g++)
        for (int k = 0; k < DSV3_PARAM_SLOT_COUNT; k++) {
            const Dsv3Param *p = &st->groups[g].params[k];
            if (!p->numel) continue;
            const Dsv3Param *q = dsv3_model_find(whole, p->fqn);
            assert_non_null(q);
            assert_memory_equal(p->grad, q->grad, (size_t)p->numel * sizeof(float));
            assert_memory_equal(p->data, q->data, (size_t)p->numel * sizeof(float));
        }
}

static void expect_same_counts(Dsv3Model *whole, Dsv3Model *part, const Dsv3ModelArgs *a) {
    for (int64_t l = 0; l < a->n_layers; l++) {
        const int64_t *mine = dsv3_model_tokens_per_expert(part, l);
        if (!mine) continue;
        assert_memory_equal(mine, dsv3_model_tokens_per_expert(whole, l),
                            (size_t)a->num_experts * sizeof *mine);
    }
}

// Two stages (layers 0-1 and 2-3) against the whole model, for `micro` micro-batches: the
// forwards of all micro-batches first (one slot each), then their backwards in reverse, as a
// pipeline schedule runs them; the whole model runs each micro-batch's forward and backward
// together, in the same reverse order (so that gradients add up in the same order).
static void check_split(Dsv3AcMode ac, int64_t micro) {
    Dsv3ModelArgs a = small_args();
    Dsv3ModelOptions one = options(1, ac), many = options(micro, ac);
    Dsv3Model *whole = NULL;
    assert_int_equal(dsv3_model_create_local(&whole, &a, &one, NULL, SEED, NULL), DSV3_OK);
    Dsv3Model *s1 = stage_create(&a, &many, 0, 2), *s2 = stage_create(&a, &many, 2, 2);
    assert_true(micro <= MAX_MICRO);
    int32_t tokens[MAX_MICRO][BATCH * SEQ], labels[MAX_MICRO][BATCH * SEQ];
    const int64_t N = BATCH * SEQ;
    double whole_loss = 0, split_loss = 0;
    int64_t whole_n = 0, split_n = 0;
    const float grad_scale = 1.0f / (float)(N * micro);
    for (int64_t i = 0; i < micro; i++)
        batch(i, tokens[i], labels[i], a.vocab_size);
    for (int64_t i = micro - 1; i >= 0; i--) {
        double loss = 0;
        int64_t n = 0;
        assert_int_equal(dsv3_model_forward(whole, 0, &(Dsv3StageInput){.tokens = tokens[i]}),
                         DSV3_OK);
        Dsv3StageGrad grad = {.labels = labels[i], .grad_scale = grad_scale};
        assert_int_equal(dsv3_model_backward(whole, 0, &grad, &loss, &n), DSV3_OK);
        whole_loss += loss, whole_n += n;
    }
    for (int64_t i = 0; i < micro; i++) {
        assert_int_equal(dsv3_model_forward(s1, i, &(Dsv3StageInput){.tokens = tokens[i]}),
                         DSV3_OK);
        Dsv3StageInput mid = {.x = dsv3_model_output(s1, i), .doc = dsv3_model_doc(s1, i)};
        assert_non_null(mid.doc);
        assert_int_equal(dsv3_model_forward(s2, i, &mid), DSV3_OK);
    }
    for (int64_t i = micro - 1; i >= 0; i--) {
        double loss = 0, none = 0;
        int64_t n = 0, zero = 0;
        Dsv3StageGrad grad = {.labels = labels[i], .grad_scale = grad_scale};
        assert_int_equal(dsv3_model_backward(s2, i, &grad, &loss, &n), DSV3_OK);
        Dsv3StageGrad back = {.dout = dsv3_model_input_grad(s2)};
        assert_int_equal(dsv3_model_backward(s1, i, &back, &none, &zero), DSV3_OK);
        assert_true(none == 0 && zero == 0); // only the last stage has a loss
        split_loss += loss, split_n += n;
    }
    assert_true(split_loss == whole_loss);
    assert_int_equal(split_n, whole_n);
    expect_same_grads(whole, s1);
    expect_same_grads(whole, s2);
    expect_same_counts(whole, s1, &a);
    expect_same_counts(whole, s2, &a);
    assert_null(dsv3_model_input_grad(s1)); // the first stage has no input gradient
    dsv3_model_destroy(s1);
    dsv3_model_destroy(s2);
    dsv3_model_destroy(whole);
}

static void test_two_stages_equal_one(void **state) {
    (void)state;
    check_split(DSV3_AC_NONE, 1);
}

static void test_micro_batches_in_flight(void **state) {
    (void)state;
    check_split(DSV3_AC_NONE, 3);
    check_split(DSV3_AC_OP, 3);
    check_split(DSV3_AC_FULL, 2);
}

// The split backward of ZBVZeroBubble against the plain one, on the whole model (a dense layer
// and MoE layers) with options `opt`: the plain model runs micro-batch 1, then 0, forward and
// backward together; the split one runs both forwards, the input-gradient backwards (1, 0), a
// forward of another micro-batch into a third slot (it overwrites the scratch and the shared
// recomputation buffers), then the weight gradients (1, 0): what they read must outlive both.
// Every gradient adds the same terms in the same order. The memory plan counts the queues.
static void check_split_backward(const Dsv3ModelArgs *a, Dsv3ModelOptions opt) {
    enum { MICRO = 2 };
    Dsv3ModelOptions split = opt;
    opt.slots = 1;
    split.slots = MICRO + 1;
    split.split_backward = 1;
    Dsv3Model *plain = NULL, *zb = NULL;
    assert_int_equal(dsv3_model_create_local(&plain, a, &opt, NULL, SEED, NULL), DSV3_OK);
    assert_int_equal(dsv3_model_create_local(&zb, a, &split, NULL, SEED, NULL), DSV3_OK);
    int32_t tokens[MICRO][BATCH * SEQ], labels[MICRO][BATCH * SEQ];
    const float grad_scale = 1.0f / (float)(BATCH * SEQ * MICRO);
    double plain_loss[MICRO], split_loss[MICRO];
    int64_t n = 0;
    for (int64_t i = 0; i < MICRO; i++)
        batch(i, tokens[i], labels[i], a->vocab_size);
    for (int64_t i = MICRO - 1; i >= 0; i--) {
        assert_int_equal(dsv3_model_forward(plain, 0, &(Dsv3StageInput){.tokens = tokens[i]}),
                         DSV3_OK);
        Dsv3StageGrad grad = {.labels = labels[i], .grad_scale = grad_scale};
        assert_int_equal(dsv3_model_backward(plain, 0, &grad, &plain_loss[i], &n), DSV3_OK);
    }
    for (int64_t i = 0; i < MICRO; i++)
        assert_int_equal(dsv3_model_forward(zb, i, &(Dsv3StageInput){.tokens = tokens[i]}),
                         DSV3_OK);
    for (int64_t i = MICRO - 1; i >= 0; i--) {
        Dsv3StageGrad grad = {.labels = labels[i], .grad_scale = grad_scale};
        assert_int_equal(dsv3_model_backward(zb, i, &grad, &split_loss[i], &n), DSV3_OK);
        assert_true(split_loss[i] == plain_loss[i]);
    }
    assert_int_equal(dsv3_model_forward(zb, MICRO, &(Dsv3StageInput){.tokens = tokens[0]}),
                     DSV3_OK);
    for (int64_t i = MICRO - 1; i >= 0; i--)
        assert_int_equal(dsv3_model_backward_weight(zb, i), DSV3_OK);
    // A drained slot has nothing left to add.
    assert_int_equal(dsv3_model_backward_weight(zb, 0), DSV3_OK);
    expect_same_grads(plain, zb);
    const Dsv3StageRange whole = dsv3_stage_range_whole(a);
    int64_t planned = 0, plain_planned = 0;
    assert_int_equal(dsv3_model_plan_activation_bytes(a, &split, &whole, 1, &planned), DSV3_OK);
    assert_int_equal(planned, dsv3_model_activation_bytes(zb));
    split.split_backward = 0;
    assert_int_equal(dsv3_model_plan_activation_bytes(a, &split, &whole, 1, &plain_planned),
                     DSV3_OK);
    assert_true(planned > plain_planned);
    dsv3_model_destroy(plain);
    dsv3_model_destroy(zb);
}

static void test_split_backward_equals_backward(void **state) {
    (void)state;
    Dsv3ModelArgs a = small_args(), lora = small_args();
    lora.q_lora_rank = 12;
    check_split_backward(&a, options(1, DSV3_AC_NONE));
    check_split_backward(&lora, options(1, DSV3_AC_NONE));
    check_split_backward(&lora, options(1, DSV3_AC_OP));
    check_split_backward(&lora, options(1, DSV3_AC_FULL));
    Dsv3ModelOptions every_other = options(1, DSV3_AC_NONE);
    every_other.ac_every = 2; // full AC for layers 1 and 3: kept and recomputed layers mixed
    check_split_backward(&lora, every_other);
}

// A split backward's slot takes no new backward before its weight gradients are added; an
// evaluation defers nothing.
static void test_split_backward_checks_its_use(void **state) {
    (void)state;
    Dsv3ModelArgs a = small_args();
    Dsv3ModelOptions opt = options(2, DSV3_AC_NONE);
    opt.split_backward = 1;
    Dsv3Model *m = NULL;
    assert_int_equal(dsv3_model_create_local(&m, &a, &opt, NULL, SEED, NULL), DSV3_OK);
    int32_t tokens[BATCH * SEQ], labels[BATCH * SEQ];
    batch(0, tokens, labels, a.vocab_size);
    double loss = 0;
    int64_t n = 0;
    Dsv3StageGrad eval = {.labels = labels, .grad_scale = 0.0f};
    Dsv3StageGrad train = {.labels = labels, .grad_scale = 1.0f / (float)(BATCH * SEQ)};
    for (int pass = 0; pass < 2; pass++) { // evaluations back to back: nothing to drain
        assert_int_equal(dsv3_model_forward(m, 1, &(Dsv3StageInput){.tokens = tokens}), DSV3_OK);
        assert_int_equal(dsv3_model_backward(m, 1, &eval, &loss, &n), DSV3_OK);
    }
    assert_int_equal(dsv3_model_forward(m, 1, &(Dsv3StageInput){.tokens = tokens}), DSV3_OK);
    assert_int_equal(dsv3_model_backward(m, 1, &train, &loss, &n), DSV3_OK);
    // Until its W the slot takes neither a forward (it would overwrite what W reads) nor a
    // backward.
    assert_int_equal(dsv3_model_forward(m, 1, &(Dsv3StageInput){.tokens = tokens}), DSV3_ERR_USAGE);
    assert_non_null(strstr(dsv3_error_message(), "slot 1"));
    assert_non_null(strstr(dsv3_error_message(), "before its next forward"));
    dsv3_error_clear();
    assert_int_equal(dsv3_model_backward(m, 1, &train, &loss, &n), DSV3_ERR_USAGE);
    assert_non_null(strstr(dsv3_error_message(), "slot 1"));
    assert_non_null(strstr(dsv3_error_message(), "before its next backward"));
    dsv3_error_clear();
    assert_int_equal(dsv3_model_backward_weight(m, 2), DSV3_ERR_USAGE); // no such slot
    dsv3_error_clear();
    assert_int_equal(dsv3_model_backward_weight(m, 1), DSV3_OK);
    assert_int_equal(dsv3_model_backward(m, 1, &train, &loss, &n), DSV3_OK);
    assert_int_equal(dsv3_model_backward_weight(m, 1), DSV3_OK);
    dsv3_model_destroy(m);
}

static void test_stage_checks_its_input(void **state) {
    (void)state;
    Dsv3ModelArgs a = small_args();
    Dsv3ModelOptions opt = options(2, DSV3_AC_NONE);
    Dsv3Model *s1 = stage_create(&a, &opt, 0, 2), *s2 = stage_create(&a, &opt, 2, 2);
    int32_t tokens[BATCH * SEQ], labels[BATCH * SEQ];
    batch(0, tokens, labels, a.vocab_size);
    // A later stage needs activations (and document ids, for block-causal masks).
    assert_int_equal(dsv3_model_forward(s2, 0, &(Dsv3StageInput){.tokens = tokens}),
                     DSV3_ERR_USAGE);
    dsv3_error_clear();
    // The first stage needs tokens in the vocabulary, and slots exist.
    assert_int_equal(dsv3_model_forward(s1, 2, &(Dsv3StageInput){.tokens = tokens}),
                     DSV3_ERR_USAGE);
    dsv3_error_clear();
    tokens[7] = (int32_t)a.vocab_size;
    assert_int_equal(dsv3_model_forward(s1, 0, &(Dsv3StageInput){.tokens = tokens}),
                     DSV3_ERR_USAGE);
    assert_non_null(strstr(dsv3_error_message(), "tokens[7]"));
    dsv3_error_clear();
    // Logits exist on the last stage only; a middle stage's backward needs a gradient.
    float logits[1];
    assert_int_equal(dsv3_model_logits(s1, 0, logits), DSV3_ERR_USAGE);
    dsv3_error_clear();
    double loss = 0;
    int64_t n = 0;
    assert_int_equal(dsv3_model_backward(s1, 0, &(Dsv3StageGrad){0}, &loss, &n), DSV3_ERR_USAGE);
    dsv3_error_clear();
    dsv3_model_destroy(s1);
    dsv3_model_destroy(s2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_stages_equal_one),
        cmocka_unit_test(test_micro_batches_in_flight),
        cmocka_unit_test(test_split_backward_equals_backward),
        cmocka_unit_test(test_split_backward_checks_its_use),
        cmocka_unit_test(test_stage_checks_its_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
