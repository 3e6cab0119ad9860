// fuzz_checkpoint_h5: libFuzzer harness for reading an HDF5 checkpoint (common/ckpt/store, h5,
// manifest) whose files are corrupt.
//
// Once per process the checkpoint writer (dsv3_ckpt_store_write_shards by two ranks, then
// dsv3_ckpt_store_index and dsv3_manifest_write) saves a small reference checkpoint: a matrix
// whose rows the two ranks write, a vector and an expert bias, with AdamW moments, so six HDF5
// files (four shards and the virtual-dataset indexes model.h5 and optimizer.h5) and a manifest.
// An input's first byte chooses one of those six files and the rest replaces its bytes; the
// other files stay the reference's. The input then goes through what a stage rank does on
// load (checkpoint.c), twice:
//   1. against the reference manifest: a file whose bytes changed must fail the manifest's
//      size or CRC-32 check with a reason (the same bytes pass and read back the reference);
//   2. against a manifest written for the corrupt files, as if they had been corrupt before
//      the save described them, or as a stage rank meets them when the CRC-32 of a file it
//      reads is another rank's to check (the ranks split the check): dsv3_ckpt_store_read either
//      reads every tensor or fails with a reason.
// Either way no counted bytes and no HDF5 object may be left open. Any broken expectation
// aborts, which libFuzzer reports. HDF5 (libhdf5, not instrumented) parses the files, so the
// fuzzer's coverage counts only our code's reaction to what HDF5 returns.
//
// libhdf5 1.10.8 itself crashes on some corrupt files in step 2 (within a few thousand inputs:
// a NULL read in H5Dread of a virtual dataset whose source file has a corrupt contiguous
// layout; tests/fuzz/hdf5_crashes/ keeps one). Step 1 is what keeps such a file from HDF5 in a
// one-stage load. With DSV3_FUZZ_HDF5=0 the harness runs step 1 only, as run/test.sh does so
// that a crash it reports is ours.
// The same file also builds with gcc for tests/fuzz/replay_main.c. With
// DSV3_FUZZ_WRITE_SEEDS=<folder> the first call also writes the six reference files there as
// inputs (the seeds of tests/fuzz/corpus/checkpoint_h5).
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/ckpt/manifest.h"
#include "common/ckpt/store.h"
#include "common/ckpt/tensors.h"
#include "common/core/alloc.h"
#include "common/core/error.h"
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);
const char *__asan_default_options(void);

// An allocation larger than the sanitizer can make fails (as malloc fails in a real run) rather
// than ending the run: HDF5 asks for sizes read from a corrupt file and copes with NULL.
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

// LeakSanitizer's suppressions: libhdf5 1.10.8 leaks a few metadata blocks when it fails to open
// a corrupt virtual-dataset source file inside H5Dread (H5F__efc_open, H5G_mkroot); our own
// leaks are caught by the counted bytes and HDF5's open-object count below.
const char *__lsan_default_suppressions(void) { return "leak:libhdf5\n"; }

enum {
    FUZZ_STEP = 7,
    FUZZ_FILES = 6,
    FUZZ_TENSORS = 3,
    FUZZ_ROWS = 2, // of the matrix; rank r writes row r
    FUZZ_COLS = 3,
    FUZZ_LENGTH = 5, // of the vector
    FUZZ_EXPERTS = 4,
    FUZZ_VALUES = FUZZ_ROWS * FUZZ_COLS + FUZZ_LENGTH + FUZZ_EXPERTS,
    FUZZ_PATH_CAPACITY = 256,
    FUZZ_FREE_LIST_BYTES = 64 << 20,
};

static const char *const FILES[FUZZ_FILES] = {
    DSV3_CKPT_MODEL_FILE,     DSV3_CKPT_OPTIMIZER_FILE,     "shards/model-s00000.h5",
    "shards/model-s00001.h5", "shards/optimizer-s00000.h5", "shards/optimizer-s00001.h5",
};

static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    long n = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    uint8_t *data = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!data || fseek(f, 0, SEEK_SET) != 0 || fread(data, 1, (size_t)n, f) != (size_t)n)
        fuzz_fail("cannot read %s", path);
    fclose(f);
    *size = (size_t)n;
    return data;
}

