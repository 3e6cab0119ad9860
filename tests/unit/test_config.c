// Unit tests for config: the schema's defaults, TOML loading, command-line overrides, flavor
// resolution (common/model/model_config.h), validation of single keys and of combinations, keys
// not supported yet and the capability each waits for, what the core checks without the model
// and what model_config adds, printing as TOML that reads back bit-exactly, the help text, and
// the shipped configs under conf/. Every test checks that all it allocated was given back, on
// the failure paths too.
#include <float.h>
#include <inttypes.h>
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

#include "common/core/alloc.h"
#include "common/core/config.h"
#include "common/model/model_config.h"

// Two configs (each with 4 KiB per string key) are too big for a comfortable stack frame.
typedef struct {
    Dsv3Config a, b;
    size_t start_bytes;
} Fixture;

static int fixture_setup(void **state) {
    Fixture *f = malloc(sizeof *f);
    if (!f) return -1;
    dsv3_config_init(&f->a);
    dsv3_config_init(&f->b);
    dsv3_error_clear();
    f->start_bytes = dsv3_alloc_current_bytes();
    *state = f;
    return 0;
}

// Whatever a test did, success or failure, every counted byte must have been freed.
static int fixture_teardown(void **state) {
    Fixture *f = *state;
    size_t now = dsv3_alloc_current_bytes();
    int leaked = now != f->start_bytes;
    if (leaked)
        print_error("%zu bytes still counted after the test (started at %zu)\n", now,
                    f->start_bytes);
    free(f);
    dsv3_error_clear();
    return leaked ? -1 : 0;
}

// ---------------------------------------------------------------------------------------------
// Helpers

static Dsv3Err load(Dsv3Config *cfg, const char *text) {
    return dsv3_config_load_text(cfg, text, strlen(text), "x.toml");
}

// Fails the test with the whole error record when `err` is not DSV3_OK.
#define EXPECT_OK(expr)                                                                            \
    do {                                                                                           \
        Dsv3Err expect_ok_err_ = (expr);                                                           \
        if (expect_ok_err_ != DSV3_OK) fail_msg("%s failed:\n%s", #expr, dsv3_error_text());       \
    } while (0)

// Checks that `err` is `code` and that the message contains every needle (NULL-terminated);
// then clears the record.
static void expect_error_at(const char *file, int line, Dsv3Err err, Dsv3Err code, ...) {
    const char *msg = dsv3_error_message();
    if (err != code)
        fail_msg("%s:%d: expected %s, got %s: %s", file, line, dsv3_error_name(code),
                 dsv3_error_name(err), dsv3_error_text());
    va_list ap;
    va_start(ap, code);
    for (const char *needle = va_arg(ap, const char *); needle; needle = va_arg(ap, const char *)) {
        if (!strstr(msg, needle)) {
            va_end(ap);
            fail_msg("%s:%d: message '%s' lacks '%s'", file, line, msg, needle);
        }
    }
    va_end(ap);
    dsv3_error_clear();
}
#define EXPECT_ERROR(expr, code, ...)                                                              \
    expect_error_at(__FILE__, __LINE__, (expr), (code), __VA_ARGS__, NULL)

static const Dsv3ConfigKey *find_key(const char *section, const char *key) {
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++)
        if (strcmp(dsv3_config_keys[i].section, section) == 0 &&
            strcmp(dsv3_config_keys[i].key, key) == 0)
            return &dsv3_config_keys[i];
    fail_msg("no key %s.%s in the schema", section, key);
    return NULL;
}

static const char *origin_of(const Dsv3Config *cfg, const char *section, const char *key) {
    return cfg->origin[find_key(section, key) - dsv3_config_keys];
}

static const void *field_of(const Dsv3Config *cfg, const Dsv3ConfigKey *k) {
    return (const char *)cfg + k->offset;
}

// Compares every field of two configs: integers exactly, floats bit for bit (so -0.0 and 0.0
// differ), strings byte for byte. The origins are bookkeeping and not compared.
static void expect_same_values(const Dsv3Config *x, const Dsv3Config *y) {
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        const void *fx = field_of(x, k), *fy = field_of(y, k);
        switch (k->type) {
        case DSV3_CFG_BOOL:
            if (*(const int *)fx != *(const int *)fy)
                fail_msg("%s.%s: %d != %d", k->section, k->key, *(const int *)fx, *(const int *)fy);
            break;
        case DSV3_CFG_INT:
            if (*(const int64_t *)fx != *(const int64_t *)fy)
                fail_msg("%s.%s: %" PRId64 " != %" PRId64, k->section, k->key, *(const int64_t *)fx,
                         *(const int64_t *)fy);
            break;
        case DSV3_CFG_FLOAT:
            if (memcmp(fx, fy, sizeof(double)) != 0)
                fail_msg("%s.%s: %.17g != %.17g", k->section, k->key, *(const double *)fx,
                         *(const double *)fy);
            break;
        case DSV3_CFG_STR:
            if (strcmp(fx, fy) != 0)
                fail_msg("%s.%s: '%s' != '%s'", k->section, k->key, (const char *)fx,
                         (const char *)fy);
            break;
        }
    }
}

// Prints `from` as TOML, loads that into a fresh `to` (resolving it when asked), checks every
// value came back, and that printing `to` gives the same text.
static void round_trip(const Dsv3Config *from, Dsv3Config *to, int resolve) {
    char *text = NULL, *again = NULL;
    EXPECT_OK(dsv3_config_to_toml(from, &text));
    dsv3_config_init(to);
    Dsv3Err err = dsv3_config_load_text(to, text, strlen(text), "printed.toml");
    if (err == DSV3_OK && resolve) err = dsv3_model_config_resolve(to);
    if (err != DSV3_OK) {
        print_error("printed config:\n%s\n", text);
        dsv3_free(text);
        fail_msg("the printed config does not load back:\n%s", dsv3_error_text());
    }
    expect_same_values(from, to);
    EXPECT_OK(dsv3_config_to_toml(to, &again));
    assert_string_equal(again, text);
    dsv3_free(again);
    dsv3_free(text);
}

// A fresh config file holding `text`, in the build folder when run by meson (so that parallel
// test runs of different builds never meet), else in $TMPDIR or /tmp; *path receives its name.
static void write_temp_file(char *path, size_t capacity, const char *text) {
    const char *dir = getenv("DSV3_BUILD_ROOT");
    if (!dir || !*dir) dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    snprintf(path, capacity, "%s/dsv3_test_config_XXXXXX", dir);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    assert_int_equal(close(fd), 0);
}

#define ARGC(argv) ((int)(sizeof(argv) / sizeof(argv)[0]))

// ---------------------------------------------------------------------------------------------
// The schema and its defaults

static void test_schema_names_each_key_once_in_contiguous_sections(void **state) {
    (void)state;
    const size_t values_end = offsetof(Dsv3Config, origin);
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        assert_non_null(k->help);
        assert_true(strlen(k->help) > 0);
        for (int j = 0; j < i; j++) {
            const Dsv3ConfigKey *o = &dsv3_config_keys[j];
            if (strcmp(k->section, o->section) == 0 && strcmp(k->key, o->key) == 0)
                fail_msg("%s.%s is declared twice", k->section, k->key);
            // The printer opens a section once: its keys must stand together.
            if (j < i - 1 && strcmp(k->section, o->section) == 0 &&
                strcmp(dsv3_config_keys[i - 1].section, k->section) != 0)
                fail_msg("section [%s] is split around %s.%s", k->section, k->section, k->key);
            assert_true(k->offset != o->offset);
        }
        size_t size = k->type == DSV3_CFG_STR    ? DSV3_CONFIG_STRING_CAPACITY
                      : k->type == DSV3_CFG_BOOL ? sizeof(int)
                      : k->type == DSV3_CFG_INT  ? sizeof(int64_t)
                                                 : sizeof(double);
        assert_true(k->offset + size <= values_end);
    }
}

static void test_schema_defaults_satisfy_their_own_bounds_and_choices(void **state) {
    (void)state;
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        if (k->status == DSV3_KEY_FROM_FLAVOR) continue; // filled in by resolve
        if (k->type == DSV3_CFG_INT || k->type == DSV3_CFG_BOOL) {
            if ((double)k->default_int < k->min || (double)k->default_int > k->max)
                fail_msg("%s.%s default %" PRId64 " outside [%g, %g]", k->section, k->key,
                         k->default_int, k->min, k->max);
        } else if (k->type == DSV3_CFG_FLOAT) {
            if (k->default_float < k->min || k->default_float > k->max)
                fail_msg("%s.%s default %g outside [%g, %g]", k->section, k->key, k->default_float,
                         k->min, k->max);
        } else if (k->choices) {
            // Exact match against one '|'-separated choice.
            size_t n = strlen(k->default_str);
            int found = 0;
            for (const char *c = k->choices; *c;) {
                size_t len = strcspn(c, "|");
                if (len == n && strncmp(c, k->default_str, n) == 0) found = 1;
                c += len + (c[len] == '|');
            }
            if (!found)
                fail_msg("%s.%s default '%s' not in %s", k->section, k->key, k->default_str,
                         k->choices);
        }
    }
}

