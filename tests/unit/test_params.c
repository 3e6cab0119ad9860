// params: the parameter table against an independent statement of torchtitan's module tree,
// initialisation and DeepSeek-V3 TP plan; shard boxes for several TP × FSDP (and EP) degrees
// against an independent computation (torch.chunk's cut, FSDP2's padded Shard(0)), covering
// every tensor exactly once; initialisation as a pure function of (seed, FQN, index) — norms
// ones, embeddings N(0, 1), most weights trunc-normal with std 0.02, depth-scaled std for
// wo/w2/w3/router/expert w2,w3, the output head trunc-normal at ±3σ.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/model/params.h"

static Dsv3ModelArgs flavor(const char *name) {
    Dsv3ModelArgs a;
    assert_int_equal(dsv3_model_args_flavor(name, &a), DSV3_OK);
    return a;
}

// ---- the table, stated independently ----

// What torchtitan's DeepSeek-V3 has, per FQN suffix: the group, the shape in terms of the
// arguments, the TP cut (-1 replicated, else the dim) and whether init is depth-scaled.
typedef struct {
    const char *suffix;
    Dsv3GroupKind group;
    int ndim;
    int64_t shape[3];
    int tp_dim;
    int depth_scaled;
} Expected;

// Fills out[] with the expected tensors of a group of `kind` for layer `layer`; returns how many.
static int expected_tensors(const Dsv3ModelArgs *a, Dsv3GroupKind kind, int64_t layer,
                            Expected *out) {
    int64_t D = a->dim, H = a->n_heads, nope = a->qk_nope_head_dim, R = a->qk_rope_head_dim;
    int64_t Dv = a->v_head_dim, Q = a->q_lora_rank, C = a->kv_lora_rank, E = a->num_experts;
    int64_t F = a->moe_inter_dim, Fs = F * a->num_shared_experts, I = a->inter_dim;
    int moe = layer >= a->n_dense_layers, n = 0;
#define E2(s, d0, d1, tp, depth)                                                                   \
    out[n++] = (Expected) { s, kind, 2, {d0, d1, 0}, tp, depth }
#define E1(s, d0)                                                                                  \
    out[n++] = (Expected) { s, kind, 1, {d0, 0, 0}, -1, 0 }
    switch (kind) {
    case DSV3_GROUP_EMBEDDING: E2("tok_embeddings.weight", a->vocab_size, D, 0, 0); break;
    case DSV3_GROUP_HEAD:
        E1("norm.weight", D);
        E2("output.weight", a->vocab_size, D, 0, 0);
        break;
    case DSV3_GROUP_EXPERTS:
        out[n++] = (Expected){"moe.experts.w1", kind, 3, {E, F, D}, -1, 0};
        out[n++] = (Expected){"moe.experts.w2", kind, 3, {E, D, F}, -1, 1};
        out[n++] = (Expected){"moe.experts.w3", kind, 3, {E, F, D}, -1, 1};
        break;
    case DSV3_GROUP_LAYER:
        E1("attention_norm.weight", D);
        if (Q == 0) {
            E2("attention.wq.weight", H * (nope + R), D, 0, 0);
        } else {
            E2("attention.wq_a.weight", Q, D, -1, 0);
            E1("attention.q_norm.weight", Q);
            E2("attention.wq_b.weight", H * (nope + R), Q, 0, 0);
        }
        E2("attention.wkv_a.weight", C + R, D, -1, 0);
        E1("attention.kv_norm.weight", C);
        E2("attention.wkv_b.weight", H * (nope + Dv), C, 0, 0);
        E2("attention.wo.weight", D, H * Dv, 1, 1);
        E1("ffn_norm.weight", D);
        if (!moe) {
            E2("feed_forward.w1.weight", I, D, 0, 0);
            E2("feed_forward.w2.weight", D, I, 1, 1);
            E2("feed_forward.w3.weight", I, D, 0, 1);
        } else {
            E2("moe.router.gate.weight", E, D, -1, 1);
            if (Fs > 0) {
                E2("moe.shared_experts.w1.weight", Fs, D, 0, 0);
                E2("moe.shared_experts.w2.weight", D, Fs, 1, 1);
                E2("moe.shared_experts.w3.weight", Fs, D, 0, 1);
            }
        }
        break;
    }
#undef E1
#undef E2
    return n;
}

