// Unit tests for checkpoint folders without MPI: a model's tensors written as one rank's shard
// files, stitched by the virtual-dataset index files, read back exactly (also as a bfloat16
// export); a checkpoint written by the ranks of one layout (tensor × FSDP shards, each writing
// its boxes) read back by the ranks of others; the manifest and its checks (missing, truncated,
// corrupt files); the step-N folder life cycle, listing and keep_latest_k.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/ckpt/dtype.h"
#include "common/ckpt/hf.h"
#include "common/ckpt/hf_names.h"
#include "common/ckpt/manifest.h"
#include "common/ckpt/safetensors.h"
#include "common/ckpt/store.h"
#include "common/ckpt/tensors.h"
#include "common/core/alloc.h"

enum { PATH_CAPACITY = DSV3_CKPT_PATH_CAPACITY };

static char root[PATH_CAPACITY];

static int setup_dir(void **state) {
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/dsv3_ckpt_store_XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(root) ? 0 : -1;
}

static int teardown_dir(void **state) {
    (void)state;
    return dsv3_ckpt_remove_tree(root) == DSV3_OK ? 0 : -1;
}

static void expect_message_contains(const char *needle) {
    const char *msg = dsv3_error_message();
    if (strstr(msg, needle) == NULL) fail_msg("message '%s' does not name '%s'", msg, needle);
    dsv3_error_clear();
}

// A small model's arguments.
static void small_args(Dsv3ModelArgs *a) {
    assert_int_equal(dsv3_model_args_flavor("debugmodel", a), DSV3_OK);
    a->vocab_size = 64, a->dim = 16, a->inter_dim = 32, a->moe_inter_dim = 8, a->n_layers = 2,
    a->n_heads = 2;
    a->num_experts = 4, a->top_k = 2, a->kv_lora_rank = 8, a->qk_nope_head_dim = 4,
    a->qk_rope_head_dim = 4;
    a->v_head_dim = 4;
}

// A small model's tensor list with buffers: values and moments filled from `seed` (or zeroed).
static float *attach(Dsv3CkptTensors *t, Dsv3ModelArgs *a, float seed) {
    small_args(a);
    assert_int_equal(dsv3_ckpt_tensors_of_model(t, a), DSV3_OK);
    int64_t total = 0;
    for (int64_t i = 0; i < t->count; i++)
        total += 3 * t->items[i].numel;
    float *buf = calloc((size_t)total, sizeof *buf), *p = buf;
    assert_non_null(buf);
    for (int64_t i = 0; i < t->count; i++) {
        Dsv3CkptTensor *x = &t->items[i];
        x->data = p, x->exp_avg = p + x->numel, x->exp_avg_sq = p + 2 * x->numel;
        for (int64_t k = 0; seed != 0 && k < 3 * x->numel; k++)
            p[k] = seed * (float)(i + 1) + 1e-3f * (float)k;
        p += 3 * x->numel;
    }
    return buf;
}

// Writes a full checkpoint of `t` into root/step-<step> the way the coordinator commits it.
static void save(const Dsv3CkptTensors *t, int64_t step, int with_optimizer, Dsv3Dtype dtype) {
    char dir[PATH_CAPACITY];
    assert_int_equal(dsv3_ckpt_dir_begin(root, step), DSV3_OK);
    dsv3_ckpt_step_dir(dir, root, step, 1);
    char *desc[2] = {NULL, NULL};
    assert_int_equal(dsv3_ckpt_store_write_shards(dir, 0, t, with_optimizer, dtype, step, &desc[0]),
                     DSV3_OK);
    // A second rank holding the same tensors writes none of them.
    Dsv3CkptTensors idle = {.count = t->count, .items = calloc((size_t)t->count, sizeof *t->items)};
    memcpy(idle.items, t->items, (size_t)t->count * sizeof *t->items);
    for (int64_t i = 0; i < idle.count; i++)
        idle.items[i].writes = 0;
    assert_int_equal(
        dsv3_ckpt_store_write_shards(dir, 1, &idle, with_optimizer, dtype, step, &desc[1]),
        DSV3_OK);
    free(idle.items);
    Dsv3Manifest m = {.step = step};
    snprintf(m.kind, sizeof m.kind, "%s", with_optimizer ? "full" : "model");
    assert_int_equal(dsv3_ckpt_store_index(dir, desc, 2, step, &m), DSV3_OK);
    assert_int_equal(dsv3_manifest_write(dir, &m), DSV3_OK);
    assert_int_equal(dsv3_ckpt_dir_commit(root, step), DSV3_OK);
    dsv3_manifest_free(&m);
    dsv3_free(desc[0]);
    dsv3_free(desc[1]);
}