static void test_init_sets_every_key_to_its_default(void **state) {
    Fixture *f = *state;
    memset(&f->a, 0x5a, sizeof f->a);
    dsv3_config_init(&f->a);
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        const void *v = field_of(&f->a, k);
        switch (k->type) {
        case DSV3_CFG_BOOL: assert_int_equal(*(const int *)v, k->default_int); break;
        case DSV3_CFG_INT: assert_int_equal(*(const int64_t *)v, k->default_int); break;
        case DSV3_CFG_FLOAT: assert_memory_equal(v, &k->default_float, sizeof(double)); break;
        case DSV3_CFG_STR: assert_string_equal(v, k->default_str); break;
        }
        assert_string_equal(f->a.origin[i], "");
    }
    // A few values users rely on, spelled out.
    assert_int_equal(f->a.training.steps, 10000);
    assert_int_equal(f->a.training.local_batch_size, 8);
    assert_int_equal(f->a.training.global_batch_size, -1);
    assert_true(f->a.optimizer.lr == 8e-4);
    assert_true(f->a.optimizer.eps == 1e-8);
    assert_string_equal(f->a.job.dump_folder, "./outputs");
    assert_string_equal(f->a.model.flavor, "debugmodel");
    assert_string_equal(f->a.activation_checkpoint.selective_ac_option, "2");
    assert_int_equal(f->a.checkpoint.initial_load_model_only, 1);
    assert_int_equal(f->a.parallelism.data_parallel_shard_degree, -1);
}

// Field-by-field equality of model arguments (the struct has padding, so no memcmp).
static void expect_same_model_args(const Dsv3ModelArgs *x, const Dsv3ModelArgs *y) {
#define SAME(field) assert_true(x->field == y->field)
    SAME(vocab_size);
    SAME(dim);
    SAME(inter_dim);
    SAME(moe_inter_dim);
    SAME(n_layers);
    SAME(n_dense_layers);
    SAME(n_heads);
    SAME(norm_eps);
    SAME(num_experts);
    SAME(num_shared_experts);
    SAME(top_k);
    SAME(score_func);
    SAME(route_norm);
    SAME(route_scale);
    SAME(num_expert_groups);
    SAME(num_limited_groups);
    SAME(load_balance_coeff);
    SAME(q_lora_rank);
    SAME(kv_lora_rank);
    SAME(qk_nope_head_dim);
    SAME(qk_rope_head_dim);
    SAME(v_head_dim);
    SAME(attn_mask_type);
    SAME(original_seq_len);
    SAME(rope_theta);
    SAME(rope_factor);
    SAME(beta_fast);
    SAME(beta_slow);
    SAME(mscale);
#undef SAME
}

static void test_defaults_resolve_to_the_debugmodel_flavor(void **state) {
    Fixture *f = *state;
    EXPECT_OK(dsv3_model_config_resolve(&f->a));
    assert_int_equal(f->a.model.dim, 256);
    assert_int_equal(f->a.model.n_layers, 6);
    assert_int_equal(f->a.model.vocab_size, 2048);
    assert_int_equal(f->a.model.inter_dim, 1024);
    assert_int_equal(f->a.model.moe_inter_dim, 256);
    assert_int_equal(f->a.model.n_heads, 16);
    assert_int_equal(f->a.model.num_experts, 8);
    assert_int_equal(f->a.model.num_shared_experts, 2);
    assert_int_equal(f->a.model.top_k, 3);
    assert_string_equal(f->a.model.score_func, "softmax");
    assert_string_equal(f->a.model.attn_mask_type, "causal");
    Dsv3ModelArgs flavor, resolved;
    EXPECT_OK(dsv3_model_args_flavor("debugmodel", &flavor));
    dsv3_model_args_from_config(&f->a, &resolved);
    expect_same_model_args(&resolved, &flavor);
    // Filling from the flavor is not the user setting a key.
    assert_string_equal(origin_of(&f->a, "model", "dim"), "");
}

static void test_every_flavor_resolves_to_its_model_args(void **state) {
    Fixture *f = *state;
    for (size_t i = 0; dsv3_model_flavor_names[i]; i++) {
        dsv3_config_init(&f->a);
        EXPECT_OK(dsv3_config_override(&f->a, "model.flavor", dsv3_model_flavor_names[i]));
        EXPECT_OK(dsv3_model_config_resolve(&f->a));
        Dsv3ModelArgs flavor, resolved;
        EXPECT_OK(dsv3_model_args_flavor(dsv3_model_flavor_names[i], &flavor));
        dsv3_model_args_from_config(&f->a, &resolved);
        expect_same_model_args(&resolved, &flavor);
    }
    assert_int_equal(f->a.model.dim, 7168); // the last one is 671B
    assert_string_equal(f->a.model.score_func, "sigmoid");
    assert_string_equal(f->a.model.attn_mask_type, "block_causal");
}

// ---------------------------------------------------------------------------------------------
// Loading TOML

static void test_load_sets_every_type_and_records_where(void **state) {
    Fixture *f = *state;
    EXPECT_OK(load(&f->a, "# a job\n"
                          "[job]\n"
                          "print_config = true\n"
                          "description = 'literal \\n stays'\n"
                          "[training]\n"
                          "steps = 1_000\n"
                          "max_norm = 0.5\n"
                          "dataset_path = \"a\\tb\\u00e9\"\n"
                          "[optimizer]\n"
                          "lr = 3e-4\n"
                          "weight_decay = 0  # an integer for a float key is fine\n"));
    assert_int_equal(f->a.job.print_config, 1);
    assert_string_equal(f->a.job.description, "literal \\n stays");
    assert_int_equal(f->a.training.steps, 1000);
    assert_true(f->a.training.max_norm == 0.5);
    assert_string_equal(f->a.training.dataset_path, "a\tb\xc3\xa9");
    assert_true(f->a.optimizer.lr == 3e-4);
    assert_true(f->a.optimizer.weight_decay == 0.0);
    assert_string_equal(origin_of(&f->a, "job", "print_config"), "x.toml:3");
    assert_string_equal(origin_of(&f->a, "training", "steps"), "x.toml:6");
    assert_string_equal(origin_of(&f->a, "optimizer", "weight_decay"), "x.toml:11");
    // Keys the file does not mention keep their defaults and no origin.
    assert_int_equal(f->a.training.seq_len, 2048);
    assert_string_equal(origin_of(&f->a, "training", "seq_len"), "");
}

static void test_load_accepts_dotted_keys_and_inline_tables(void **state) {
    Fixture *f = *state;
    EXPECT_OK(load(&f->a, "training.steps = 7\n"
                          "optimizer = { lr = 0.5, name = \"AdamW\" }\n"
                          "[parallelism]\n"
                          "tensor_parallel_degree = 2\n"));
    assert_int_equal(f->a.training.steps, 7);
    assert_true(f->a.optimizer.lr == 0.5);
    assert_int_equal(f->a.parallelism.tensor_parallel_degree, 2);
}

static void test_second_load_applies_on_top_of_the_first(void **state) {
    Fixture *f = *state;
    EXPECT_OK(load(&f->a, "[training]\nsteps = 5\nseq_len = 64\n"));
    const char *more = "[training]\nsteps = 9\n";
    EXPECT_OK(dsv3_config_load_text(&f->a, more, strlen(more), "y.toml"));
    assert_int_equal(f->a.training.steps, 9);
    assert_int_equal(f->a.training.seq_len, 64);
    assert_string_equal(origin_of(&f->a, "training", "steps"), "y.toml:2");
    assert_string_equal(origin_of(&f->a, "training", "seq_len"), "x.toml:3");
}

static void test_load_reads_only_the_given_length(void **state) {
    Fixture *f = *state;
    const char text[] = "[training]\nsteps = 5\nthis is not TOML";
    EXPECT_OK(dsv3_config_load_text(&f->a, text, strlen("[training]\nsteps = 5\n"), "x.toml"));
    assert_int_equal(f->a.training.steps, 5);
    EXPECT_OK(dsv3_config_load_text(&f->a, "", 0, "empty.toml"));
    assert_int_equal(f->a.training.steps, 5);
}

static void test_unknown_section_suggests_the_closest(void **state) {
    Fixture *f = *state;
    EXPECT_ERROR(load(&f->a, "[job]\n[trainig]\nsteps = 1\n"), DSV3_ERR_CONFIG,
                 "x.toml:2: unknown section [trainig] (did you mean 'training'?)");
    EXPECT_ERROR(load(&f->a, "[optimiser]\nlr = 1\n"), DSV3_ERR_CONFIG,
                 "unknown section [optimiser] (did you mean 'optimizer'?)");
    // Nothing close: no suggestion, but still the way to list the sections.
    dsv3_config_init(&f->a);
    Dsv3Err err = load(&f->a, "[completely_unrelated_name]\nx = 1\n");
    assert_int_equal(err, DSV3_ERR_CONFIG);
    assert_null(strstr(dsv3_error_message(), "did you mean"));
    EXPECT_ERROR(err, DSV3_ERR_CONFIG, "unknown section [completely_unrelated_name]", "--help");
}

static void test_key_above_every_header_names_its_sections(void **state) {
    Fixture *f = *state;
    EXPECT_ERROR(
        load(&f->a, "steps = 10\n[training]\nseq_len = 8\n"), DSV3_ERR_CONFIG,
        "x.toml:1: 'steps' stands outside any section; put it under [training] or [validation]");
    EXPECT_ERROR(load(&f->a, "\nflavor = \"16B\"\n"), DSV3_ERR_CONFIG,
                 "x.toml:2: 'flavor' stands outside any section; put it under [model]");
    EXPECT_ERROR(load(&f->a, "frobnicate = true\n"), DSV3_ERR_CONFIG,
                 "x.toml:1: 'frobnicate' stands outside any section and is no known key", "--help");
}

