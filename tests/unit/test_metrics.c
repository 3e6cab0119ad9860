// Unit tests for the metrics modules without MPI: the expert-load summary, per-phase timers and
// trace events, the Chrome-trace file (parsed back with json-c), and the metrics sinks
// (metrics.jsonl, expert_counts.jsonl, the TensorBoard folder) written into a temporary folder.
#include <dirent.h>
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
#include <json-c/json.h>

#include "common/core/alloc.h"
#include "common/core/config.h"
#include "common/train/expert_load.h"
#include "common/train/metrics.h"
#include "common/train/peak.h"
#include "common/train/trace.h"
#include "kernels/kernels.h"

enum { PATH_CAPACITY = 4096, TEMP_CAPACITY = 1024, LINE_CAPACITY = 1 << 16 };

static char temp_dir[TEMP_CAPACITY];

static int setup_dir(void **state) {
    (void)state;
    const char *base = getenv("TMPDIR");
    int n = snprintf(temp_dir, sizeof temp_dir, "%s/dsv3_metrics_XXXXXX",
                     base && *base ? base : "/tmp");
    if (n < 0 || (size_t)n >= sizeof temp_dir) return -1;
    return mkdtemp(temp_dir) ? 0 : -1;
}

// rm -r of the temporary folder.
static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    char child[PATH_CAPACITY];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(child, sizeof child, "%s/%s", path, e->d_name);
        remove_tree(child);
    }
    closedir(d);
    rmdir(path);
}

static int teardown_dir(void **state) {
    (void)state;
    remove_tree(temp_dir);
    return 0;
}

// A model of 3 layers (layer 0 dense) and 4 experts.
static Dsv3ExpertLoad make_load(void) {
    Dsv3ModelArgs args = {.n_layers = 3, .n_dense_layers = 1, .num_experts = 4};
    Dsv3ExpertLoad load;
    assert_int_equal(dsv3_expert_load_create(&load, &args), DSV3_OK);
    const int64_t counts[2][4] = {{1, 2, 3, 6}, {3, 3, 3, 3}};
    const float bias[2][4] = {{3, 4, 0, 0}, {0, 0, 0, 0}};
    for (int l = 1; l < 3; l++)
        for (int e = 0; e < 4; e++) {
            load.counts[l * 4 + e] = counts[l - 1][e];
            load.bias[l * 4 + e] = bias[l - 1][e];
        }
    return load;
}

static void test_expert_load_summary(void **state) {
    (void)state;
    Dsv3ExpertLoad load = make_load();
    assert_false(dsv3_expert_load_is_moe(&load, 0));
    assert_true(dsv3_expert_load_is_moe(&load, 1));
    assert_true(dsv3_expert_load_is_moe(&load, 2));
    assert_false(dsv3_expert_load_is_moe(&load, 3));
    Dsv3ExpertLayerLoad s;
    dsv3_expert_load_layer(&load, 1, &s);
    assert_int_equal(s.tokens, 12);
    assert_int_equal(s.max, 6);
    assert_int_equal(s.min, 1);
    assert_true(fabs(s.max_over_mean - 2.0) < 1e-12); // 6 / (12 / 4)
    assert_true(fabs(s.min_over_mean - 1.0 / 3.0) < 1e-12);
    assert_true(fabs(s.bias_norm - 5.0) < 1e-12); // ‖(3, 4, 0, 0)‖
    dsv3_expert_load_layer(&load, 2, &s);
    assert_true(s.max_over_mean == 1.0 && s.min_over_mean == 1.0);
    dsv3_expert_load_layer(&load, 0, &s); // a dense layer's empty row
    assert_int_equal(s.tokens, 0);
    assert_true(s.max_over_mean == 0.0);
    dsv3_expert_load_destroy(&load);
}

