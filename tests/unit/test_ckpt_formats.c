// Unit tests for the checkpoint number formats and names: float32 ↔ F16/BF16 rounding, e4m3
// decoding and 128×128 block dequantisation, HF ↔ torchtitan names, and the safetensors
// reader and writer (round trip, and every kind of malformed header).
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/ckpt/dtype.h"
#include "common/ckpt/fp8.h"
#include "common/ckpt/hf_names.h"
#include "common/ckpt/safetensors.h"
#include "common/core/alloc.h"

static void expect_message_contains(const char *needle) {
    const char *msg = dsv3_error_message();
    if (strstr(msg, needle) == NULL) fail_msg("message '%s' does not name '%s'", msg, needle);
    dsv3_error_clear();
}

static void test_bf16_f16_rounding(void **state) {
    (void)state;
    assert_int_equal(dsv3_dtype_f32_to_bf16(1.0f), 0x3f80);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0); 1 + 3·2^-8 rounds up.
    assert_int_equal(dsv3_dtype_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
    assert_int_equal(dsv3_dtype_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
    assert_true(isnan(dsv3_dtype_bf16_to_f32(dsv3_dtype_f32_to_bf16(NAN))));
    assert_int_equal(dsv3_dtype_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(dsv3_dtype_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(dsv3_dtype_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(dsv3_dtype_f32_to_f16(65520.0f), 0x7c00); // rounds to infinity
    assert_int_equal(dsv3_dtype_f32_to_f16(0x1p-24f), 0x0001); // smallest subnormal
    assert_int_equal(dsv3_dtype_f32_to_f16(0x1p-25f), 0x0000); // halfway: ties to even (0)
    assert_int_equal(dsv3_dtype_f32_to_f16(0x1p-14f), 0x0400); // smallest normal
    // Every 16-bit pattern that is a number survives f16 → f32 → f16 and bf16 → f32 → bf16.
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = dsv3_dtype_f16_to_f32((uint16_t)h);
        if (!isnan(f)) assert_int_equal(dsv3_dtype_f32_to_f16(f), h);
        float b = dsv3_dtype_bf16_to_f32((uint16_t)h);
        if (!isnan(b)) assert_int_equal(dsv3_dtype_f32_to_bf16(b), h);
    }
}

static void test_e4m3(void **state) {
    (void)state;
    assert_true(dsv3_dtype_e4m3_to_f32(0x00) == 0.0f);
    assert_true(dsv3_dtype_e4m3_to_f32(0x38) == 1.0f);   // exponent 7 = bias
    assert_true(dsv3_dtype_e4m3_to_f32(0x7e) == 448.0f); // largest finite
    assert_true(dsv3_dtype_e4m3_to_f32(0xfe) == -448.0f);
    assert_true(dsv3_dtype_e4m3_to_f32(0x01) == 0x1p-9f); // smallest subnormal
    assert_true(dsv3_dtype_e4m3_to_f32(0x08) == 0x1p-6f); // smallest normal
    assert_true(isnan(dsv3_dtype_e4m3_to_f32(0x7f)) && isnan(dsv3_dtype_e4m3_to_f32(0xff)));
    // Block dequantisation: a 130 × 3 weight has 2 × 1 scale blocks.
    enum { M = 130, N = 3 };
    uint8_t q[M * N];
    float out[M * N], scale[2] = {2.0f, -0.5f};
    for (int i = 0; i < M * N; i++)
        q[i] = 0x38; // 1.0
    dsv3_fp8_dequantize_rows(out, q, scale, 0, M, N);
    assert_true(out[0] == 2.0f && out[127 * N + 2] == 2.0f && out[128 * N] == -0.5f &&
                out[M * N - 1] == -0.5f);
    dsv3_fp8_dequantize_rows(out, q + 128 * N, scale, 128, 2, N); // a row range further down
    assert_true(out[0] == -0.5f);
    assert_int_equal(dsv3_fp8_check_scale_shape("w", M, N, 2, 1), DSV3_OK);
    assert_int_equal(dsv3_fp8_check_scale_shape("layers.0.w", M, N, 1, 1), DSV3_ERR_USAGE);
    expect_message_contains("(2, 1)");
}

static void test_hf_names(void **state) {
    (void)state;
    Dsv3HfName n;
    dsv3_hf_name_parse("model.layers.12.mlp.experts.63.down_proj.weight", &n);
    assert_int_equal(n.kind, DSV3_HF_TENSOR);
    assert_string_equal(n.fqn, "layers.12.moe.experts.w2");
    assert_int_equal(n.layer, 12);
    assert_int_equal(n.expert, 63);
    dsv3_hf_name_parse("model.layers.3.mlp.gate.e_score_correction_bias", &n);
    assert_string_equal(n.fqn, "layers.3.moe.expert_bias");
    assert_int_equal(n.expert, -1);
    dsv3_hf_name_parse("model.layers.3.mlp.gate.weight", &n);
    assert_string_equal(n.fqn, "layers.3.moe.router.gate.weight");
    dsv3_hf_name_parse("model.layers.0.mlp.gate_proj.weight", &n);
    assert_string_equal(n.fqn, "layers.0.feed_forward.w1.weight");
    dsv3_hf_name_parse("lm_head.weight", &n);
    assert_string_equal(n.fqn, "output.weight");
    dsv3_hf_name_parse("model.layers.1.self_attn.q_b_proj.weight_scale_inv", &n);
    assert_int_equal(n.kind, DSV3_HF_SCALE);
    assert_string_equal(n.weight, "model.layers.1.self_attn.q_b_proj.weight");
    dsv3_hf_name_parse("model.layers.x.self_attn.o_proj.weight", &n);
    assert_int_equal(n.kind, DSV3_HF_UNKNOWN);
    dsv3_hf_name_parse("model.layers.61.enorm.weight", &n);
    assert_int_equal(n.kind, DSV3_HF_UNKNOWN);
    char hf[DSV3_HF_NAME_CAPACITY];
    assert_int_equal(dsv3_hf_name_from_fqn("layers.2.moe.experts.w3", 5, hf), DSV3_OK);
    assert_string_equal(hf, "model.layers.2.mlp.experts.5.up_proj.weight");
    assert_int_equal(dsv3_hf_name_from_fqn("layers.2.attention.wkv_a.weight", -1, hf), DSV3_OK);
    assert_string_equal(hf, "model.layers.2.self_attn.kv_a_proj_with_mqa.weight");
    assert_int_equal(dsv3_hf_name_from_fqn("tok_embeddings.weight", -1, hf), DSV3_OK);
    assert_string_equal(hf, "model.embed_tokens.weight");
    assert_int_equal(dsv3_hf_name_from_fqn("layers.2.moe.experts.w3", -1, hf), DSV3_ERR_USAGE);
    expect_message_contains("expert index");
    assert_int_equal(dsv3_hf_name_from_fqn("layers.2.moe.nothing", -1, hf), DSV3_ERR_USAGE);
    expect_message_contains("layers.2.moe.nothing");
    assert_true(dsv3_hf_fqn_is_stacked("layers.0.moe.experts.w1"));
    assert_false(dsv3_hf_fqn_is_stacked("layers.0.moe.shared_experts.w1.weight"));
    // Every table entry maps back and forth.
    const char *fqns[] = {"layers.4.attention.wq.weight", "layers.4.attention.q_norm.weight",
                          "layers.4.moe.shared_experts.w2.weight", "layers.4.moe.expert_bias",
                          "norm.weight"};
    for (size_t i = 0; i < sizeof fqns / sizeof *fqns; i++) {
        assert_int_equal(dsv3_hf_name_from_fqn(fqns[i], -1, hf), DSV3_OK);
        dsv3_hf_name_parse(hf, &n);
        assert_string_equal(n.fqn, fqns[i]);
    }
}

// A safetensors file in memory: header text (padded by the caller as wanted) and data bytes.
static uint8_t *make_file(const char *header, size_t data_bytes, size_t *size) {
    size_t h = strlen(header);
    *size = 8 + h + data_bytes;
    uint8_t *buf = calloc(1, *size);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    for (size_t i = 0; i < data_bytes; i++)
        buf[8 + h + i] = (uint8_t)i;
    return buf;
}

static void expect_rejected(const char *header, size_t data_bytes, const char *needle) {
    size_t size = 0;
    uint8_t *buf = make_file(header, data_bytes, &size);
    Dsv3Safetensors *f = NULL;
    size_t before = dsv3_alloc_current_bytes();
    assert_int_equal(dsv3_safetensors_open_memory(&f, buf, size, "bad.safetensors"),
                     DSV3_ERR_USAGE);
    assert_null(f);
    assert_int_equal(dsv3_alloc_current_bytes(), before);
    const char *msg = dsv3_error_message();
    if (!strstr(msg, needle) || !strstr(msg, "bad.safetensors"))
        fail_msg("header %s: message '%s' does not name '%s' and the file", header, msg, needle);
    dsv3_error_clear();
    free(buf);
}

static void test_safetensors_rejects(void **state) {
    (void)state;
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    size_t size = 0;
    uint8_t *buf = make_file(ok, 8, &size);
    Dsv3Safetensors *f = NULL;
    assert_int_equal(dsv3_safetensors_open_memory(&f, buf, size, "ok"), DSV3_OK);
    dsv3_safetensors_close(f);
    // A header length beyond the file, and one above the limit.
    buf[0] = 0xff;
    assert_int_equal(dsv3_safetensors_open_memory(&f, buf, size, "bad.safetensors"),
                     DSV3_ERR_USAGE);
    expect_message_contains("beyond the end");
    buf[0] = 0, buf[7] = 0x10;
    assert_int_equal(dsv3_safetensors_open_memory(&f, buf, size, "bad.safetensors"),
                     DSV3_ERR_USAGE);
    expect_message_contains("100 MB");
    assert_int_equal(dsv3_safetensors_open_memory(&f, buf, 5, "bad.safetensors"), DSV3_ERR_USAGE);
    expect_message_contains("too short");
    free(buf);
    expect_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8,
                    "not valid JSON");
    expect_rejected("[1, 2]", 0, "not an object");
    expect_rejected("{\"a\":{\"dtype\":\"F31\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                    "unknown dtype");
    expect_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                    "span 8");
    expect_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
                    "outside");
    expect_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                    12, "overlaps");
    expect_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                    "belong to no tensor");
    expect_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
                    "belong to no tensor");
    expect_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                    "shape[0]");
    expect_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_"
                    "offsets\":[0,4]}}",
                    4, "more than");
    expect_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8,
                    "begin <= end");
    expect_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets");
    expect_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", 4,
                    "not valid JSON");
    expect_rejected("{\"__metadata__\":[1]}", 0, "__metadata__");
}