static void test_long_source_name_keeps_the_line_number(void **state) {
    Fixture *f = *state;
    // Deep cluster paths can be longer than an origin; the line number must survive.
    char source[DSV3_CONFIG_ORIGIN_CAPACITY * 3];
    memset(source, 'p', sizeof source - 1);
    source[sizeof source - 1] = '\0';
    memcpy(source + sizeof source - 1 - strlen("/job.toml"), "/job.toml", strlen("/job.toml"));
    const char *text = "[training]\nsteps = 5\nstepz = 1\n";
    Dsv3Err err = dsv3_config_load_text(&f->a, text, strlen(text), source);
    const char *origin = origin_of(&f->a, "training", "steps");
    assert_true(strlen(origin) < DSV3_CONFIG_ORIGIN_CAPACITY);
    assert_true(strncmp(origin, "...", 3) == 0);
    assert_non_null(strstr(origin, "/job.toml:2"));
    assert_string_equal(origin + strlen(origin) - strlen("/job.toml:2"), "/job.toml:2");
    EXPECT_ERROR(err, DSV3_ERR_CONFIG, "/job.toml:3: unknown key 'stepz' in [training]");
}

static void test_unknown_key_suggests_the_closest_in_its_section(void **state) {
    Fixture *f = *state;
    EXPECT_ERROR(load(&f->a, "[training]\nseq_len = 8\nstep = 5\n"), DSV3_ERR_CONFIG,
                 "x.toml:3: unknown key 'step' in [training] (did you mean 'steps'?)");
    // The suggestion comes from the key's own section, not from another one.
    EXPECT_ERROR(load(&f->a, "[optimizer]\nwarmup_step = 5\n"), DSV3_ERR_CONFIG,
                 "unknown key 'warmup_step' in [optimizer]");
    Dsv3Err err = load(&f->a, "[checkpoint]\nwhatever_this_is = 1\n");
    assert_int_equal(err, DSV3_ERR_CONFIG);
    assert_null(strstr(dsv3_error_message(), "did you mean"));
    EXPECT_ERROR(err, DSV3_ERR_CONFIG, "unknown key 'whatever_this_is' in [checkpoint]", "--help");
    // A sub-table that the schema does not have is an unknown key of the section.
    EXPECT_ERROR(load(&f->a, "[training.extra]\nx = 1\n"), DSV3_ERR_CONFIG,
                 "unknown key 'extra' in [training]");
}