static void test_trace_sums_and_events(void **state) {
    (void)state;
    Dsv3Trace t = {0};
    dsv3_trace_step_start(&t, 0);
    double o = t.origin;
    assert_int_equal(dsv3_trace_add(&t, DSV3_PHASE_FORWARD, 0, o + 1.0, o + 1.5), DSV3_OK);
    assert_int_equal(dsv3_trace_add(&t, DSV3_PHASE_FORWARD, 1, o + 2.0, o + 2.25), DSV3_OK);
    assert_true(fabs(t.seconds[DSV3_PHASE_FORWARD] - 0.75) < 1e-9);
    assert_int_equal(t.count, 0); // not recording
    // A recorded step: sums restart, events are relative to the step's origin, and the buffer
    // grows past its first capacity.
    dsv3_trace_step_start(&t, 1);
    o = t.origin;
    for (int i = 0; i < 200; i++)
        assert_int_equal(dsv3_trace_add(&t, DSV3_PHASE_BACKWARD, i, o + i, o + i + 0.5), DSV3_OK);
    assert_int_equal(t.count, 200);
    assert_true(fabs(t.seconds[DSV3_PHASE_BACKWARD] - 100.0) < 1e-6);
    assert_true(t.seconds[DSV3_PHASE_FORWARD] == 0.0);
    assert_int_equal(t.events[199].index, 199);
    assert_true(fabs(t.events[199].start - 199.0) < 1e-6 &&
                fabs(t.events[199].seconds - 0.5) < 1e-9);
    assert_string_equal(dsv3_phase_name(DSV3_PHASE_COMM_GRAD), "comm_grad_allreduce");
    assert_string_equal(dsv3_phase_category(DSV3_PHASE_COMM_GRAD), "comm");
    assert_null(dsv3_phase_name(DSV3_PHASE_COUNT));
    dsv3_trace_destroy(&t);
}

static json_object *parse_file(const char *path) {
    json_object *o = json_object_from_file(path);
    if (!o) fail_msg("%s is not valid JSON: %s", path, json_util_get_last_err());
    return o;
}

static void test_chrome_trace_file(void **state) {
    (void)state;
    const Dsv3TraceEvent coordinator[] = {
        {.phase = DSV3_PHASE_DATA, .index = 0, .stage = -1, .start = 0.0, .seconds = 0.001}};
    const Dsv3TraceEvent stage[] = {
        {.phase = DSV3_PHASE_FORWARD, .index = 0, .stage = 1, .start = 0.002, .seconds = 0.5},
        {.phase = DSV3_PHASE_BACKWARD, .index = 0, .stage = 1, .start = 0.502, .seconds = 1.0},
        {.phase = DSV3_PHASE_OPTIMIZER, .index = -1, .stage = -1, .start = 1.6, .seconds = 0.1},
        {.phase = 99, .index = 0, .stage = -1},
        {.phase = DSV3_TRACE_OP,
         .index = -1,
         .stage = -1,
         .op = DSV3_OP_LINEAR_FORWARD,
         .start = 0.1,
         .seconds = 0.25,
         .gemm_flops = 5e9},
        {.phase = DSV3_TRACE_OP, .index = -1, .stage = -1, .op = DSV3_OP_COUNT}};
    Dsv3TraceTrack tracks[2] = {{"coordinator 0", coordinator, 1}, {"stage \"1\"", stage, 6}};
    char path[PATH_CAPACITY + 32];
    snprintf(path, sizeof path, "%s/trace.json", temp_dir);
    assert_int_equal(dsv3_trace_write_chrome(path, 7, tracks, 2), DSV3_OK);
    assert_int_equal(access(path, F_OK), 0);
    json_object *root = parse_file(path), *events, *other, *step;
    assert_true(json_object_object_get_ex(root, "traceEvents", &events));
    assert_true(json_object_object_get_ex(root, "otherData", &other));
    assert_true(json_object_object_get_ex(other, "step", &step));
    assert_int_equal(json_object_get_int(step), 7);
    int complete[2] = {0, 0}, names = 0;
    for (size_t i = 0; i < json_object_array_length(events); i++) {
        json_object *e = json_object_array_get_idx(events, i), *ph, *pid, *name, *ts, *dur;
        assert_true(json_object_object_get_ex(e, "ph", &ph));
        assert_true(json_object_object_get_ex(e, "pid", &pid));
        assert_true(json_object_object_get_ex(e, "name", &name));
        int p = json_object_get_int(pid);
        assert_true(p == 0 || p == 1);
        if (strcmp(json_object_get_string(ph), "M") == 0) {
            names += strcmp(json_object_get_string(name), "process_name") == 0;
            continue;
        }
        assert_string_equal(json_object_get_string(ph), "X");
        assert_true(json_object_object_get_ex(e, "ts", &ts) &&
                    json_object_object_get_ex(e, "dur", &dur));
        if (strcmp(json_object_get_string(name), "backward") == 0) {
            assert_true(fabs(json_object_get_double(ts) - 502000.0) < 1e-3); // microseconds
            assert_true(fabs(json_object_get_double(dur) - 1e6) < 1e-3);
            json_object *args, *micro, *at_stage; // a pipeline stage's backward names both
            assert_true(json_object_object_get_ex(e, "args", &args) &&
                        json_object_object_get_ex(args, "micro_batch", &micro) &&
                        json_object_object_get_ex(args, "stage", &at_stage));
            assert_int_equal(json_object_get_int(micro), 0);
            assert_int_equal(json_object_get_int(at_stage), 1);
        }
        if (strcmp(json_object_get_string(name), "linear_forward") == 0) {
            json_object *cat, *args, *gflop, *rate; // an op names its GEMMs' work and rate
            assert_true(json_object_object_get_ex(e, "cat", &cat));
            assert_string_equal(json_object_get_string(cat), "op");
            assert_true(json_object_object_get_ex(e, "args", &args) &&
                        json_object_object_get_ex(args, "gemm_gflop", &gflop) &&
                        json_object_object_get_ex(args, "gemm_gflop_per_s", &rate));
            assert_true(fabs(json_object_get_double(gflop) - 5.0) < 1e-9);
            assert_true(fabs(json_object_get_double(rate) - 20.0) < 1e-9);
        }
        complete[p]++;
    }
    assert_int_equal(names, 2);
    assert_int_equal(complete[0], 1);
    assert_int_equal(complete[1], 4); // the events of an unknown phase or op are skipped
    json_object_put(root);
    char tmp[PATH_CAPACITY + 40];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0); // renamed into place
}