static void test_round_trip(void **state) {
    (void)state;
    Dsv3CkptTensors a, b;
    Dsv3ModelArgs args;
    float *va = attach(&a, &args, 0.5f), *vb = attach(&b, &args, 0);
    save(&a, 3, 1, DSV3_DTYPE_F32);
    char dir[PATH_CAPACITY];
    dsv3_ckpt_step_dir(dir, root, 3, 0);
    Dsv3Manifest m;
    assert_int_equal(dsv3_manifest_read(dir, &m), DSV3_OK);
    assert_int_equal(m.step, 3);
    assert_string_equal(m.kind, "full");
    assert_true(dsv3_manifest_has(&m, DSV3_CKPT_MODEL_FILE) &&
                dsv3_manifest_has(&m, "shards/model-s00000.h5"));
    assert_false(dsv3_manifest_has(&m, "shards/model-s00001.h5")); // rank 1 owned nothing
    assert_int_equal(dsv3_manifest_verify(dir, &m, 0, 1), DSV3_OK);
    dsv3_manifest_free(&m);
    assert_int_equal(dsv3_ckpt_store_read(dir, &b, 1), DSV3_OK);
    for (int64_t i = 0; i < a.count; i++)
        assert_memory_equal(a.items[i].data, b.items[i].data, // biases have no moments
                            (a.items[i].is_bias ? 1 : 3) * (size_t)a.items[i].numel *
                                sizeof(float));
    // A model-only bfloat16 export reads back as the rounded values; biases stay exact.
    memset(vb, 0, 3 * sizeof(float));
    save(&a, 4, 0, DSV3_DTYPE_BF16);
    dsv3_ckpt_step_dir(dir, root, 4, 0);
    assert_int_equal(dsv3_ckpt_store_read(dir, &b, 0), DSV3_OK);
    for (int64_t i = 0; i < a.count; i++)
        for (int64_t k = 0; k < a.items[i].numel; k++) {
            float want = a.items[i].is_bias
                             ? a.items[i].data[k]
                             : dsv3_dtype_bf16_to_f32(dsv3_dtype_f32_to_bf16(a.items[i].data[k]));
            assert_true(b.items[i].data[k] == want);
        }
    assert_int_equal(dsv3_ckpt_store_read(dir, &b, 1), DSV3_ERR_BACKEND); // no optimizer.h5
    dsv3_error_clear();
    free(va);
    free(vb);
    dsv3_ckpt_tensors_free(&a);
    dsv3_ckpt_tensors_free(&b);
}