// The checkpoint's tensors as one rank of `ranks` holds them (ranks 2: rank `rank` writes its
// row of the matrix, rank 0 the rest; ranks 1: a reader holding everything), over `values`
// (FUZZ_VALUES each of values, exp_avg and exp_avg_sq).
static void tensors_of(Dsv3CkptTensor items[FUZZ_TENSORS], int rank, int ranks, float *values) {
    memset(items, 0, FUZZ_TENSORS * sizeof *items);
    static const char *const names[FUZZ_TENSORS] = {"layers.0.attention.wo.weight",
                                                    "layers.0.attention_norm.weight",
                                                    "layers.0.moe.expert_bias"};
    static const int64_t shapes[FUZZ_TENSORS][2] = {
        {FUZZ_ROWS, FUZZ_COLS}, {FUZZ_LENGTH, 0}, {FUZZ_EXPERTS, 0}};
    float *p = values;
    for (int i = 0; i < FUZZ_TENSORS; i++) {
        Dsv3CkptTensor *x = &items[i];
        snprintf(x->fqn, sizeof x->fqn, "%s", names[i]);
        x->ndim = i == 0 ? 2 : 1;
        x->numel = 1;
        for (int d = 0; d < x->ndim; d++) {
            x->shape[d] = x->box.count[d] = shapes[i][d];
            x->numel *= shapes[i][d];
        }
        x->layer = 0;
        x->is_bias = i == FUZZ_TENSORS - 1;
        x->writes = rank == 0;
        x->data = p, x->exp_avg = p + FUZZ_VALUES, x->exp_avg_sq = p + 2 * FUZZ_VALUES;
        if (i == 0 && ranks == 2) { // one row each
            x->box.start[0] = rank, x->box.count[0] = 1;
            x->writes = 1;
            x->data += rank * FUZZ_COLS, x->exp_avg += rank * FUZZ_COLS,
                x->exp_avg_sq += rank * FUZZ_COLS;
        }
        p += x->numel;
    }
}

// The reference checkpoint and its files' bytes, made once per process.
typedef struct {
    char ref[FUZZ_PATH_CAPACITY], work[FUZZ_PATH_CAPACITY];
    uint8_t *bytes[FUZZ_FILES], *manifest;
    size_t size[FUZZ_FILES], manifest_size;
    float values[3 * FUZZ_VALUES];
} Reference;

static void write_reference(Reference *r) {
    for (int i = 0; i < 3 * FUZZ_VALUES; i++)
        r->values[i] = 0.25f * (float)(i + 1) - 3.0f;
    char *descriptions[2] = {NULL, NULL};
    for (int rank = 0; rank < 2; rank++) {
        Dsv3CkptTensor items[FUZZ_TENSORS];
        tensors_of(items, rank, 2, r->values);
        Dsv3CkptTensors t = {.count = FUZZ_TENSORS, .items = items};
        if (dsv3_ckpt_store_write_shards(r->ref, rank, &t, 1, DSV3_DTYPE_F32, FUZZ_STEP,
                                         &descriptions[rank]) != DSV3_OK)
            fuzz_fail("cannot write the reference shards: %s", dsv3_error_message());
    }
    Dsv3Manifest m = {.step = FUZZ_STEP};
    snprintf(m.kind, sizeof m.kind, "full");
    if (dsv3_ckpt_store_index(r->ref, descriptions, 2, FUZZ_STEP, &m) != DSV3_OK ||
        dsv3_manifest_write(r->ref, &m) != DSV3_OK)
        fuzz_fail("cannot write the reference checkpoint: %s", dsv3_error_message());
    dsv3_manifest_free(&m);
    dsv3_free(descriptions[0]);
    dsv3_free(descriptions[1]);
}

static char scratch[FUZZ_PATH_CAPACITY - 16];

static void remove_scratch(void) { dsv3_ckpt_remove_tree(scratch); }

static Reference *reference(void) {
    static Reference r;
    if (r.ref[0]) return &r;
    // tmpfs when there is one: the manifest is written with fsync for every input.
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(scratch, sizeof scratch, "%s/fuzz_checkpoint_h5.XXXXXX", base);
    if (!mkdtemp(scratch)) fuzz_fail("cannot make a scratch folder in %s", base);
    atexit(remove_scratch);
    // HDF5 allocates large blocks (a metadata cache) for every file it opens; kept on its free
    // lists rather than given back to the sanitizer's allocator (which maps and clears them
    // anew each time), an input takes about half the time. Bounded: corrupt files ask for
    // blocks of every size.
    if (H5set_free_list_limits(FUZZ_FREE_LIST_BYTES, FUZZ_FREE_LIST_BYTES / 4, FUZZ_FREE_LIST_BYTES,
                               FUZZ_FREE_LIST_BYTES / 4, FUZZ_FREE_LIST_BYTES,
                               FUZZ_FREE_LIST_BYTES / 4) < 0)
        fuzz_fail("cannot set HDF5's free list limits");
    snprintf(r.ref, sizeof r.ref, "%s/ref", scratch);
    snprintf(r.work, sizeof r.work, "%s/work", scratch);
    char path[4 * FUZZ_PATH_CAPACITY];
    for (int i = 0; i < 2; i++) {
        const char *dir = i ? r.work : r.ref;
        snprintf(path, sizeof path, "%s/shards", dir);
        if (mkdir(dir, 0777) != 0 || mkdir(path, 0777) != 0) fuzz_fail("cannot make %s", path);
    }
    write_reference(&r);
    const char *seeds = getenv("DSV3_FUZZ_WRITE_SEEDS");
    for (int i = 0; i < FUZZ_FILES; i++) {
        snprintf(path, sizeof path, "%s/%s", r.ref, FILES[i]);
        r.bytes[i] = read_file(path, &r.size[i]);
        if (!seeds) continue;
        uint8_t *seed = malloc(r.size[i] + 1);
        if (!seed) fuzz_fail("out of memory");
        seed[0] = (uint8_t)i;
        memcpy(seed + 1, r.bytes[i], r.size[i]);
        const char *slash = strrchr(FILES[i], '/');
        snprintf(path, sizeof path, "%s/%s", seeds, slash ? slash + 1 : FILES[i]);
        fuzz_write_file(path, seed, r.size[i] + 1);
        free(seed);
    }
    snprintf(path, sizeof path, "%s/%s", r.ref, DSV3_MANIFEST_NAME);
    r.manifest = read_file(path, &r.manifest_size);
    return &r;
}