static void test_wrong_type_names_file_line_key_and_both_types(void **state) {
    Fixture *f = *state;
    static const struct {
        const char *text, *message;
    } cases[] = {
        {"# c\n[training]\nsteps = \"10\"\n",
         "x.toml:3: training.steps must be an integer, not string"},
        {"[training]\nsteps = 10.0\n", "x.toml:2: training.steps must be an integer, not float"},
        {"[training]\nsteps = true\n", "training.steps must be an integer, not boolean"},
        {"[training]\nsteps = [10]\n", "training.steps must be an integer, not array"},
        {"[training]\nsteps = {a = 1}\n", "training.steps must be an integer, not table"},
        {"[job]\nprint_config = 1\n",
         "x.toml:2: job.print_config must be a boolean (true or false), not integer"},
        {"[job]\nprint_config = \"true\"\n",
         "job.print_config must be a boolean (true or false), not string"},
        {"[optimizer]\nlr = \"3e-4\"\n", "x.toml:2: optimizer.lr must be a number, not string"},
        {"[optimizer]\nlr = false\n", "optimizer.lr must be a number, not boolean"},
        {"[job]\ndump_folder = 3\n", "x.toml:2: job.dump_folder must be a string, not integer"},
        {"[job]\n\n\ndump_folder = [\"a\"]\n",
         "x.toml:4: job.dump_folder must be a string, not array"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dsv3_config_init(&f->a);
        EXPECT_ERROR(load(&f->a, cases[i].text), DSV3_ERR_CONFIG, cases[i].message);
    }
}

static void test_section_must_be_a_table(void **state) {
    Fixture *f = *state;
    EXPECT_ERROR(load(&f->a, "training = 5\n"), DSV3_ERR_CONFIG, "x.toml:1",
                 "'training' must be a table", "not integer");
    EXPECT_ERROR(load(&f->a, "\ntraining = [1, 2]\n"), DSV3_ERR_CONFIG, "x.toml:2",
                 "'training' must be a table", "not array");
}

static void test_toml_syntax_error_names_the_source(void **state) {
    Fixture *f = *state;
    EXPECT_ERROR(load(&f->a, "[training]\nsteps = \n"), DSV3_ERR_CONFIG, "x.toml:2");
    EXPECT_ERROR(load(&f->a, "[training\nsteps = 1\n"), DSV3_ERR_CONFIG, "x.toml:1");
    EXPECT_ERROR(load(&f->a, "[training]\nsteps = 1\nsteps = 2\n"), DSV3_ERR_CONFIG, "x.toml:3");
}

static void test_string_longer_than_the_field_is_rejected(void **state) {
    Fixture *f = *state;
    enum { PREFIX = 32 };
    static char text[DSV3_CONFIG_STRING_CAPACITY + PREFIX];
    // The longest value that fits: capacity minus the terminating NUL.
    int n = snprintf(text, sizeof text, "[job]\ndescription = \"");
    memset(text + n, 'd', DSV3_CONFIG_STRING_CAPACITY - 1);
    strcpy(text + n + DSV3_CONFIG_STRING_CAPACITY - 1, "\"\n");
    EXPECT_OK(load(&f->a, text));
    assert_int_equal(strlen(f->a.job.description), DSV3_CONFIG_STRING_CAPACITY - 1);
    // One byte more does not fit.
    memset(text + n, 'd', DSV3_CONFIG_STRING_CAPACITY);
    strcpy(text + n + DSV3_CONFIG_STRING_CAPACITY, "\"\n");
    EXPECT_ERROR(load(&f->a, text), DSV3_ERR_CONFIG, "x.toml:2: job.description is 4096 bytes long",
                 "at most 4095");
    char *value = text + n;
    value[DSV3_CONFIG_STRING_CAPACITY] = '\0';
    EXPECT_ERROR(dsv3_config_override(&f->a, "job.description", value), DSV3_ERR_CONFIG,
                 "job.description is 4096 bytes long");
}

static void test_load_file_reads_the_file_and_names_it(void **state) {
    Fixture *f = *state;
    char path[512];
    write_temp_file(path, sizeof path, "[training]\nsteps = 42\n");
    EXPECT_OK(dsv3_config_load_file(&f->a, path));
    assert_int_equal(f->a.training.steps, 42);
    char where[600];
    snprintf(where, sizeof where, "%s:2", path);
    assert_string_equal(origin_of(&f->a, "training", "steps"), where);
    unlink(path);

    write_temp_file(path, sizeof path, "[training]\nsteps = -\n");
    snprintf(where, sizeof where, "%s:2", path);
    EXPECT_ERROR(dsv3_config_load_file(&f->a, path), DSV3_ERR_CONFIG, where);
    unlink(path);

    write_temp_file(path, sizeof path, "");
    EXPECT_OK(dsv3_config_load_file(&f->a, path));
    unlink(path);
}

static void test_load_file_that_cannot_be_read_is_an_io_error(void **state) {
    Fixture *f = *state;
    EXPECT_ERROR(dsv3_config_load_file(&f->a, "no/such/dir/job.toml"), DSV3_ERR_IO,
                 "'no/such/dir/job.toml'", "No such file");
    // A folder opens like a file on Linux but cannot be read as one.
    EXPECT_ERROR(dsv3_config_load_file(&f->a, "."), DSV3_ERR_IO, "'.'");
}

// ---------------------------------------------------------------------------------------------
// Values out of range, bad choices, keys not supported yet

// Loads `text` (which must parse), then expects resolve to fail naming every needle.
static void expect_resolve_fails(Fixture *f, int line, const char *text, const char *n1,
                                 const char *n2) {
    dsv3_config_init(&f->a);
    Dsv3Err err = load(&f->a, text);
    if (err != DSV3_OK) fail_msg("line %d: '%s' does not load: %s", line, text, dsv3_error_text());
    expect_error_at(__FILE__, line, dsv3_model_config_resolve(&f->a), DSV3_ERR_CONFIG, n1, n2,
                    NULL);
}
#define RESOLVE_FAILS(text, n1, n2) expect_resolve_fails(f, __LINE__, (text), (n1), (n2))

static void expect_resolve_ok(Fixture *f, int line, const char *text) {
    dsv3_config_init(&f->a);
    Dsv3Err err = load(&f->a, text);
    if (err == DSV3_OK) err = dsv3_model_config_resolve(&f->a);
    if (err != DSV3_OK)
        fail_msg("line %d: '%s' should be valid: %s", line, text, dsv3_error_text());
}
#define RESOLVE_OK(text) expect_resolve_ok(f, __LINE__, (text))

static void test_out_of_range_values_name_key_value_and_origin(void **state) {
    Fixture *f = *state;
    RESOLVE_FAILS("[training]\nsteps = -1\n", "x.toml:2: training.steps = -1 is out of range",
                  "≥ 1");
    RESOLVE_FAILS("[training]\nsteps = 0\n", "training.steps = 0 is out of range",
                  "Training steps");
    RESOLVE_FAILS("[training]\nlocal_batch_size = 0\n", "training.local_batch_size = 0",
                  "out of range");
    RESOLVE_FAILS("[training]\nseq_len = -5\n", "training.seq_len = -5", "out of range");
    RESOLVE_FAILS("[training]\nglobal_batch_size = -2\n", "training.global_batch_size = -2",
                  "out of range");
    RESOLVE_FAILS("[training]\nglobal_batch_size = 0\n", "x.toml:2: training.global_batch_size = 0",
                  "expected -1 or a positive multiple");
    RESOLVE_FAILS("[training]\nmax_norm = 0\n", "x.toml:2", "training.max_norm must be > 0");
    RESOLVE_FAILS("[optimizer]\nlr = 0.0\n", "x.toml:2: optimizer.lr must be > 0", "not 0");
    RESOLVE_FAILS("[optimizer]\nlr = -1e-4\n", "optimizer.lr = -0.0001 is out of range",
                  "[0, 1000]");
    RESOLVE_FAILS("[optimizer]\nlr = nan\n", "optimizer.lr = nan is out of range", "x.toml:2");
    RESOLVE_FAILS("[optimizer]\nlr = inf\n", "optimizer.lr = inf is out of range", "x.toml:2");
    RESOLVE_FAILS("[optimizer]\nbeta1 = 1.0\n", "optimizer.beta1", "must be < 1");
    RESOLVE_FAILS("[optimizer]\nbeta2 = 1.5\n", "optimizer.beta2 = 1.5 is out of range", "[0, 1]");
    RESOLVE_FAILS("[optimizer]\neps = 0\n", "x.toml:2", "optimizer.eps must be > 0");
    RESOLVE_FAILS("[parallelism]\ndata_parallel_shard_degree = 0\n",
                  "x.toml:2: parallelism.data_parallel_shard_degree must be -1", "≥ 1");
    RESOLVE_FAILS("[parallelism]\ndata_parallel_shard_degree = -3\n",
                  "parallelism.data_parallel_shard_degree = -3 is out of range", "≥ -1");
    RESOLVE_FAILS("[parallelism]\ntensor_parallel_degree = 0\n",
                  "parallelism.tensor_parallel_degree = 0", "out of range");
    RESOLVE_FAILS("[parallelism]\nexpert_tensor_parallel_degree = 2\n",
                  "parallelism.expert_tensor_parallel_degree = 2 is out of range", "[1, 1]");
    RESOLVE_FAILS("[lr_scheduler]\ndecay_ratio = 1.5\n",
                  "lr_scheduler.decay_ratio = 1.5 is out of range", "x.toml:2");
    RESOLVE_FAILS("[lr_scheduler]\ndecay_ratio = -0.5\n", "lr_scheduler.decay_ratio = -0.5",
                  "expected -1");
    RESOLVE_FAILS("[lr_scheduler]\nwarmup_steps = -1\n", "lr_scheduler.warmup_steps = -1",
                  "out of range");
    RESOLVE_FAILS("[checkpoint]\nload_step = -2\n", "checkpoint.load_step = -2", "out of range");
    RESOLVE_FAILS("[model]\ndim = 0\n", "x.toml:2: model.dim = 0 is out of range", "Model width");
    RESOLVE_FAILS("[model]\nnorm_eps = -1e-6\n", "model.norm_eps", "out of range");
    RESOLVE_FAILS("[metrics]\npeak_tflops = -1\n", "metrics.peak_tflops = -1", "out of range");
    // The edges themselves are valid.
    RESOLVE_OK("[training]\nsteps = 1\n[lr_scheduler]\nwarmup_steps = 0\n");
    RESOLVE_OK("[lr_scheduler]\ndecay_ratio = -1.0\n");
    RESOLVE_OK("[lr_scheduler]\ndecay_ratio = 0.0\n");
    RESOLVE_OK("[lr_scheduler]\ndecay_ratio = 1\n");
    RESOLVE_OK("[optimizer]\nbeta1 = 0\nweight_decay = 0\n");
    RESOLVE_OK("[debug]\nseed = 9223372036854775807\n");
}

static void test_bad_choice_lists_the_choices(void **state) {
    Fixture *f = *state;
    RESOLVE_FAILS("[lr_scheduler]\ndecay_type = \"exp\"\n",
                  "x.toml:2: lr_scheduler.decay_type = \"exp\" is not one of: linear|sqrt|cosine",
                  "exp");
    RESOLVE_FAILS("[optimizer]\nname = \"SGD\"\n", "optimizer.name = \"SGD\" is not one of: AdamW",
                  "SGD");
    RESOLVE_FAILS("[activation_checkpoint]\nmode = \"Full\"\n", "activation_checkpoint.mode",
                  "none|selective|full");
    // Choices match whole words only: neither a prefix nor two choices with their separator.
    RESOLVE_FAILS("[lr_scheduler]\ndecay_type = \"lin\"\n", "lr_scheduler.decay_type",
                  "not one of");
    RESOLVE_FAILS("[lr_scheduler]\ndecay_type = \"linear|sqrt\"\n", "lr_scheduler.decay_type",
                  "not one of");
    RESOLVE_FAILS("[lr_scheduler]\ndecay_type = \"\"\n", "lr_scheduler.decay_type = \"\"",
                  "not one of");
    RESOLVE_FAILS("[model]\nscore_func = \"relu\"\n", "model.score_func = \"relu\"",
                  "softmax|sigmoid");
    RESOLVE_OK("[lr_scheduler]\ndecay_type = \"cosine\"\n[checkpoint]\nexport_dtype = "
               "\"bfloat16\"\n");
    RESOLVE_OK("[parallelism]\nexpert_server_launch = \"join\"\n[validation]\ndataset = "
               "\"tokens\"\ndataset_path = \"held_out.bin\"\n");
}

static void test_not_yet_supported_key_keeps_only_its_default(void **state) {
    Fixture *f = *state;
    RESOLVE_FAILS("[training]\nenable_cpu_offload = true\n",
                  "x.toml:2: training.enable_cpu_offload = true is not supported yet: it needs "
                  "CPU offloading, which is not implemented",
                  "(only the default false is accepted)");
    RESOLVE_FAILS("[optimizer]\nimplementation = \"foreach\"\n", "optimizer.implementation",
                  "not supported yet");
    // Writing the default explicitly, as torchtitan's configs do, is fine.
    RESOLVE_OK(
        "[checkpoint]\nasync_mode = \"disabled\"\n[optimizer]\nimplementation = \"fused\"\n");
}

// Keys that no code reads yet, each with the capability it waits for, spelled out.
static void test_not_yet_keys_name_the_capability_they_wait_for(void **state) {
    Fixture *f = *state;
    static const struct {
        const char *text, *message, *default_text;
    } cases[] = {
        {"[parallelism]\nexpert_parallel_comm_backend = \"deepep\"\n",
         "x.toml:2: parallelism.expert_parallel_comm_backend = \"deepep\" is not supported yet: it "
         "needs the DeepEP token dispatch, which is not implemented (only the default "
         "\"standard\" is accepted)",
         "[parallelism]\nexpert_parallel_comm_backend = \"standard\"\n"},
        {"[debug]\ndeterministic = true\n",
         "x.toml:2: debug.deterministic = true is not supported yet: it needs the CUDA backend's "
         "deterministic mode, which is not implemented (only the default false is accepted)",
         "[debug]\ndeterministic = false\n"},
        {"[training]\nmixed_precision_reduce = \"bfloat16\"\n",
         "x.toml:2: training.mixed_precision_reduce = \"bfloat16\" is not supported yet: it needs "
         "bf16 gradient reductions, which is not implemented (only the default \"float32\" is "
         "accepted)",
         "[training]\nmixed_precision_reduce = \"float32\"\n"},
        {"[profiling]\nsave_memory_snapshot_folder = \"snapshots\"\n",
         "x.toml:2: profiling.save_memory_snapshot_folder = \"snapshots\" is not supported yet: it "
         "needs a memory snapshot writer, which is not implemented (only the default "
         "\"memory_snapshot\" is accepted)",
         "[profiling]\nsave_memory_snapshot_folder = \"memory_snapshot\"\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_resolve_fails(f, __LINE__, cases[i].text, cases[i].message, "");
        expect_resolve_ok(f, __LINE__, cases[i].default_text);
    }
    // The check is the core's own: dsv3_config_resolve makes it without the model.
    dsv3_config_init(&f->a);
    EXPECT_OK(dsv3_model_config_resolve(&f->a));
    EXPECT_OK(dsv3_config_override(&f->a, "parallelism.enable_async_tensor_parallel", "true"));
    EXPECT_ERROR(dsv3_config_resolve(&f->a), DSV3_ERR_CONFIG,
                 "command line --parallelism.enable_async_tensor_parallel: "
                 "parallelism.enable_async_tensor_parallel = true is not supported yet");
    // The help says what the key waits for, and why a CPU run needs no deterministic mode.
    char *help = NULL;
    EXPECT_OK(dsv3_config_help(&help));
    assert_non_null(strstr(help,
                           "--debug.deterministic (bool, default false) [not supported yet]\n"
                           "      Deterministic CUDA kernels only (the CPU kernels are always "
                           "deterministic for a given thread count) (it needs the CUDA "
                           "backend's deterministic mode, which is not implemented)\n"));
    dsv3_free(help);
}

static void test_every_not_yet_key_rejects_any_other_value(void **state) {
    Fixture *f = *state;
    int seen = 0;
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        if (k->status != DSV3_KEY_NOT_YET) continue;
        seen++;
        char dotted[256], value[64];
        snprintf(dotted, sizeof dotted, "%s.%s", k->section, k->key);
        switch (k->type) {
        case DSV3_CFG_BOOL:
            snprintf(value, sizeof value, "%s", k->default_int ? "false" : "true");
            break;
        case DSV3_CFG_INT: snprintf(value, sizeof value, "%" PRId64, k->default_int + 1); break;
        case DSV3_CFG_FLOAT: snprintf(value, sizeof value, "%.17g", k->default_float + 1); break;
        case DSV3_CFG_STR:
            // Another valid choice when there are choices, so that only the status can fail.
            // A key whose only choice is its default (mixed_precision_reduce) has none: any
            // other value then, which the status check reports before the choices.
            if (k->choices && strcmp(k->choices, k->default_str) != 0) {
                const char *c = k->choices;
                size_t len = strcspn(c, "|");
                if (strlen(k->default_str) == len && strncmp(c, k->default_str, len) == 0) {
                    c += len + 1;
                    len = strcspn(c, "|");
                }
                snprintf(value, sizeof value, "%.*s", (int)len, c);
            } else {
                snprintf(value, sizeof value, "somewhere/else");
            }
            break;
        }
        dsv3_config_init(&f->a);
        EXPECT_OK(dsv3_config_override(&f->a, dotted, value));
        // The value and the default as the message shows them.
        char shown[sizeof value + 2], fallback[128];
        switch (k->type) {
        case DSV3_CFG_BOOL:
            snprintf(shown, sizeof shown, "%s", value);
            snprintf(fallback, sizeof fallback, "%s", k->default_int ? "true" : "false");
            break;
        case DSV3_CFG_INT:
            snprintf(shown, sizeof shown, "%s", value);
            snprintf(fallback, sizeof fallback, "%" PRId64, k->default_int);
            break;
        case DSV3_CFG_FLOAT:
            snprintf(shown, sizeof shown, "%g", k->default_float + 1);
            snprintf(fallback, sizeof fallback, "%g", k->default_float);
            break;
        case DSV3_CFG_STR:
            snprintf(shown, sizeof shown, "\"%s\"", value);
            snprintf(fallback, sizeof fallback, "\"%s\"", k->default_str);
            break;
        }
        assert_non_null(k->needs);
        assert_true(strlen(k->needs) > 0);
        char expected[2 * sizeof dotted + sizeof shown + sizeof fallback + 256];
        snprintf(expected, sizeof expected,
                 "command line --%s: %s = %s is not supported yet: it needs %s, which is not "
                 "implemented (only the default %s is accepted)",
                 dotted, dotted, shown, k->needs, fallback);
        EXPECT_ERROR(dsv3_model_config_resolve(&f->a), DSV3_ERR_CONFIG, expected);
    }
    assert_true(seen > 0);
    // Only keys that wait for something name a capability.
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++)
        if (dsv3_config_keys[i].status != DSV3_KEY_NOT_YET) assert_null(dsv3_config_keys[i].needs);
}