static void test_damage_and_mismatch(void **state) {
    (void)state;
    Dsv3CkptTensors a, b;
    Dsv3ModelArgs args;
    float *va = attach(&a, &args, 0.25f);
    save(&a, 7, 1, DSV3_DTYPE_F32);
    char dir[PATH_CAPACITY], shard[PATH_CAPACITY + 32];
    dsv3_ckpt_step_dir(dir, root, 7, 0);
    snprintf(shard, sizeof shard, "%s/shards/model-s00000.h5", dir);
    Dsv3Manifest m;
    // Corrupt: same size, another byte.
    FILE *f = fopen(shard, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 4000, SEEK_SET), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, 4000, SEEK_SET), 0);
    fputc(c ^ 0xff, f);
    fclose(f);
    assert_int_equal(dsv3_manifest_read(dir, &m), DSV3_OK);
    assert_int_equal(dsv3_manifest_verify(dir, &m, 0, 1), DSV3_ERR_IO);
    expect_message_contains("is corrupt: shards/model-s00000.h5");
    assert_int_equal(dsv3_manifest_verify(dir, &m, 1, 2), DSV3_OK); // that file is the other part's
    dsv3_manifest_free(&m);
    // Truncated, then missing.
    assert_int_equal(truncate(shard, 100), 0);
    assert_int_equal(dsv3_manifest_read(dir, &m), DSV3_ERR_IO);
    expect_message_contains("has 100 bytes");
    assert_int_equal(unlink(shard), 0);
    assert_int_equal(dsv3_manifest_read(dir, &m), DSV3_ERR_IO);
    expect_message_contains("shards/model-s00000.h5 is missing");
    // Another model: the first dataset of another shape is named with both shapes.
    save(&a, 8, 1, DSV3_DTYPE_F32);
    dsv3_ckpt_step_dir(dir, root, 8, 0);
    float *vb = attach(&b, &args, 0);
    dsv3_ckpt_tensors_free(&b);
    args.dim = 8;
    assert_int_equal(dsv3_ckpt_tensors_of_model(&b, &args), DSV3_OK);
    float *zeros = calloc(1 << 16, sizeof *zeros);
    for (int64_t i = 0; i < b.count; i++)
        b.items[i].data = b.items[i].exp_avg = b.items[i].exp_avg_sq = zeros;
    assert_int_equal(dsv3_ckpt_store_read(dir, &b, 0), DSV3_ERR_USAGE);
    expect_message_contains(
        "dataset tok_embeddings.weight has shape (64, 16) but the model's tensor is (64, 8)");
    // Fewer layers: the extra datasets are named.
    dsv3_ckpt_tensors_free(&b);
    args.dim = 16, args.n_layers = 1;
    assert_int_equal(dsv3_ckpt_tensors_of_model(&b, &args), DSV3_OK);
    for (int64_t i = 0; i < b.count; i++)
        b.items[i].data = b.items[i].exp_avg = b.items[i].exp_avg_sq = zeros;
    assert_int_equal(dsv3_ckpt_store_read(dir, &b, 0), DSV3_ERR_USAGE);
    expect_message_contains("which this model does not have");
    free(zeros);
    free(va);
    free(vb);
    dsv3_ckpt_tensors_free(&a);
    dsv3_ckpt_tensors_free(&b);
}

// ---- layouts ----

enum { LAYOUT_SEED = 5 };

// The moments a rank's shard holds for value x: functions of the value, so that a moment read
// into the wrong place shows.
static float moment1(float x) { return 2.0f * x + 1.0f; }
static float moment2(float x) { return x * x + 0.5f; }

// One rank of a layout: its groups laid out for `spec`, shards initialised from LAYOUT_SEED
// (moments from the values), and its expert biases (layer l's bias e = l + e / 8).
typedef struct {
    int n;
    Dsv3ParamGroup *groups;
    Dsv3ParamShard *shards;
    float *bias[2];
} Rank;

static void rank_create(Rank *r, const Dsv3ModelArgs *a, const Dsv3ShardSpec *spec, int fill) {
    memset(r, 0, sizeof *r);
    Dsv3StageRange whole = dsv3_stage_range_whole(a);
    r->n = dsv3_param_stage_group_count(a, &whole);
    r->groups = calloc((size_t)r->n, sizeof *r->groups);
    r->shards = calloc((size_t)r->n, sizeof *r->shards);
    assert_int_equal(dsv3_param_stage_groups(a, &whole, spec, r->groups), DSV3_OK);
    for (int g = 0; g < r->n; g++) {
        size_t n = (size_t)r->groups[g].shard_numel;
        Dsv3ParamShard *s = &r->shards[g];
        s->data = calloc(n, sizeof(float)), s->adam_m = calloc(n, sizeof(float));
        s->adam_v = calloc(n, sizeof(float));
        if (!fill) continue;
        dsv3_param_group_init_shard(&r->groups[g], a, LAYOUT_SEED, s->data);
        for (size_t i = 0; i < n; i++)
            s->adam_m[i] = moment1(s->data[i]), s->adam_v[i] = moment2(s->data[i]);
    }
    for (int64_t l = 0; l < a->n_layers; l++) {
        if (l < a->n_dense_layers) continue;
        r->bias[l] = calloc((size_t)a->num_experts, sizeof(float));
        for (int64_t e = 0; fill && e < a->num_experts; e++)
            r->bias[l][e] = (float)l + (float)e / 8.0f;
    }
}

static void rank_destroy(Rank *r) {
    for (int g = 0; g < r->n; g++) {
        free(r->shards[g].data);
        free(r->shards[g].adam_m);
        free(r->shards[g].adam_v);
    }
    free(r->groups);
    free(r->shards);
    free(r->bias[0]);
    free(r->bias[1]);
}