static const Dsv3Param *find_suffix(const Dsv3ParamGroup *g, const char *suffix) {
    for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
        const Dsv3Param *p = &g->params[s];
        size_t lp = strlen(p->fqn), ls = strlen(suffix);
        if (p->numel && lp >= ls && strcmp(p->fqn + lp - ls, suffix) == 0) return p;
    }
    return NULL;
}

static int tp_dim_of(Dsv3TpPlacement tp) {
    return tp == DSV3_TP_REPLICATE ? -1 : tp == DSV3_TP_ROWWISE ? 1 : 0;
}

// Every group of the model has exactly the expected tensors, shapes, TP cuts and inits.
static void check_table(const Dsv3ModelArgs *a) {
    Dsv3StageRange whole = dsv3_stage_range_whole(a);
    int n = dsv3_param_stage_group_count(a, &whole);
    Dsv3ParamGroup *groups = calloc((size_t)n, sizeof *groups);
    assert_int_equal(dsv3_param_stage_groups(a, &whole, &dsv3_shard_none, groups), DSV3_OK);
    int64_t total = 0;
    for (int g = 0; g < n; g++) {
        Expected want[DSV3_PARAM_SLOT_COUNT];
        int count = expected_tensors(a, groups[g].kind, groups[g].layer_id, want), present = 0;
        for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++)
            present += groups[g].params[s].numel > 0;
        assert_int_equal(present, count);
        for (int i = 0; i < count; i++) {
            const Dsv3Param *p = find_suffix(&groups[g], want[i].suffix);
            assert_non_null(p);
            if (groups[g].layer_id >= 0) assert_int_equal(strncmp(p->fqn, "layers.", 7), 0);
            assert_int_equal(p->ndim, want[i].ndim);
            for (int d = 0; d < p->ndim; d++)
                assert_int_equal(p->shape[d], want[i].shape[d]);
            assert_int_equal(tp_dim_of(p->tp), want[i].tp_dim);
            int depth = p->init == DSV3_INIT_TRUNC_DEPTH;
            assert_int_equal(depth, want[i].depth_scaled);
            total += p->numel;
        }
        assert_int_equal(groups[g].shard_numel, groups[g].numel); // unsharded: no padding
    }
    Dsv3ParamCounts counts;
    dsv3_model_param_counts(a, &counts);
    assert_int_equal(total, counts.total);
    free(groups);
}

static void test_table_follows_torchtitan(void **state) {
    (void)state;
    const char *names[] = {"debugmodel", "16B", "236B", "671B"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        Dsv3ModelArgs a = flavor(names[i]);
        check_table(&a);
        a.q_lora_rank = a.q_lora_rank ? 0 : 32; // the other attention variant
        a.num_shared_experts = a.num_shared_experts ? 0 : 1;
        check_table(&a);
    }
}

static void test_fqns(void **state) {
    (void)state;
    Dsv3ModelArgs a = flavor("debugmodel");
    Dsv3ParamGroup dense, moe, experts, head;
    assert_int_equal(dsv3_param_group_layout(&dense, &a, DSV3_GROUP_LAYER, 0, &dsv3_shard_none),
                     DSV3_OK);
    assert_int_equal(dsv3_param_group_layout(&moe, &a, DSV3_GROUP_LAYER, 3, &dsv3_shard_none),
                     DSV3_OK);
    assert_int_equal(dsv3_param_group_layout(&experts, &a, DSV3_GROUP_EXPERTS, 3, &dsv3_shard_none),
                     DSV3_OK);
    assert_int_equal(dsv3_param_group_layout(&head, &a, DSV3_GROUP_HEAD, -1, &dsv3_shard_none),
                     DSV3_OK);
    assert_string_equal(dense.params[DSV3_P_WQ].fqn, "layers.0.attention.wq.weight");
    assert_string_equal(dense.params[DSV3_P_FF_W2].fqn, "layers.0.feed_forward.w2.weight");
    assert_string_equal(experts.params[DSV3_P_EXPERTS_W2].fqn, "layers.3.moe.experts.w2");
    assert_int_equal(moe.params[DSV3_P_EXPERTS_W2].numel, 0); // a group of their own
    assert_string_equal(head.params[DSV3_P_OUTPUT].fqn, "output.weight");
    // The layer and experts groups together hold the layer's parameters, back to back.
    assert_int_equal(dense.numel, dsv3_model_layer_params(&a, 0).dense);
    assert_int_equal(moe.numel, dsv3_model_layer_params(&a, 3).dense);
    assert_int_equal(experts.numel, dsv3_model_layer_params(&a, 3).routed);
    // There is no experts group of a dense layer.
    Dsv3ParamGroup none;
    assert_int_equal(dsv3_param_group_layout(&none, &a, DSV3_GROUP_EXPERTS, 0, &dsv3_shard_none),
                     DSV3_ERR_USAGE);
    dsv3_error_clear();
}