// ---------------------------------------------------------------------------------------------
// Overrides and the command line

static void test_override_sets_value_and_origin(void **state) {
    Fixture *f = *state;
    EXPECT_OK(dsv3_config_override(&f->a, "training.steps", "20"));
    EXPECT_OK(dsv3_config_override(&f->a, "optimizer.lr", "1e-3"));
    EXPECT_OK(dsv3_config_override(&f->a, "job.description", "two words"));
    EXPECT_OK(dsv3_config_override(&f->a, "job.dry_run", "true"));
    EXPECT_OK(dsv3_config_override(&f->a, "checkpoint.initial_load_model_only", "false"));
    EXPECT_OK(dsv3_config_override(&f->a, "metrics.peak_tflops", "989"));
    assert_int_equal(f->a.training.steps, 20);
    assert_true(f->a.optimizer.lr == 1e-3);
    assert_string_equal(f->a.job.description, "two words");
    assert_int_equal(f->a.job.dry_run, 1);
    assert_int_equal(f->a.checkpoint.initial_load_model_only, 0);
    assert_true(f->a.metrics.peak_tflops == 989.0);
    assert_string_equal(origin_of(&f->a, "training", "steps"), "command line --training.steps");
    // A bare boolean (no value) means true.
    EXPECT_OK(dsv3_config_override(&f->a, "job.print_config", NULL));
    assert_int_equal(f->a.job.print_config, 1);
    // An empty string is a valid string value.
    EXPECT_OK(dsv3_config_override(&f->a, "training.dataset_path", ""));
    assert_string_equal(f->a.training.dataset_path, "");
}