// Every real element of the rank's shards (and its biases) holds what a writer initialised;
// with `moments`, the AdamW moments too.
static void check_rank_values(const Rank *r, const Dsv3ModelArgs *a, int moments) {
    for (int g = 0; g < r->n; g++) {
        const Dsv3ParamGroup *grp = &r->groups[g];
        float *want = calloc((size_t)grp->shard_numel, sizeof *want);
        dsv3_param_group_init_shard(grp, a, LAYOUT_SEED, want);
        for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
            const Dsv3Param *p = &grp->params[s];
            if (!p->numel) continue;
            int64_t real = dsv3_box_numel(&p->box, p->ndim);
            for (int64_t i = p->shard_offset; i < p->shard_offset + real; i++) {
                assert_true(r->shards[g].data[i] == want[i]);
                if (!moments) continue;
                assert_true(r->shards[g].adam_m[i] == moment1(want[i]));
                assert_true(r->shards[g].adam_v[i] == moment2(want[i]));
            }
        }
        free(want);
    }
    for (int64_t l = a->n_dense_layers; l < a->n_layers; l++)
        for (int64_t e = 0; e < a->num_experts; e++)
            assert_true(r->bias[l][e] == (float)l + (float)e / 8.0f);
}

// A rank of layout `spec` reads its boxes from `dir`, a checkpoint (or, with `hf`, an HF
// folder: values only), and finds what the writers initialised.
static void read_as(const char *dir, const Dsv3ModelArgs *a, const Dsv3ShardSpec *spec, int hf) {
    Rank r;
    rank_create(&r, a, spec, 0);
    Dsv3CkptWriters w = {.tp_rank = spec->tp_rank};
    Dsv3CkptTensors x;
    assert_int_equal(dsv3_ckpt_tensors_of_groups(&x, a, r.groups, r.shards, r.n, r.bias, &w),
                     DSV3_OK);
    if (hf)
        assert_int_equal(dsv3_hf_load(dir, a, &x), DSV3_OK);
    else
        assert_int_equal(dsv3_ckpt_store_read(dir, &x, 1), DSV3_OK);
    check_rank_values(&r, a, !hf);
    dsv3_ckpt_tensors_free(&x);
    rank_destroy(&r);
}

// The ranks of a tp × fsdp layout write one checkpoint; the ranks of other layouts read it.
static void test_any_layout_reads_any_layout(void **state) {
    (void)state;
    Dsv3ModelArgs a;
    small_args(&a);
    a.vocab_size = 63; // uneven cuts and padding
    const int64_t tp = 2, fsdp = 3, step = 9;
    char dir[PATH_CAPACITY];
    assert_int_equal(dsv3_ckpt_dir_begin(root, step), DSV3_OK);
    dsv3_ckpt_step_dir(dir, root, step, 1);
    char *desc[6];
    for (int64_t t = 0; t < tp; t++)
        for (int64_t f = 0; f < fsdp; f++) {
            Dsv3ShardSpec spec = {tp, t, fsdp, f, 1, 0};
            Rank r;
            rank_create(&r, &a, &spec, 1);
            Dsv3CkptWriters w = {.shard_writer = 1, .stage_lead = t == 0 && f == 0, .tp_rank = t};
            Dsv3CkptTensors x;
            assert_int_equal(
                dsv3_ckpt_tensors_of_groups(&x, &a, r.groups, r.shards, r.n, r.bias, &w), DSV3_OK);
            assert_int_equal(dsv3_ckpt_store_write_shards(dir, t * fsdp + f, &x, 1, DSV3_DTYPE_F32,
                                                          step, &desc[t * fsdp + f]),
                             DSV3_OK);
            dsv3_ckpt_tensors_free(&x);
            rank_destroy(&r);
        }
    Dsv3Manifest m = {.step = step};
    snprintf(m.kind, sizeof m.kind, "full");
    // The index checks that the boxes cover every tensor exactly once.
    assert_int_equal(dsv3_ckpt_store_index(dir, desc, tp * fsdp, step, &m), DSV3_OK);
    assert_int_equal(dsv3_manifest_write(dir, &m), DSV3_OK);
    assert_int_equal(dsv3_ckpt_dir_commit(root, step), DSV3_OK);
    dsv3_manifest_free(&m);
    for (int i = 0; i < tp * fsdp; i++)
        dsv3_free(desc[i]);
    dsv3_ckpt_step_dir(dir, root, step, 0);
    const Dsv3ShardSpec readers[] = {{1, 0, 1, 0, 1, 0}, {1, 0, 4, 1, 1, 0}, {1, 0, 4, 3, 1, 0},
                                     {4, 3, 1, 0, 1, 0}, {2, 1, 2, 0, 1, 0}, {2, 0, 3, 2, 1, 0},
                                     {4, 1, 2, 1, 1, 0}};
    for (size_t i = 0; i < sizeof readers / sizeof *readers; i++)
        read_as(dir, &a, &readers[i], 0);
}