// ---- shards ----

// torch.chunk: chunk k of `parts` of n has start min(k·c, n) and length min(c, n − start),
// c = ceil(n / parts). Written out independently of params.c.
static void chunk(int64_t n, int64_t parts, int64_t k, int64_t *start, int64_t *len) {
    int64_t c = (n + parts - 1) / parts;
    *start = k * c < n ? k * c : n;
    *len = n - *start < c ? n - *start : c;
}

// For every rank of tp × fsdp (× ep for experts groups): the box matches the independent
// computation, the boxes of all ranks cover every element of the tensor exactly once (once per
// tp rank for tensors tp does not cut), and the flat shards of one FSDP group are equally long.
static void check_shards(const Dsv3ModelArgs *a, Dsv3GroupKind kind, int64_t layer, int64_t tp,
                         int64_t fsdp, int64_t ep) {
    Dsv3ParamGroup ref;
    assert_int_equal(dsv3_param_group_layout(&ref, a, kind, layer, &dsv3_shard_none), DSV3_OK);
    for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
        const Dsv3Param *whole = &ref.params[s];
        if (!whole->numel) continue;
        uint8_t *hits = calloc((size_t)whole->numel, 1);
        for (int64_t e = 0; e < ep; e++)
            for (int64_t t = 0; t < tp; t++) {
                int64_t shard_numel = -1; // of this FSDP group
                for (int64_t f = 0; f < fsdp; f++) {
                    Dsv3ShardSpec spec = {tp, t, fsdp, f, ep, e};
                    Dsv3ParamGroup g;
                    assert_int_equal(dsv3_param_group_layout(&g, a, kind, layer, &spec), DSV3_OK);
                    if (shard_numel < 0) shard_numel = g.shard_numel;
                    assert_int_equal(g.shard_numel, shard_numel);
                    const Dsv3Param *p = &g.params[s];
                    // The piece: ep cuts the experts of an experts group, else tp cuts its dim.
                    int64_t start[3] = {0}, len[3] = {p->shape[0], p->shape[1], p->shape[2]};
                    int dim = kind == DSV3_GROUP_EXPERTS && ep > 1 ? 0 : tp_dim_of(p->tp);
                    if (kind == DSV3_GROUP_EXPERTS && ep > 1)
                        chunk(p->shape[0], ep, e, &start[0], &len[0]);
                    else if (dim >= 0)
                        chunk(p->shape[dim], tp, t, &start[dim], &len[dim]);
                    for (int d = 0; d < p->ndim; d++)
                        assert_int_equal(p->local[d], len[d]);
                    // The FSDP shard: rows of the piece, ceil(rows / fsdp) per rank.
                    int64_t row0, rows;
                    chunk(len[0], fsdp, f, &row0, &rows);
                    assert_int_equal(p->shard_rows, (len[0] + fsdp - 1) / fsdp);
                    assert_int_equal(p->real_rows, rows);
                    assert_int_equal(p->box.start[0], start[0] + row0);
                    assert_int_equal(p->box.count[0], rows);
                    for (int d = 1; d < p->ndim; d++) {
                        assert_int_equal(p->box.start[d], start[d]);
                        assert_int_equal(p->box.count[d], len[d]);
                    }
                    // Mark the box's elements.
                    int64_t c1 = p->ndim > 1 ? p->box.count[1] : 1;
                    int64_t c2 = p->ndim > 2 ? p->box.count[2] : 1;
                    int64_t s1 = p->ndim > 1 ? p->shape[1] : 1, s2 = p->ndim > 2 ? p->shape[2] : 1;
                    for (int64_t i = 0; i < p->box.count[0]; i++)
                        for (int64_t j = 0; j < c1; j++)
                            for (int64_t k = 0; k < c2; k++) {
                                int64_t at = ((p->box.start[0] + i) * s1 +
                                              (p->ndim > 1 ? p->box.start[1] : 0) + j) *
                                                 s2 +
                                             (p->ndim > 2 ? p->box.start[2] : 0) + k;
                                hits[at]++;
                            }
                }
            }
        // Each element once, or once per tp rank when tp does not cut the tensor.
        int64_t copies = tp_dim_of(ref.params[s].tp) < 0 ? tp : 1;
        for (int64_t i = 0; i < whole->numel; i++)
            assert_int_equal(hits[i], copies);
        free(hits);
    }
}