static void test_override_rejects_garbled_values(void **state) {
    Fixture *f = *state;
    static const struct {
        const char *dotted, *value, *message;
    } cases[] = {
        {"training.steps", "20x",
         "command line --training.steps: training.steps must be an integer, not '20x'"},
        {"training.steps", "", "training.steps must be an integer, not ''"},
        {"training.steps", "2.0", "training.steps must be an integer, not '2.0'"},
        {"training.steps", "99999999999999999999", "must be an integer"},
        {"training.steps", NULL, "training.steps needs an integer value"},
        {"optimizer.lr", "fast", "optimizer.lr must be a number, not 'fast'"},
        {"optimizer.lr", "1e-3x", "optimizer.lr must be a number"},
        {"optimizer.lr", "", "optimizer.lr must be a number"},
        {"optimizer.lr", NULL, "optimizer.lr needs a number"},
        {"optimizer.lr", "1e999", "optimizer.lr must be a number"},
        {"job.print_config", "yes", "job.print_config must be true or false, not 'yes'"},
        {"job.print_config", "1", "job.print_config must be true or false"},
        {"job.description", NULL, "job.description needs a value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Dsv3Err err = dsv3_config_override(&f->a, cases[i].dotted, cases[i].value);
        expect_error_at(__FILE__, __LINE__, err, DSV3_ERR_CONFIG, cases[i].message, NULL);
    }
    // Nothing was changed by the failures.
    assert_int_equal(f->a.training.steps, 10000);
    assert_true(f->a.optimizer.lr == 8e-4);
}

static void test_override_rejects_unknown_or_malformed_names(void **state) {
    Fixture *f = *state;
    EXPECT_ERROR(
        dsv3_config_override(&f->a, "training.stepz", "5"), DSV3_ERR_CONFIG,
        "command line --training.stepz: unknown key 'stepz' in [training] (did you mean 'steps'?)");
    EXPECT_ERROR(
        dsv3_config_override(&f->a, "trainig.steps", "5"), DSV3_ERR_CONFIG,
        "command line --trainig.steps: unknown section [trainig] (did you mean 'training'?)");
    EXPECT_ERROR(dsv3_config_override(&f->a, "training", "5"), DSV3_ERR_CONFIG,
                 "an override is --section.key value");
    EXPECT_ERROR(dsv3_config_override(&f->a, "training.", "5"), DSV3_ERR_CONFIG,
                 "an override is --section.key value");
    EXPECT_ERROR(dsv3_config_override(&f->a, ".steps", "5"), DSV3_ERR_CONFIG,
                 "an override is --section.key value");
    EXPECT_ERROR(dsv3_config_override(&f->a, "", "5"), DSV3_ERR_CONFIG,
                 "an override is --section.key value");
    EXPECT_ERROR(dsv3_config_override(&f->a, "training.steps.more", "5"), DSV3_ERR_CONFIG,
                 "unknown key 'steps.more' in [training]");
    static char long_section[300];
    memset(long_section, 's', 250);
    strcpy(long_section + 250, ".key");
    EXPECT_ERROR(dsv3_config_override(&f->a, long_section, "5"), DSV3_ERR_CONFIG,
                 "unknown section");
}

static void test_parse_args_accepts_space_equals_and_bare_forms(void **state) {
    Fixture *f = *state;
    char *argv[] = {"dsv3-coordinator",
                    "--training.steps",
                    "20",
                    "--optimizer.lr=0.001",
                    "--job.print_config",
                    "--job.description",
                    "hello world",
                    "--lr_scheduler.decay_ratio",
                    "-1",
                    "--checkpoint.load_step=-1",
                    "--job.dump_folder=a=b",
                    "--job.dry_run"};
    EXPECT_OK(dsv3_config_parse_args(&f->a, ARGC(argv), argv));
    assert_int_equal(f->a.training.steps, 20);
    assert_true(f->a.optimizer.lr == 0.001);
    assert_int_equal(f->a.job.print_config, 1);
    assert_string_equal(f->a.job.description, "hello world");
    assert_true(f->a.lr_scheduler.decay_ratio == -1.0);
    assert_int_equal(f->a.checkpoint.load_step, -1);
    assert_string_equal(f->a.job.dump_folder, "a=b"); // only the first '=' separates
    assert_int_equal(f->a.job.dry_run, 1);
    assert_string_equal(origin_of(&f->a, "optimizer", "lr"), "command line --optimizer.lr");
    // No arguments at all is valid.
    char *none[] = {"dsv3-coordinator"};
    EXPECT_OK(dsv3_config_parse_args(&f->b, ARGC(none), none));
}

static void test_parse_args_boolean_takes_an_explicit_value(void **state) {
    Fixture *f = *state;
    char *argv[] = {"prog", "--job.print_config", "false", "--job.dry_run=true",
                    "--checkpoint.last_save_model_only=false"};
    EXPECT_OK(dsv3_config_parse_args(&f->a, ARGC(argv), argv));
    assert_int_equal(f->a.job.print_config, 0);
    assert_int_equal(f->a.job.dry_run, 1);
    assert_int_equal(f->a.checkpoint.last_save_model_only, 0);
    // A bare boolean followed by a word that is not a boolean: the word is its (bad) value.
    char *bad[] = {"prog", "--job.print_config", "maybe"};
    EXPECT_ERROR(dsv3_config_parse_args(&f->b, ARGC(bad), bad), DSV3_ERR_CONFIG,
                 "job.print_config must be true or false, not 'maybe'");
}

static void test_parse_args_loads_config_file_first_wherever_it_stands(void **state) {
    Fixture *f = *state;
    char path[512];
    write_temp_file(path, sizeof path, "[training]\nsteps = 5\nseq_len = 64\n");
    char *argv[] = {"prog", "--training.steps", "7", "--job.config_file", path};
    EXPECT_OK(dsv3_config_parse_args(&f->a, ARGC(argv), argv));
    assert_int_equal(f->a.training.steps, 7); // the override wins over the file
    assert_int_equal(f->a.training.seq_len, 64);
    assert_string_equal(f->a.job.config_file, path);
    assert_string_equal(origin_of(&f->a, "training", "steps"), "command line --training.steps");
    assert_string_equal(origin_of(&f->a, "job", "config_file"), "command line --job.config_file");

    char option[600];
    snprintf(option, sizeof option, "--job.config_file=%s", path);
    char *eq_form[] = {"prog", option, "--training.seq_len", "128"};
    EXPECT_OK(dsv3_config_parse_args(&f->b, ARGC(eq_form), eq_form));
    assert_int_equal(f->b.training.steps, 5);
    assert_int_equal(f->b.training.seq_len, 128);
    assert_string_equal(f->b.job.config_file, path);
    unlink(path);
}

static void test_parse_args_reports_config_file_problems(void **state) {
    Fixture *f = *state;
    char *missing[] = {"prog", "--training.steps", "3", "--job.config_file", "no/such/file.toml"};
    EXPECT_ERROR(dsv3_config_parse_args(&f->a, ARGC(missing), missing), DSV3_ERR_IO,
                 "'no/such/file.toml'");
    char *no_value[] = {"prog", "--job.config_file"};
    EXPECT_ERROR(dsv3_config_parse_args(&f->a, ARGC(no_value), no_value), DSV3_ERR_USAGE,
                 "--job.config_file needs a file name");

    char path[512];
    write_temp_file(path, sizeof path, "[training]\n\nstep = 5\n");
    char *bad_file[] = {"prog", "--job.config_file", path};
    char where[600];
    snprintf(where, sizeof where, "%s:3: unknown key 'step' in [training]", path);
    EXPECT_ERROR(dsv3_config_parse_args(&f->a, ARGC(bad_file), bad_file), DSV3_ERR_CONFIG, where);
    unlink(path);
}

static void test_parse_args_rejects_unknown_and_garbled_arguments(void **state) {
    Fixture *f = *state;
    static const struct {
        const char *arg;
        Dsv3Err code;
        const char *message;
    } cases[] = {
        {"steps", DSV3_ERR_USAGE, "unexpected argument 'steps'"},
        {"-s", DSV3_ERR_USAGE, "unexpected argument '-s'"},
        {"--", DSV3_ERR_USAGE, "unexpected argument '--'"},
        {"--training.stepz", DSV3_ERR_CONFIG,
         "unknown key 'stepz' in [training] (did you mean 'steps'?)"},
        {"--trainig.steps", DSV3_ERR_CONFIG,
         "unknown section [trainig] (did you mean 'training'?)"},
        {"--training", DSV3_ERR_CONFIG, "an override is --section.key value"},
        {"--=5", DSV3_ERR_CONFIG, "an override is --section.key value"},
        {"--training.steps=abc", DSV3_ERR_CONFIG, "training.steps must be an integer, not 'abc'"},
        {"--job.print_config=", DSV3_ERR_CONFIG, "job.print_config must be true or false, not ''"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dsv3_config_init(&f->a);
        char *argv[] = {"prog", (char *)cases[i].arg, "5"};
        Dsv3Err err = dsv3_config_parse_args(&f->a, ARGC(argv), argv);
        expect_error_at(__FILE__, __LINE__, err, cases[i].code, cases[i].message, NULL);
    }
    // A value-taking key at the end of the line has no value.
    char *argv[] = {"prog", "--training.steps"};
    EXPECT_ERROR(dsv3_config_parse_args(&f->a, ARGC(argv), argv), DSV3_ERR_CONFIG,
                 "training.steps needs an integer value");
    static char too_long[600];
    memset(too_long, 'x', sizeof too_long - 1);
    too_long[0] = too_long[1] = '-';
    char *long_argv[] = {"prog", too_long, "1"};
    EXPECT_ERROR(dsv3_config_parse_args(&f->a, ARGC(long_argv), long_argv), DSV3_ERR_USAGE,
                 "is too long");
}

// ---------------------------------------------------------------------------------------------
// Flavor resolution

static void test_user_model_key_beats_the_flavor(void **state) {
    Fixture *f = *state;
    EXPECT_OK(load(&f->a, "[model]\ndim = 512\nscore_func = \"sigmoid\"\n"));
    EXPECT_OK(dsv3_config_override(&f->a, "model.n_layers", "4"));
    EXPECT_OK(dsv3_model_config_resolve(&f->a));
    assert_int_equal(f->a.model.dim, 512);
    assert_int_equal(f->a.model.n_layers, 4);
    assert_string_equal(f->a.model.score_func, "sigmoid");
    // Everything else still comes from debugmodel.
    assert_int_equal(f->a.model.vocab_size, 2048);
    assert_int_equal(f->a.model.n_heads, 16);
    assert_int_equal(f->a.model.num_experts, 8);
    Dsv3ModelArgs args;
    dsv3_model_args_from_config(&f->a, &args);
    assert_int_equal(args.dim, 512);
    assert_int_equal(args.score_func, DSV3_SCORE_SIGMOID);

    // A model key equal to the flavor's value is kept as well (and is harmless).
    EXPECT_OK(load(&f->b, "[model]\nflavor = \"16B\"\nn_layers = 27\nmscale = 0.5\n"));
    EXPECT_OK(dsv3_model_config_resolve(&f->b));
    assert_int_equal(f->b.model.n_layers, 27);
    assert_int_equal(f->b.model.dim, 2048);
    assert_int_equal(f->b.model.num_experts, 64);
    assert_true(f->b.model.mscale == 0.5);
}

static void test_unknown_flavor_names_origin_and_known_flavors(void **state) {
    Fixture *f = *state;
    EXPECT_OK(load(&f->a, "[model]\nflavor = \"tiny\"\n"));
    Dsv3Err err = dsv3_model_config_resolve(&f->a);
    assert_int_equal(err, DSV3_ERR_CONFIG);
    const char *msg = dsv3_error_message();
    assert_true(strncmp(msg, "x.toml:2: ", strlen("x.toml:2: ")) == 0);
    assert_non_null(strstr(msg, "'tiny'"));
    for (size_t i = 0; dsv3_model_flavor_names[i]; i++)
        if (!strstr(msg, dsv3_model_flavor_names[i]))
            fail_msg("message '%s' does not list %s", msg, dsv3_model_flavor_names[i]);
    dsv3_error_clear();

    EXPECT_OK(dsv3_config_override(&f->b, "model.flavor", "debug_model"));
    EXPECT_ERROR(dsv3_model_config_resolve(&f->b), DSV3_ERR_CONFIG,
                 "command line --model.flavor: model.flavor = 'debug_model'", "debugmodel, 16B");
}

static void test_inconsistent_model_keys_are_reported(void **state) {
    Fixture *f = *state;
    RESOLVE_FAILS("[model]\nn_dense_layers = 7\n", "model.n_dense_layers", "model.n_layers");
    RESOLVE_FAILS("[model]\ntop_k = 9\n", "model.top_k", "model.num_experts");
    RESOLVE_FAILS("[model]\nqk_rope_head_dim = 63\n", "model.qk_rope_head_dim", "even");
}

// ---------------------------------------------------------------------------------------------
// The core's checks and model_config's

static void test_core_resolve_needs_the_model_keys_filled(void **state) {
    Fixture *f = *state;
    // Alone, the core does not know the flavors: it says who fills the [model] keys.
    EXPECT_ERROR(dsv3_config_resolve(&f->a), DSV3_ERR_USAGE, "model.vocab_size has no value yet",
                 "dsv3_model_config_resolve");
    // Once model_config filled them, the core's checks of plain values run on their own.
    EXPECT_OK(dsv3_model_config_resolve(&f->a));
    assert_int_equal(f->a.model_filled, 1);
    assert_string_equal(origin_of(&f->a, "model", "vocab_size"), "");
    EXPECT_OK(dsv3_config_resolve(&f->a));
    EXPECT_OK(dsv3_config_override(&f->a, "training.steps", "0"));
    EXPECT_ERROR(dsv3_config_resolve(&f->a), DSV3_ERR_CONFIG,
                 "command line --training.steps: training.steps = 0 is out of range");
}

static void test_core_accepts_what_only_model_arguments_refute(void **state) {
    Fixture *f = *state;
    // Every [model] key set by the user (debugmodel's values, printed): no flavor is needed.
    EXPECT_OK(dsv3_model_config_resolve(&f->a));
    char *text = NULL;
    EXPECT_OK(dsv3_config_to_toml(&f->a, &text));
    Dsv3Err err = dsv3_config_load_text(&f->b, text, strlen(text), "printed.toml");
    dsv3_free(text);
    EXPECT_OK(err);
    EXPECT_OK(dsv3_config_resolve(&f->b));
    assert_int_equal(f->b.model_filled, 0);
    // Each value below is plain enough for the core; model_config refutes it, naming both sides.
    static const struct {
        const char *dotted, *value, *message, *other_side;
    } cases[] = {
        {"model.top_k", "9", "model.top_k", "model.num_experts"},
        {"parallelism.expert_parallel_degree", "3",
         "command line --parallelism.expert_parallel_degree: parallelism.expert_parallel_degree 3 "
         "does not divide model.num_experts 8",
         "num_experts"},
        {"parallelism.pipeline_parallel_degree", "7",
         "command line --parallelism.pipeline_parallel_degree: "
         "parallelism.pipeline_parallel_degree "
         "7 exceeds model.n_layers 6",
         "at least one layer"},
        {"parallelism.tensor_parallel_degree", "3",
         "command line --parallelism.tensor_parallel_degree: parallelism.tensor_parallel_degree 3 "
         "does not divide model.n_heads 16",
         "n_heads"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(&f->a, &f->b, sizeof f->a); // plain data: copyable
        EXPECT_OK(dsv3_config_override(&f->a, cases[i].dotted, cases[i].value));
        EXPECT_OK(dsv3_config_resolve(&f->a));
        EXPECT_ERROR(dsv3_model_config_resolve(&f->a), DSV3_ERR_CONFIG, cases[i].message,
                     cases[i].other_side);
    }
    // Values that fit the model pass both, and the model arguments are the user's.
    EXPECT_OK(dsv3_config_override(&f->b, "model.n_layers", "8"));
    EXPECT_OK(dsv3_config_override(&f->b, "parallelism.pipeline_parallel_degree", "8"));
    EXPECT_OK(dsv3_config_override(&f->b, "parallelism.tensor_parallel_degree", "4"));
    EXPECT_OK(dsv3_config_resolve(&f->b));
    EXPECT_OK(dsv3_model_config_resolve(&f->b));
    Dsv3ModelArgs args;
    dsv3_model_args_from_config(&f->b, &args);
    assert_int_equal(args.n_layers, 8);
    assert_int_equal(args.dim, 256);
}

// ---------------------------------------------------------------------------------------------
// Checks across keys

static void test_combination_checks_name_both_sides(void **state) {
    Fixture *f = *state;
    RESOLVE_FAILS("[training]\nlocal_batch_size = 8\nglobal_batch_size = 12\n",
                  "x.toml:3: training.global_batch_size 12 is not a multiple of",
                  "training.local_batch_size 8");
    RESOLVE_FAILS("[parallelism]\nexpert_parallel_degree = 3\n",
                  "x.toml:2: parallelism.expert_parallel_degree 3 does not divide",
                  "model.num_experts 8");
    RESOLVE_FAILS("[parallelism]\npipeline_parallel_degree = 7\n",
                  "x.toml:2: parallelism.pipeline_parallel_degree 7 exceeds model.n_layers 6",
                  "at least one layer");
    RESOLVE_FAILS("[parallelism]\ntensor_parallel_degree = 3\n",
                  "x.toml:2: parallelism.tensor_parallel_degree 3 does not divide",
                  "model.n_heads 16");
    RESOLVE_FAILS("[parallelism]\ncontext_parallel_degree = 3\n", "training.seq_len 2048",
                  "context_parallel_degree");
    // 40 = 2 × cp × 10 splits into cp 2's chunks, but a cp rank's 20 positions not over tp 8.
    RESOLVE_FAILS("[training]\nseq_len = 40\n[parallelism]\ncontext_parallel_degree = 2\n"
                  "tensor_parallel_degree = 8\n",
                  "parallelism.tensor_parallel_degree 8 × context_parallel_degree 2 does not "
                  "divide training.seq_len 40",
                  "seq_len / cp positions");
    RESOLVE_FAILS("[training]\ndataset = \"tokens\"\n",
                  "x.toml:2: training.dataset = \"tokens\" needs training.dataset_path", "tokens");
    RESOLVE_FAILS("[training]\ndataset = \"text\"\ndataset_path = \"\"\n",
                  "training.dataset = \"text\"", "dataset_path");
    static const char *const bad_ac[] = {"0", "-1", "x", "", "2x", "OP", "op "};
    for (size_t i = 0; i < sizeof bad_ac / sizeof bad_ac[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "[activation_checkpoint]\nselective_ac_option = \"%s\"\n",
                 bad_ac[i]);
        RESOLVE_FAILS(text, "x.toml:2: activation_checkpoint.selective_ac_option",
                      "\"op\" or a positive integer");
    }
    // The same keys with values that fit together.
    RESOLVE_OK("[training]\nlocal_batch_size = 4\nglobal_batch_size = 12\n");
    RESOLVE_OK("[parallelism]\nexpert_parallel_degree = 4\npipeline_parallel_degree = 6\n"
               "tensor_parallel_degree = 4\ncontext_parallel_degree = 2\n");
    RESOLVE_OK("[training]\ndataset = \"tokens\"\ndataset_path = \"data/tokens.bin\"\n");
    RESOLVE_OK("[activation_checkpoint]\nselective_ac_option = \"op\"\n");
    RESOLVE_OK("[activation_checkpoint]\nselective_ac_option = \"3\"\n");
    // A bigger model moves the limits with it.
    RESOLVE_OK("[model]\nflavor = \"16B\"\n[parallelism]\nexpert_parallel_degree = "
               "64\npipeline_parallel_degree = 27\n");
}

// ---------------------------------------------------------------------------------------------
// Printing

static void test_to_toml_round_trips_every_field_bit_exactly(void **state) {
    Fixture *f = *state;
    EXPECT_OK(dsv3_model_config_resolve(&f->a));
    Dsv3Config *c = &f->a;
    // Floats whose shortest decimal form is long, tiny, or not exact in binary.
    c->optimizer.eps = 1e-8;
    c->optimizer.weight_decay = 0.1;
    c->optimizer.lr = 2.2e-4;
    c->optimizer.beta2 = 1.0 / 3.0;
    c->optimizer.beta1 = 0.1 + 0.2;
    c->lr_scheduler.decay_ratio = -0.0; // the sign must survive
    c->lr_scheduler.min_lr_factor = nextafter(1.0, 0.0);
    c->training.max_norm = 1e12;
    c->metrics.peak_tflops = 5e-324; // the smallest subnormal
    c->model.norm_eps = DBL_MIN;
    c->model.rope_theta = 123456789.125;
    c->model.load_balance_coeff = 1.0 / 3.0;
    c->model.route_scale = 100.0; // printed without a fraction by %g
    c->model.beta_fast = 1e5;
    // Integers at the extremes.
    c->debug.seed = INT64_MAX;
    c->checkpoint.load_step = -1;
    c->training.steps = 1;
    c->lr_scheduler.warmup_steps = 0;
    // Booleans flipped from their defaults.
    c->job.print_config = 1;
    c->job.dry_run = 1;
    c->metrics.disable_color_printing = 1;
    c->checkpoint.last_save_model_only = 0;
    // Strings that need escaping, and some that only look like TOML syntax.
    snprintf(c->job.description, sizeof c->job.description,
             "say \"hi\" \\ back\\slash\nnew line\ttab\rcr \x01\x1f\x7f Gr\xc3\xbc\xc3\x9f"
             "e \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x9a\x80 'single' # not a comment");
    snprintf(c->job.dump_folder, sizeof c->job.dump_folder, "C:\\runs\\");
    snprintf(c->job.config_file, sizeof c->job.config_file, "[not.a.table]");
    snprintf(c->training.dataset_path, sizeof c->training.dataset_path, "key = \"value\"");
    snprintf(c->model.hf_assets_path, sizeof c->model.hf_assets_path, "'''\"\"\"");
    snprintf(c->checkpoint.folder, sizeof c->checkpoint.folder, "\\u0041 is not A");
    memset(c->validation.dataset_path, 'v', DSV3_CONFIG_STRING_CAPACITY - 1);
    c->validation.dataset_path[DSV3_CONFIG_STRING_CAPACITY - 1] = '\0';
    EXPECT_OK(dsv3_model_config_resolve(c)); // still a valid config
    round_trip(c, &f->b, 1);
}

static void test_to_toml_round_trips_floats_beyond_the_valid_ranges(void **state) {
    Fixture *f = *state;
    // Loading does not validate, so the printer must keep any double, valid or not.
    static const double awkward[] = {
        1e300, -1e300, DBL_MAX, -DBL_MIN,  5e-324, 1e22, 1e21, 1e16,      123456789012345678.0,
        100.0, -0.0,   0.0,     1.0 / 3.0, 2.2e-4, 1e-8, 0.1,  4.35e-310, 9007199254740993.0};
    int float_keys = 0;
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        if (k->type != DSV3_CFG_FLOAT) continue;
        *(double *)((char *)&f->a + k->offset) =
            awkward[float_keys % (sizeof awkward / sizeof awkward[0])];
        float_keys++;
    }
    // Two passes so that every awkward value lands on some key whatever the key count.
    round_trip(&f->a, &f->b, 0);
    for (size_t j = 0; j < sizeof awkward / sizeof awkward[0]; j++) {
        for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
            const Dsv3ConfigKey *k = &dsv3_config_keys[i];
            if (k->type == DSV3_CFG_FLOAT) *(double *)((char *)&f->a + k->offset) = awkward[j];
        }
        round_trip(&f->a, &f->b, 0);
    }
    // Infinities print as TOML's inf; NaN reads back as a NaN.
    f->a.optimizer.lr = INFINITY;
    f->a.optimizer.eps = -INFINITY;
    f->a.training.max_norm = NAN;
    char *text = NULL;
    EXPECT_OK(dsv3_config_to_toml(&f->a, &text));
    dsv3_config_init(&f->b);
    Dsv3Err err = dsv3_config_load_text(&f->b, text, strlen(text), "printed.toml");
    dsv3_free(text);
    EXPECT_OK(err);
    assert_true(isinf(f->b.optimizer.lr) && f->b.optimizer.lr > 0);
    assert_true(isinf(f->b.optimizer.eps) && f->b.optimizer.eps < 0);
    assert_true(isnan(f->b.training.max_norm));
    // Integers at both ends of int64.
    f->a.debug.seed = INT64_MAX;
    f->a.training.global_batch_size = INT64_MIN;
    f->a.optimizer.lr = 1.0;
    f->a.optimizer.eps = 1.0;
    f->a.training.max_norm = 1.0;
    round_trip(&f->a, &f->b, 0);
}

static void test_to_toml_round_trips_every_flavor(void **state) {
    Fixture *f = *state;
    for (size_t i = 0; dsv3_model_flavor_names[i]; i++) {
        dsv3_config_init(&f->a);
        EXPECT_OK(dsv3_config_override(&f->a, "model.flavor", dsv3_model_flavor_names[i]));
        EXPECT_OK(dsv3_model_config_resolve(&f->a));
        round_trip(&f->a, &f->b, 1);
    }
}

static void test_to_toml_prints_every_section_once_in_order(void **state) {
    Fixture *f = *state;
    char *text = NULL;
    EXPECT_OK(dsv3_config_to_toml(&f->a, &text));
    const char *previous = text;
    const char *last_section = "";
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        if (strcmp(k->section, last_section) != 0) {
            char header[128];
            snprintf(header, sizeof header, "[%s]\n", k->section);
            const char *at = strstr(text, header);
            if (!at || at < previous) fail_msg("[%s] missing or out of order", k->section);
            if (strstr(at + 1, header)) fail_msg("[%s] printed twice", k->section);
            previous = at;
            last_section = k->section;
        }
        char line[256];
        snprintf(line, sizeof line, "\n%s = ", k->key);
        const char *at = strstr(previous, line);
        if (!at) fail_msg("%s.%s is not printed", k->section, k->key);
    }
    assert_non_null(strstr(text, "\nsteps = 10000\n"));
    assert_non_null(strstr(text, "\nlr = 0.0008\n"));
    assert_non_null(strstr(text, "\nflavor = \"debugmodel\"\n"));
    assert_non_null(strstr(text, "\nprint_config = false\n"));
    assert_non_null(strstr(text, "\nmax_norm = 1.0\n")); // a float, never an integer
    dsv3_free(text);
}