static void test_safetensors_round_trip(void **state) {
    (void)state;
    char path[4096];
    const char *base = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/dsv3_safetensors_XXXXXX", base && *base ? base : "/tmp");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    const float a[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    uint16_t b[2] = {dsv3_dtype_f32_to_bf16(0.5f), dsv3_dtype_f32_to_bf16(-3.0f)};
    uint8_t c[3] = {0x38, 0x7e, 0x00};
    Dsv3SafetensorsSpec specs[3] = {{"weights.a", DSV3_DTYPE_F32, 2, {2, 3}},
                                    {"b", DSV3_DTYPE_BF16, 1, {2}},
                                    {"c", DSV3_DTYPE_F8_E4M3, 2, {3, 1}}};
    Dsv3SafetensorsWriter *w = NULL;
    assert_int_equal(dsv3_safetensors_writer_open(&w, path, specs, 3), DSV3_OK);
    assert_int_equal(dsv3_safetensors_writer_append(w, a, 12), DSV3_OK); // in two pieces
    assert_int_equal(dsv3_safetensors_writer_append(w, (const char *)a + 12, 12), DSV3_OK);
    assert_int_equal(dsv3_safetensors_writer_append(w, b, sizeof b), DSV3_OK);
    assert_int_equal(dsv3_safetensors_writer_append(w, c, sizeof c), DSV3_OK);
    assert_int_equal(dsv3_safetensors_writer_close(w), DSV3_OK);
    Dsv3Safetensors *f = NULL;
    assert_int_equal(dsv3_safetensors_open(&f, path), DSV3_OK);
    size_t count = 0;
    dsv3_safetensors_tensors(f, &count);
    assert_int_equal(count, 3);
    assert_string_equal(dsv3_safetensors_metadata(f, "format"), "pt");
    const Dsv3SafetensorsTensor *t = dsv3_safetensors_find(f, "weights.a");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[1], 3);
    float got[6];
    assert_int_equal(dsv3_safetensors_read_f32(f, t, got, 0, 6), DSV3_OK);
    assert_memory_equal(got, a, sizeof a);
    assert_int_equal(dsv3_safetensors_read_f32(f, t, got, 4, 2), DSV3_OK);
    assert_true(got[0] == a[4] && got[1] == a[5]);
    assert_int_equal(dsv3_safetensors_read_f32(f, dsv3_safetensors_find(f, "b"), got, 0, 2),
                     DSV3_OK);
    assert_true(got[0] == 0.5f && got[1] == -3.0f);
    assert_int_equal(dsv3_safetensors_read_f32(f, dsv3_safetensors_find(f, "c"), got, 0, 3),
                     DSV3_OK);
    assert_true(got[0] == 1.0f && got[1] == 448.0f && got[2] == 0.0f);
    assert_int_equal(dsv3_safetensors_read_f32(f, t, got, 5, 2), DSV3_ERR_USAGE);
    expect_message_contains("weights.a");
    dsv3_safetensors_close(f);
    // A file cut short: the header says more data than there is.
    assert_int_equal(truncate(path, 40), 0);
    assert_int_equal(dsv3_safetensors_open(&f, path), DSV3_ERR_USAGE);
    expect_message_contains(path);
    unlink(path);
    // The writer refuses more bytes than the header holds, and an unfinished file.
    assert_int_equal(dsv3_safetensors_writer_open(&w, path, specs, 1), DSV3_OK);
    assert_int_equal(dsv3_safetensors_writer_append(w, a, 28), DSV3_ERR_USAGE);
    dsv3_error_clear();
    assert_int_equal(dsv3_safetensors_writer_close(w), DSV3_ERR_USAGE);
    expect_message_contains("0 of 24");
    assert_int_equal(access(path, F_OK), -1); // removed
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_f16_rounding),
        cmocka_unit_test(test_e4m3),
        cmocka_unit_test(test_hf_names),
        cmocka_unit_test(test_safetensors_rejects),
        cmocka_unit_test(test_safetensors_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