static void test_shard_boxes(void **state) {
    (void)state;
    Dsv3ModelArgs a = flavor("debugmodel");
    a.vocab_size = 1003; // not a multiple of any degree: uneven chunks and padding
    a.q_lora_rank = 16;
    const int64_t tps[] = {1, 2, 4}, fsdps[] = {1, 2, 3, 4};
    for (size_t i = 0; i < sizeof tps / sizeof *tps; i++)
        for (size_t j = 0; j < sizeof fsdps / sizeof *fsdps; j++) {
            check_shards(&a, DSV3_GROUP_EMBEDDING, -1, tps[i], fsdps[j], 1);
            check_shards(&a, DSV3_GROUP_LAYER, 0, tps[i], fsdps[j], 1);
            check_shards(&a, DSV3_GROUP_LAYER, 3, tps[i], fsdps[j], 1);
            check_shards(&a, DSV3_GROUP_EXPERTS, 3, 1, fsdps[j], 1);
            check_shards(&a, DSV3_GROUP_HEAD, -1, tps[i], fsdps[j], 1);
        }
    check_shards(&a, DSV3_GROUP_EXPERTS, 4, 1, 1, 2); // expert servers
    check_shards(&a, DSV3_GROUP_EXPERTS, 4, 1, 1, 8);
}

static void test_padding_and_offsets(void **state) {
    (void)state;
    Dsv3ModelArgs a = flavor("debugmodel");
    a.vocab_size = 1003;
    Dsv3ShardSpec spec = {.tp = 2, .tp_rank = 1, .fsdp = 4, .fsdp_rank = 3, .ep = 1};
    Dsv3ParamGroup g;
    assert_int_equal(dsv3_param_group_layout(&g, &a, DSV3_GROUP_EMBEDDING, -1, &spec), DSV3_OK);
    const Dsv3Param *p = &g.params[DSV3_P_TOK_EMBEDDINGS];
    // Vocabulary rows 502 … 1002 on tp rank 1 (chunks of 502), fsdp shards of 126 rows: rank 3
    // holds rows 378 … 500 of the piece (123 real rows, 3 of padding).
    assert_int_equal(p->local[0], 501);
    assert_int_equal(p->shard_rows, 126);
    assert_int_equal(p->real_rows, 123);
    assert_int_equal(p->box.start[0], 502 + 378);
    assert_int_equal(g.shard_numel, 126 * a.dim);
    spec = (Dsv3ShardSpec){.tp = 1, .fsdp = 4, .fsdp_rank = 3, .ep = 1};
    assert_int_equal(dsv3_param_group_layout(&g, &a, DSV3_GROUP_LAYER, 0, &spec), DSV3_OK);
    int64_t packed = 0;
    for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
        const Dsv3Param *q = &g.params[s];
        if (!q->numel) continue;
        assert_int_equal(q->shard_offset, packed);
        packed += q->shard_rows * (q->local_numel / q->local[0]);
    }
    assert_int_equal(g.shard_numel, packed);
    // An impossible spec is refused.
    spec.fsdp_rank = 4;
    assert_int_equal(dsv3_param_group_layout(&g, &a, DSV3_GROUP_LAYER, 0, &spec), DSV3_ERR_USAGE);
    dsv3_error_clear();
    spec = (Dsv3ShardSpec){.tp = 1, .fsdp = 1, .ep = 3};
    assert_int_equal(dsv3_param_group_layout(&g, &a, DSV3_GROUP_EXPERTS, 3, &spec), DSV3_ERR_USAGE);
    dsv3_error_clear();
}