// Whether `needle` occurs in [begin, end).
static int line_contains(const char *begin, const char *end, const char *needle) {
    size_t n = strlen(needle);
    for (const char *p = begin; p + n <= end; p++)
        if (memcmp(p, needle, n) == 0) return 1;
    return 0;
}

static void test_help_mentions_every_key(void **state) {
    (void)state;
    char *help = NULL;
    EXPECT_OK(dsv3_config_help(&help));
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        char option[256];
        snprintf(option, sizeof option, "--%s.%s (", k->section, k->key);
        const char *at = strstr(help, option);
        if (!at) fail_msg("help lacks %s", option);
        // The entry's first line, then its help text on the next.
        const char *end = strchr(at, '\n');
        assert_non_null(end);
        assert_int_equal(line_contains(at, end, "[not supported yet]"),
                         k->status == DSV3_KEY_NOT_YET);
        if (k->choices) assert_true(line_contains(at, end, k->choices));
        assert_true(strncmp(end + 1, "      ", 6) == 0);
        assert_true(strncmp(end + 7, k->help, strlen(k->help)) == 0);
        // A key not supported yet says on its help line what it waits for.
        const char *help_end = strchr(end + 1, '\n');
        assert_non_null(help_end);
        if (k->status == DSV3_KEY_NOT_YET) {
            char needs[256];
            snprintf(needs, sizeof needs, "(it needs %s, which is not implemented)", k->needs);
            if (!line_contains(end + 1, help_end, needs))
                fail_msg("the help of %s.%s lacks '%s'", k->section, k->key, needs);
        } else {
            assert_false(line_contains(end + 1, help_end, "it needs"));
        }
    }
    assert_non_null(strstr(help, "--training.steps (int, default 10000)"));
    assert_non_null(strstr(help, "--model.dim (int, default from model.flavor)"));
    assert_non_null(strstr(help, "--optimizer.lr (float, default 0.0008)"));
    dsv3_free(help);
}