static int read_line(const char *path, int index, char *line) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = 0;
    for (int i = 0; i <= index && fgets(line, LINE_CAPACITY, f); i++)
        ok = i == index;
    fclose(f);
    return ok;
}

static double get_number(json_object *o, const char *key) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v)) fail_msg("key '%s' missing", key);
    return json_object_get_double(v);
}

static void test_metrics_sinks(void **state) {
    (void)state;
    Dsv3Config cfg;
    dsv3_config_init(&cfg);
    snprintf(cfg.job.dump_folder, sizeof cfg.job.dump_folder, "%s/dump/nested", temp_dir);
    cfg.metrics.enable_tensorboard = 1;
    cfg.metrics.dump_expert_counts = 1;
    Dsv3ModelArgs args = {.n_layers = 3, .n_dense_layers = 1, .num_experts = 4};
    Dsv3Metrics *m = NULL;
    assert_int_equal(dsv3_metrics_open(&m, &cfg, &args), DSV3_OK);
    Dsv3ExpertLoad load = make_load();
    Dsv3StepRecord r = {.step = 10,
                        .loss = 2.5,
                        .grad_norm = 0.75,
                        .lr = 1e-3,
                        .tps = 1000,
                        .tflops = 0.5,
                        .mfu = 12.5,
                        .memory_gib = 1.25,
                        .memory_pct = 3.0,
                        .seconds_step = 2.0,
                        .expert_load = &load,
                        .validation_loss = NAN};
    r.seconds[DSV3_PHASE_FORWARD] = 0.5;
    assert_int_equal(dsv3_metrics_log_step(m, &r), DSV3_OK);
    r.step = 20;
    r.loss = NAN; // a diverged run still writes valid JSON
    r.validation_loss = 2.75;
    r.expert_load = NULL;
    assert_int_equal(dsv3_metrics_log_step(m, &r), DSV3_OK);
    dsv3_metrics_close(m);
    dsv3_expert_load_destroy(&load);

    static char line[LINE_CAPACITY];
    char path[PATH_CAPACITY + 64];
    snprintf(path, sizeof path, "%s/metrics.jsonl", cfg.job.dump_folder);
    assert_true(read_line(path, 0, line));
    json_object *o = json_tokener_parse(line), *v;
    assert_non_null(o);
    assert_true(get_number(o, "step") == 10);
    assert_true(get_number(o, "loss") == 2.5);
    static const char *const keys[] = {"grad_norm",
                                       "lr",
                                       "tps",
                                       "tflops",
                                       "mfu",
                                       "memory_gib",
                                       "memory_pct",
                                       "time_step",
                                       "time_forward",
                                       "time_backward",
                                       "time_optimizer",
                                       "time_comm_grad_allreduce",
                                       "time_data",
                                       "expert_imbalance"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        get_number(o, keys[i]);
    assert_true(get_number(o, "time_forward") == 0.5);
    assert_true(get_number(o, "expert_imbalance") == 2.0);
    assert_true(get_number(o, "expert_load/layer_1/max_over_mean") == 2.0);
    assert_true(get_number(o, "expert_load/layer_1/max_tokens") == 6);
    assert_true(get_number(o, "expert_load/layer_1/bias_norm") == 5.0);
    assert_true(get_number(o, "expert_load/layer_2/min_over_mean") == 1.0);
    assert_false(json_object_object_get_ex(o, "expert_load/layer_0/max_over_mean", &v)); // dense
    assert_false(json_object_object_get_ex(o, "validation_loss", &v));
    assert_false(json_object_object_get_ex(o, "time_validation", &v));
    json_object_put(o);
    assert_true(read_line(path, 1, line));
    o = json_tokener_parse(line);
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "loss", &v));
    assert_true(json_object_is_type(v, json_type_null));
    assert_true(get_number(o, "validation_loss") == 2.75);
    assert_false(json_object_object_get_ex(o, "expert_imbalance", &v));
    json_object_put(o);
    assert_false(read_line(path, 2, line));

    snprintf(path, sizeof path, "%s/expert_counts.jsonl", cfg.job.dump_folder);
    assert_true(read_line(path, 0, line));
    assert_string_equal(line,
                        "{\"step\": 10, \"layer_1\": [1, 2, 3, 6], \"layer_2\": [3, 3, 3, 3]}\n");
    assert_false(read_line(path, 1, line)); // the second record had no load

    // One run folder under <dump_folder>/tb holding one event file.
    snprintf(path, sizeof path, "%s/tb", cfg.job.dump_folder);
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *e;
    int runs = 0;
    while ((e = readdir(d)) != NULL)
        runs += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(runs, 1);
    assert_int_equal(dsv3_alloc_current_bytes(), 0);
}