// An HF folder (model.safetensors with per-expert weights, config.json), read by the ranks of
// several layouts: each gets exactly its boxes.
static void write_hf_folder(const char *dir, const Dsv3ModelArgs *a) {
    Rank whole;
    rank_create(&whole, a, &dsv3_shard_none, 1);
    Dsv3CkptWriters w = {.shard_writer = 1, .stage_lead = 1};
    Dsv3CkptTensors x;
    assert_int_equal(
        dsv3_ckpt_tensors_of_groups(&x, a, whole.groups, whole.shards, whole.n, whole.bias, &w),
        DSV3_OK);
    // One HF tensor per tensor, or per expert of a stacked expert weight.
    int64_t n = 0;
    for (int64_t i = 0; i < x.count; i++)
        n += dsv3_hf_fqn_is_stacked(x.items[i].fqn) ? x.items[i].shape[0] : 1;
    Dsv3SafetensorsSpec *specs = calloc((size_t)n, sizeof *specs);
    char(*names)[DSV3_HF_NAME_CAPACITY] = calloc((size_t)n, sizeof *names);
    int64_t k = 0;
    for (int64_t i = 0; i < x.count; i++) {
        const Dsv3CkptTensor *t = &x.items[i];
        int stacked = dsv3_hf_fqn_is_stacked(t->fqn);
        for (int64_t e = 0; e < (stacked ? t->shape[0] : 1); e++, k++) {
            assert_int_equal(dsv3_hf_name_from_fqn(t->fqn, stacked ? e : -1, names[k]), DSV3_OK);
            specs[k] = (Dsv3SafetensorsSpec){
                .name = names[k], .dtype = DSV3_DTYPE_F32, .ndim = stacked ? t->ndim - 1 : t->ndim};
            for (int d = 0; d < specs[k].ndim; d++)
                specs[k].shape[d] = t->shape[d + (stacked ? 1 : 0)];
        }
    }
    char path[2 * PATH_CAPACITY];
    assert_int_equal(mkdir(dir, 0777), 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    Dsv3SafetensorsWriter *sw = NULL;
    assert_int_equal(dsv3_safetensors_writer_open(&sw, path, specs, (size_t)n), DSV3_OK);
    for (int64_t i = 0; i < x.count; i++) // whole boxes: the data in HF order
        assert_int_equal(dsv3_safetensors_writer_append(sw, x.items[i].data,
                                                        (size_t)x.items[i].numel * sizeof(float)),
                         DSV3_OK);
    assert_int_equal(dsv3_safetensors_writer_close(sw), DSV3_OK);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"num_hidden_layers\": %lld, \"hidden_size\": %lld, \"vocab_size\": %lld}\n",
            (long long)a->n_layers, (long long)a->dim, (long long)a->vocab_size);
    fclose(f);
    free(specs);
    free(names);
    dsv3_ckpt_tensors_free(&x);
    rank_destroy(&whole);
}

static void test_hf_folder_read_in_boxes(void **state) {
    (void)state;
    Dsv3ModelArgs a;
    small_args(&a);
    a.vocab_size = 63;
    char dir[PATH_CAPACITY + 16];
    snprintf(dir, sizeof dir, "%s/hf", root);
    write_hf_folder(dir, &a);
    const Dsv3ShardSpec readers[] = {{1, 0, 1, 0, 1, 0},
                                     {2, 1, 3, 2, 1, 0},
                                     {4, 2, 2, 1, 1, 0},
                                     {1, 0, 4, 3, 1, 0},
                                     {1, 0, 1, 0, 2, 1}};
    for (size_t i = 0; i < sizeof readers / sizeof *readers; i++)
        read_as(dir, &a, &readers[i], 1);
}