static void test_stage_groups(void **state) {
    (void)state;
    Dsv3ModelArgs a = flavor("debugmodel"); // 6 layers, the first dense
    Dsv3StageRange first = {.first_layer = 0, .n_layers = 3, .first = 1, .dense = 1, .routed = 1};
    Dsv3StageRange last = {.first_layer = 3, .n_layers = 3, .last = 1, .dense = 1};
    Dsv3StageRange server = {.first_layer = 3, .n_layers = 3, .routed = 1};
    // embedding, layer 0, layer 1 + experts, layer 2 + experts
    assert_int_equal(dsv3_param_stage_group_count(&a, &first), 6);
    assert_int_equal(dsv3_param_stage_group_count(&a, &last), 4); // 3 layers + head
    assert_int_equal(dsv3_param_stage_group_count(&a, &server), 3);
    Dsv3ParamGroup g[6];
    assert_int_equal(dsv3_param_stage_groups(&a, &first, &dsv3_shard_none, g), DSV3_OK);
    const Dsv3GroupKind kinds[] = {DSV3_GROUP_EMBEDDING, DSV3_GROUP_LAYER, DSV3_GROUP_LAYER,
                                   DSV3_GROUP_EXPERTS,   DSV3_GROUP_LAYER, DSV3_GROUP_EXPERTS};
    const int64_t layers[] = {-1, 0, 1, 1, 2, 2};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(g[i].kind, kinds[i]);
        assert_int_equal(g[i].layer_id, layers[i]);
    }
    Dsv3StageRange bad = {.first_layer = 4, .n_layers = 3, .dense = 1};
    assert_int_equal(dsv3_param_stage_groups(&a, &bad, &dsv3_shard_none, g), DSV3_ERR_USAGE);
    dsv3_error_clear();
}

// ---- initialisation ----

// The whole tensor's initial values (a box over everything).
static float *init_whole(const Dsv3Param *p, int64_t layer, const Dsv3ModelArgs *a, uint64_t seed) {
    float *x = malloc((size_t)p->numel * sizeof *x);
    Dsv3Box all = {0};
    for (int d = 0; d < p->ndim; d++)
        all.count[d] = p->shape[d];
    dsv3_param_init_box(p, layer, a, seed, &all, x);
    return x;
}

static void moments(const float *x, int64_t n, double *mean, double *std, double *max_abs) {
    double s = 0, s2 = 0;
    *max_abs = 0;
    for (int64_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
        *max_abs = fmax(*max_abs, fabs(x[i]));
    }
    *mean = s / (double)n;
    *std = sqrt(s2 / (double)n - *mean * *mean);
}

static void test_initialisation_statistics(void **state) {
    (void)state;
    Dsv3ModelArgs a = flavor("debugmodel");
    Dsv3ParamGroup emb, layer, experts, head;
    assert_int_equal(dsv3_param_group_layout(&emb, &a, DSV3_GROUP_EMBEDDING, -1, &dsv3_shard_none),
                     DSV3_OK);
    assert_int_equal(dsv3_param_group_layout(&layer, &a, DSV3_GROUP_LAYER, 3, &dsv3_shard_none),
                     DSV3_OK);
    assert_int_equal(dsv3_param_group_layout(&experts, &a, DSV3_GROUP_EXPERTS, 3, &dsv3_shard_none),
                     DSV3_OK);
    assert_int_equal(dsv3_param_group_layout(&head, &a, DSV3_GROUP_HEAD, -1, &dsv3_shard_none),
                     DSV3_OK);
    struct {
        const Dsv3Param *p;
        int64_t layer;
        double std;
    } cases[] = {
        {&emb.params[DSV3_P_TOK_EMBEDDINGS], -1, 1.0},                 // normal(0, 1)
        {&layer.params[DSV3_P_WQ], 3, 0.02},                           // trunc-normal
        {&layer.params[DSV3_P_WO], 3, 0.02 / sqrt(2.0 * 4)},           // depth-scaled
        {&experts.params[DSV3_P_EXPERTS_W2], 3, 0.02 / sqrt(2.0 * 4)}, // depth-scaled
        {&experts.params[DSV3_P_EXPERTS_W1], 3, 0.02},
    };
    double mean, std, max_abs;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        float *x = init_whole(cases[i].p, cases[i].layer, &a, 7);
        moments(x, cases[i].p->numel, &mean, &std, &max_abs);
        assert_true(fabs(mean) < 0.01 * cases[i].std + 1e-3);
        assert_true(fabs(std - cases[i].std) < 0.025 * cases[i].std);
        free(x);
    }
    float *norm = init_whole(&layer.params[DSV3_P_KV_NORM], 3, &a, 7);
    moments(norm, layer.params[DSV3_P_KV_NORM].numel, &mean, &std, &max_abs);
    assert_true(mean == 1.0 && std == 0.0);
    free(norm);
    double out_std = 1.0 / sqrt(256.0);
    float *out = init_whole(&head.params[DSV3_P_OUTPUT], -1, &a, 7);
    moments(out, head.params[DSV3_P_OUTPUT].numel, &mean, &std, &max_abs);
    assert_true(max_abs <= 3.0 * out_std + 1e-7);       // cut at ±3σ
    assert_true(std < out_std && std > 0.95 * out_std); // a truncated normal's std
    free(out);
}

