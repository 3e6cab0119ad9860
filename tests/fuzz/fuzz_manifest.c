// fuzz_manifest: libFuzzer harness for common/ckpt/manifest (a checkpoint's manifest.json).
//
// Every input is written as manifest.json into a scratch checkpoint folder that holds two real
// files (model.h5, 5 bytes, and shards/s.h5, empty) and read as a checkpoint loader reads it. A
// rejected manifest must say why and leave no counted bytes. An accepted one names only files
// inside the folder, with their real sizes, kind "full" or "model"; verifying it (every file's
// CRC-32) either passes or says why; then it is freed, leaving no counted bytes. Any broken
// expectation aborts, which libFuzzer reports. The same file also builds with gcc for
// tests/fuzz/replay_main.c.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/ckpt/manifest.h"
#include "common/core/alloc.h"
#include "common/core/error.h"
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// The scratch checkpoint folder, made once per process.
static const char *scratch(void) {
    static char dir[64];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "/tmp/fuzz_manifest.XXXXXX");
    if (!mkdtemp(dir)) fuzz_fail("cannot make a scratch folder");
    char path[128];
    snprintf(path, sizeof path, "%s/model.h5", dir);
    fuzz_write_file(path, "HDF5!", 5);
    snprintf(path, sizeof path, "%s/shards", dir);
    if (mkdir(path, 0777) != 0) fuzz_fail("cannot make %s", path);
    snprintf(path, sizeof path, "%s/shards/s.h5", dir);
    fuzz_write_file(path, "", 0);
    return dir;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = scratch();
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, DSV3_MANIFEST_NAME);
    fuzz_write_file(path, data, size);
    size_t before = dsv3_alloc_current_bytes();
    Dsv3Manifest m;
    if (dsv3_manifest_read(dir, &m) != DSV3_OK) {
        if (dsv3_error_message()[0] == '\0') fuzz_fail("refused without a reason");
        if (dsv3_alloc_current_bytes() != before) fuzz_fail("a refused manifest leaked");
        dsv3_error_clear();
        return 0;
    }
    if (strcmp(m.kind, "full") != 0 && strcmp(m.kind, "model") != 0)
        fuzz_fail("accepted kind \"%s\"", m.kind);
    for (int64_t i = 0; i < m.n_files; i++) {
        const Dsv3ManifestFile *f = &m.files[i];
        if (f->path[0] == '/' || strstr(f->path, "..")) fuzz_fail("accepted path %s", f->path);
        char full[DSV3_CKPT_PATH_CAPACITY + 128];
        snprintf(full, sizeof full, "%s/%s", dir, f->path);
        struct stat st;
        if (stat(full, &st) != 0 || (int64_t)st.st_size != f->bytes)
            fuzz_fail("accepted %s with %lld bytes", f->path, (long long)f->bytes);
    }
    if (dsv3_manifest_verify(dir, &m, 0, 1) != DSV3_OK) {
        if (dsv3_error_message()[0] == '\0') fuzz_fail("verification failed without a reason");
        dsv3_error_clear();
    }
    dsv3_manifest_free(&m);
    if (dsv3_alloc_current_bytes() != before) fuzz_fail("an accepted manifest leaked");
    return 0;
}