// MFU's peak: a measured peak below a step's rate is raised to it (MFU stays at most 100%);
// a configured peak is kept, however low.
static void test_peak_after_step(void **state) {
    (void)state;
    int raised = -1;
    assert_true(dsv3_peak_after_step(2.0, 0, 1.5, &raised) == 2.0);
    assert_int_equal(raised, 0);
    assert_true(dsv3_peak_after_step(2.0, 0, 3.0, &raised) == 3.0);
    assert_int_equal(raised, 1);
    assert_true(dsv3_peak_mfu_percent(1e12, 3.0, 3.0) <= 100.0);
    assert_true(dsv3_peak_after_step(0.5, 0.5, 3.0, &raised) == 0.5);
    assert_int_equal(raised, 0);
    assert_true(dsv3_peak_mfu_percent(1e12, 3.0, 0.5) > 100.0);
}

static void test_make_dirs_reports_a_file_in_the_way(void **state) {
    (void)state;
    char file[PATH_CAPACITY + 16], below[PATH_CAPACITY + 32];
    snprintf(file, sizeof file, "%s/plain", temp_dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(below, sizeof below, "%s/sub", file);
    assert_int_equal(dsv3_metrics_make_dirs(below), DSV3_ERR_IO);
    assert_non_null(strstr(dsv3_error_message(), "plain/sub"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expert_load_summary),
        cmocka_unit_test(test_trace_sums_and_events),
        cmocka_unit_test(test_chrome_trace_file),
        cmocka_unit_test(test_metrics_sinks),
        cmocka_unit_test(test_peak_after_step),
        cmocka_unit_test(test_make_dirs_reports_a_file_in_the_way),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