// Any shard of a tensor initialises to exactly the elements of the whole tensor it covers, and
// a group's flat shard holds them at the shard offsets with zero padding.
static void test_shards_initialise_as_the_whole(void **state) {
    (void)state;
    Dsv3ModelArgs a = flavor("debugmodel");
    a.vocab_size = 1003;
    for (int kind = 0; kind < DSV3_GROUP_KIND_COUNT; kind++) {
        int64_t layer = kind == DSV3_GROUP_LAYER || kind == DSV3_GROUP_EXPERTS ? 4 : -1;
        Dsv3ParamGroup ref;
        assert_int_equal(
            dsv3_param_group_layout(&ref, &a, (Dsv3GroupKind)kind, layer, &dsv3_shard_none),
            DSV3_OK);
        int64_t tp = kind == DSV3_GROUP_EXPERTS ? 1 : 2;
        for (int64_t t = 0; t < tp; t++)
            for (int64_t f = 0; f < 3; f++) {
                Dsv3ShardSpec spec = {tp, t, 3, f, 1, 0};
                Dsv3ParamGroup g;
                assert_int_equal(dsv3_param_group_layout(&g, &a, (Dsv3GroupKind)kind, layer, &spec),
                                 DSV3_OK);
                float *shard = malloc((size_t)g.shard_numel * sizeof *shard);
                dsv3_param_group_init_shard(&g, &a, 11, shard);
                for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
                    const Dsv3Param *p = &g.params[s];
                    if (!p->numel) continue;
                    float *whole = init_whole(&ref.params[s], layer, &a, 11);
                    int64_t c1 = p->ndim > 1 ? p->box.count[1] : 1;
                    int64_t c2 = p->ndim > 2 ? p->box.count[2] : 1;
                    int64_t s1 = p->ndim > 1 ? p->shape[1] : 1, s2 = p->ndim > 2 ? p->shape[2] : 1;
                    const float *mine = shard + p->shard_offset;
                    for (int64_t i = 0; i < p->box.count[0]; i++)
                        for (int64_t j = 0; j < c1; j++)
                            for (int64_t k = 0; k < c2; k++) {
                                int64_t at = ((p->box.start[0] + i) * s1 +
                                              (p->ndim > 1 ? p->box.start[1] : 0) + j) *
                                                 s2 +
                                             (p->ndim > 2 ? p->box.start[2] : 0) + k;
                                assert_true(mine[(i * c1 + j) * c2 + k] == whole[at]);
                            }
                    // Padding rows are zero.
                    int64_t row = p->local_numel / p->local[0];
                    for (int64_t i = p->real_rows * row; i < p->shard_rows * row; i++)
                        assert_true(mine[i] == 0.0f);
                    free(whole);
                }
                free(shard);
            }
    }
}

static void test_initialisation_is_a_function_of_seed(void **state) {
    (void)state;
    Dsv3ModelArgs a = flavor("debugmodel");
    Dsv3ParamGroup g;
    assert_int_equal(dsv3_param_group_layout(&g, &a, DSV3_GROUP_EXPERTS, 2, &dsv3_shard_none),
                     DSV3_OK);
    float *x = malloc((size_t)g.shard_numel * sizeof *x), *y = malloc((size_t)g.shard_numel * 4),
          *z = malloc((size_t)g.shard_numel * 4);
    dsv3_param_group_init_shard(&g, &a, 1, x);
    dsv3_param_group_init_shard(&g, &a, 1, y);
    dsv3_param_group_init_shard(&g, &a, 2, z);
    assert_memory_equal(x, y, (size_t)g.shard_numel * sizeof(float));
    assert_memory_not_equal(x, z, (size_t)g.shard_numel * sizeof(float));
    // Different tensors of the same shape get different values.
    const Dsv3Param *w1 = &g.params[DSV3_P_EXPERTS_W1], *w3 = &g.params[DSV3_P_EXPERTS_W3];
    assert_memory_not_equal(x + w1->shard_offset, x + w3->shard_offset,
                            (size_t)w1->numel * sizeof(float));
    free(x);
    free(y);
    free(z);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_follows_torchtitan),
        cmocka_unit_test(test_fqns),
        cmocka_unit_test(test_shard_boxes),
        cmocka_unit_test(test_padding_and_offsets),
        cmocka_unit_test(test_stage_groups),
        cmocka_unit_test(test_initialisation_statistics),
        cmocka_unit_test(test_shards_initialise_as_the_whole),
        cmocka_unit_test(test_initialisation_is_a_function_of_seed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