// Two ranks writing the same box, or a box left unwritten, fail the index with a clear error.
static void test_index_checks_the_cover(void **state) {
    (void)state;
    Dsv3ModelArgs a;
    small_args(&a);
    char dir[PATH_CAPACITY];
    assert_int_equal(dsv3_ckpt_dir_begin(root, 11), DSV3_OK);
    dsv3_ckpt_step_dir(dir, root, 11, 1);
    Dsv3ShardSpec halves[] = {{1, 0, 2, 0, 1, 0}, {1, 0, 2, 1, 1, 0}};
    char *desc[3];
    for (int i = 0; i < 3; i++) {
        Rank r;
        rank_create(&r, &a, &halves[i == 2 ? 0 : i], 1);
        Dsv3CkptWriters w = {.shard_writer = 1, .stage_lead = i == 0, .tp_rank = 0};
        Dsv3CkptTensors x;
        assert_int_equal(dsv3_ckpt_tensors_of_groups(&x, &a, r.groups, r.shards, r.n, r.bias, &w),
                         DSV3_OK);
        assert_int_equal(dsv3_ckpt_store_write_shards(dir, i, &x, 0, DSV3_DTYPE_F32, 11, &desc[i]),
                         DSV3_OK);
        dsv3_ckpt_tensors_free(&x);
        rank_destroy(&r);
    }
    Dsv3Manifest m = {.step = 11};
    assert_int_equal(dsv3_ckpt_store_index(dir, desc, 3, 11, &m), DSV3_ERR_INTERNAL);
    expect_message_contains("is written twice");
    dsv3_manifest_free(&m);
    m = (Dsv3Manifest){.step = 11};
    assert_int_equal(dsv3_ckpt_store_index(dir, desc, 1, 11, &m), DSV3_ERR_INTERNAL);
    expect_message_contains("the ranks wrote");
    dsv3_manifest_free(&m);
    for (int i = 0; i < 3; i++)
        dsv3_free(desc[i]);
}

static void test_list_and_retain(void **state) {
    (void)state;
    char other[PATH_CAPACITY + 16], dir[PATH_CAPACITY];
    snprintf(other, sizeof other, "%s/list", root);
    Dsv3Manifest m = {.step = 0};
    snprintf(m.kind, sizeof m.kind, "full");
    for (int64_t s = 10; s <= 40; s += 10) { // four empty but valid checkpoints
        assert_int_equal(dsv3_ckpt_dir_begin(other, s), DSV3_OK);
        dsv3_ckpt_step_dir(dir, other, s, 1);
        m.step = s;
        assert_int_equal(dsv3_manifest_write(dir, &m), DSV3_OK);
        assert_int_equal(dsv3_ckpt_dir_commit(other, s), DSV3_OK);
    }
    assert_int_equal(dsv3_ckpt_dir_begin(other, 50), DSV3_OK); // an unfinished save: never listed
    int64_t *steps = NULL, count = 0;
    int *kinds = NULL;
    assert_int_equal(dsv3_ckpt_list(other, &steps, &kinds, &count), DSV3_OK);
    assert_int_equal(count, 4);
    assert_true(steps[0] == 10 && steps[3] == 40 && kinds[3] == DSV3_CKPT_FULL);
    dsv3_free(steps);
    dsv3_free(kinds);
    // keep 1, protecting step 10: 20 and 30 go, 10 and 40 stay.
    assert_int_equal(dsv3_ckpt_retain(other, 1, 10), DSV3_OK);
    assert_int_equal(dsv3_ckpt_list(other, &steps, &kinds, &count), DSV3_OK);
    assert_int_equal(count, 2);
    assert_true(steps[0] == 10 && steps[1] == 40);
    dsv3_free(steps);
    dsv3_free(kinds);
    // A step-N folder without a manifest is listed as invalid, and never removed.
    dsv3_ckpt_step_dir(dir, other, 60, 0);
    assert_int_equal(mkdir(dir, 0777), 0);
    assert_int_equal(dsv3_ckpt_retain(other, 1, -1), DSV3_OK);
    assert_int_equal(dsv3_ckpt_list(other, &steps, &kinds, &count), DSV3_OK);
    assert_int_equal(count, 2);
    assert_true(steps[0] == 40 && steps[1] == 60 && kinds[1] == DSV3_CKPT_INVALID);
    dsv3_free(steps);
    dsv3_free(kinds);
    dsv3_manifest_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_damage_and_mismatch),
        cmocka_unit_test(test_any_layout_reads_any_layout),
        cmocka_unit_test(test_index_checks_the_cover),
        cmocka_unit_test(test_hf_folder_read_in_boxes),
        cmocka_unit_test(test_list_and_retain),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