// Whether every value, moment and bias read back is the reference's.
static int same_as_reference(const float *got, const float *want) {
    return memcmp(got, want, 3 * FUZZ_VALUES * sizeof *got) == 0;
}

// What a stage rank does on load (checkpoint.c: stage_load), with one rank. Returns whether it
// read the checkpoint; a failure must say why.
static int load(const char *dir, float *values) {
    Dsv3CkptTensor items[FUZZ_TENSORS];
    tensors_of(items, 0, 1, values);
    Dsv3CkptTensors t = {.count = FUZZ_TENSORS, .items = items};
    Dsv3Manifest m;
    Dsv3Err err = dsv3_manifest_read(dir, &m);
    if (err == DSV3_OK) {
        err = dsv3_manifest_verify(dir, &m, 0, 1);
        dsv3_manifest_free(&m);
    }
    if (err == DSV3_OK) err = dsv3_ckpt_store_read(dir, &t, 1);
    if (err != DSV3_OK) {
        if (dsv3_error_message()[0] == '\0') fuzz_fail("the load failed without a reason");
        dsv3_error_clear();
    }
    ssize_t open_objects = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (open_objects != 0) fuzz_fail("%zd HDF5 objects left open", open_objects);
    return err == DSV3_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    Reference *r = reference();
    int target = data[0] % FUZZ_FILES;
    char path[4 * FUZZ_PATH_CAPACITY];
    for (int i = 0; i < FUZZ_FILES; i++) {
        snprintf(path, sizeof path, "%s/%s", r->work, FILES[i]);
        if (i == target)
            fuzz_write_file(path, data + 1, size - 1);
        else
            fuzz_write_file(path, r->bytes[i], r->size[i]);
    }
    int same = size - 1 == r->size[target] && memcmp(data + 1, r->bytes[target], size - 1) == 0;
    size_t before = dsv3_alloc_current_bytes();
    float values[3 * FUZZ_VALUES];
    // 1. The reference manifest.
    snprintf(path, sizeof path, "%s/%s", r->work, DSV3_MANIFEST_NAME);
    fuzz_write_file(path, r->manifest, r->manifest_size);
    memset(values, 0, sizeof values);
    int loaded = load(r->work, values);
    if (loaded != same)
        fuzz_fail("%s the manifest check", same ? "the reference failed" : "passed");
    if (same && !same_as_reference(values, r->values)) fuzz_fail("the reference read back changed");
    // 2. A manifest that describes the corrupt files.
    const char *hdf5 = getenv("DSV3_FUZZ_HDF5");
    if (hdf5 && strcmp(hdf5, "0") == 0) {
        if (dsv3_alloc_current_bytes() != before) fuzz_fail("the load leaked");
        return 0;
    }
    Dsv3Manifest m = {.step = FUZZ_STEP};
    snprintf(m.kind, sizeof m.kind, "full");
    for (int i = 0; i < FUZZ_FILES; i++) {
        Dsv3ManifestFile f;
        if (dsv3_manifest_describe(r->work, FILES[i], &f) != DSV3_OK ||
            dsv3_manifest_add(&m, &f) != DSV3_OK)
            fuzz_fail("cannot describe %s: %s", FILES[i], dsv3_error_message());
    }
    if (dsv3_manifest_write(r->work, &m) != DSV3_OK)
        fuzz_fail("cannot write the manifest: %s", dsv3_error_message());
    dsv3_manifest_free(&m);
    memset(values, 0, sizeof values);
    loaded = load(r->work, values);
    if (same && (!loaded || !same_as_reference(values, r->values)))
        fuzz_fail("the reference did not read back");
    if (dsv3_alloc_current_bytes() != before) fuzz_fail("the load leaked");
    return 0;
}