// ---------------------------------------------------------------------------------------------
// The shipped configs

static void check_shipped_config(Fixture *f, const char *name, const char *flavor, int64_t dim) {
    const char *root = getenv("DSV3_SOURCE_ROOT");
    if (!root || !*root) {
        print_message("DSV3_SOURCE_ROOT is not set (run through meson test): skipping conf/%s\n",
                      name);
        skip();
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/conf/%s", root, name);
    if (access(path, R_OK) != 0) {
        print_message("conf/%s does not exist yet: skipping its check\n", name);
        skip();
    }
    dsv3_config_init(&f->a);
    EXPECT_OK(dsv3_config_load_file(&f->a, path));
    EXPECT_OK(dsv3_model_config_resolve(&f->a));
    assert_string_equal(f->a.model.flavor, flavor);
    assert_int_equal(f->a.model.dim, dim);
    round_trip(&f->a, &f->b, 1);
    // The way users pass it works the same.
    dsv3_config_init(&f->b);
    char *argv[] = {"dsv3-coordinator",
                    "--job.config_file",
                    path,
                    "--training.steps",
                    "3",
                    "--lr_scheduler.warmup_steps",
                    "1"};
    EXPECT_OK(dsv3_config_parse_args(&f->b, ARGC(argv), argv));
    EXPECT_OK(dsv3_model_config_resolve(&f->b));
    assert_int_equal(f->b.training.steps, 3);
    assert_string_equal(f->b.model.flavor, flavor);
}

static void test_debug_model_config_is_valid(void **state) {
    check_shipped_config(*state, "debug_model.toml", "debugmodel", 256);
}

static void test_deepseek_v3_16b_config_is_valid(void **state) {
    check_shipped_config(*state, "deepseek_v3_16b.toml", "16B", 2048);
}

static void test_deepseek_v3_671b_config_is_valid(void **state) {
    check_shipped_config(*state, "deepseek_v3_671b.toml", "671B", 7168);
}

#define TEST(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_schema_names_each_key_once_in_contiguous_sections),
        TEST(test_schema_defaults_satisfy_their_own_bounds_and_choices),
        TEST(test_init_sets_every_key_to_its_default),
        TEST(test_defaults_resolve_to_the_debugmodel_flavor),
        TEST(test_every_flavor_resolves_to_its_model_args),
        TEST(test_load_sets_every_type_and_records_where),
        TEST(test_load_accepts_dotted_keys_and_inline_tables),
        TEST(test_second_load_applies_on_top_of_the_first),
        TEST(test_load_reads_only_the_given_length),
        TEST(test_unknown_section_suggests_the_closest),
        TEST(test_key_above_every_header_names_its_sections),
        TEST(test_long_source_name_keeps_the_line_number),
        TEST(test_unknown_key_suggests_the_closest_in_its_section),
        TEST(test_wrong_type_names_file_line_key_and_both_types),
        TEST(test_section_must_be_a_table),
        TEST(test_toml_syntax_error_names_the_source),
        TEST(test_string_longer_than_the_field_is_rejected),
        TEST(test_load_file_reads_the_file_and_names_it),
        TEST(test_load_file_that_cannot_be_read_is_an_io_error),
        TEST(test_out_of_range_values_name_key_value_and_origin),
        TEST(test_bad_choice_lists_the_choices),
        TEST(test_not_yet_supported_key_keeps_only_its_default),
        TEST(test_not_yet_keys_name_the_capability_they_wait_for),
        TEST(test_every_not_yet_key_rejects_any_other_value),
        TEST(test_override_sets_value_and_origin),
        TEST(test_override_rejects_garbled_values),
        TEST(test_override_rejects_unknown_or_malformed_names),
        TEST(test_parse_args_accepts_space_equals_and_bare_forms),
        TEST(test_parse_args_boolean_takes_an_explicit_value),
        TEST(test_parse_args_loads_config_file_first_wherever_it_stands),
        TEST(test_parse_args_reports_config_file_problems),
        TEST(test_parse_args_rejects_unknown_and_garbled_arguments),
        TEST(test_user_model_key_beats_the_flavor),
        TEST(test_unknown_flavor_names_origin_and_known_flavors),
        TEST(test_inconsistent_model_keys_are_reported),
        TEST(test_core_resolve_needs_the_model_keys_filled),
        TEST(test_core_accepts_what_only_model_arguments_refute),
        TEST(test_combination_checks_name_both_sides),
        TEST(test_to_toml_round_trips_every_field_bit_exactly),
        TEST(test_to_toml_round_trips_floats_beyond_the_valid_ranges),
        TEST(test_to_toml_round_trips_every_flavor),
        TEST(test_to_toml_prints_every_section_once_in_order),
        TEST(test_help_mentions_every_key),
        TEST(test_debug_model_config_is_valid),
        TEST(test_deepseek_v3_16b_config_is_valid),
        TEST(test_deepseek_v3_671b_config_is_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
