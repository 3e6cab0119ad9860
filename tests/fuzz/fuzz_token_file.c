// fuzz_token_file: libFuzzer harness for common/data/token_file (training.dataset = "tokens").
//
// The first two bytes of an input choose seq_len (1 to 8) and vocab_size (1 to 256 × 256); the
// rest is the token file, written to a scratch file and opened as training opens it. A rejected
// file must say why and leave no counted bytes. An accepted one holds at least seq_len + 1
// tokens; every window, and the first window past the end (which wraps), either reads ids below
// vocab_size that are the file's own bytes, or fails saying why. Any broken expectation aborts,
// which libFuzzer reports. The same file also builds with gcc for tests/fuzz/replay_main.c.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/core/alloc.h"
#include "common/core/error.h"
#include "common/core/log.h"
#include "common/data/token_file.h"
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { FUZZ_MAX_SEQ_LEN = 8, FUZZ_VOCAB_STEP = 256, FUZZ_MAX_WINDOWS = 4096 };

static uint32_t id_at(const uint8_t *file, int64_t token) {
    const uint8_t *b = file + 4 * token;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int64_t seq_len = 1 + data[0] % FUZZ_MAX_SEQ_LEN,
            vocab = (int64_t)(1 + data[1]) * FUZZ_VOCAB_STEP;
    const uint8_t *file = data + 2;
    size_t bytes = size - 2;
    static char path[64];
    if (!path[0]) {
        dsv3_log_set_level(DSV3_LOG_ERROR); // an accepted file logs its size each time
        snprintf(path, sizeof path, "/tmp/fuzz_token_file.XXXXXX");
        int fd = mkstemp(path);
        if (fd < 0) fuzz_fail("cannot make a scratch file");
        close(fd);
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(file, 1, bytes, f) != bytes || fclose(f) != 0)
        fuzz_fail("cannot write %s", path);
    size_t before = dsv3_alloc_current_bytes();
    Dsv3TokenFile *t = NULL;
    if (dsv3_token_file_open(&t, path, vocab, seq_len) != DSV3_OK) {
        if (t || dsv3_error_message()[0] == '\0') fuzz_fail("refused without a reason");
        if (dsv3_alloc_current_bytes() != before) fuzz_fail("a refused file leaked");
        dsv3_error_clear();
        return 0;
    }
    int64_t tokens = (int64_t)(bytes / 4), width = seq_len + 1, windows = tokens / width;
    if (bytes % 4 != 0 || windows < 1)
        fuzz_fail("accepted %zu bytes for seq_len %lld", bytes, (long long)seq_len);
    int32_t got[FUZZ_MAX_SEQ_LEN + 1];
    for (int64_t w = 0; w <= windows && w <= FUZZ_MAX_WINDOWS; w++) {
        if (dsv3_token_file_window(t, w, got) != DSV3_OK) {
            if (dsv3_error_message()[0] == '\0')
                fuzz_fail("window %lld failed without a reason", (long long)w);
            dsv3_error_clear();
            continue;
        }
        for (int64_t i = 0; i < width; i++) {
            uint32_t want = id_at(file, (w % windows) * width + i);
            if (got[i] < 0 || got[i] >= vocab || (uint32_t)got[i] != want)
                fuzz_fail("window %lld token %lld: read %d, the file holds %u", (long long)w,
                          (long long)i, got[i], want);
        }
    }
    dsv3_token_file_close(t);
    if (dsv3_alloc_current_bytes() != before) fuzz_fail("an opened file leaked");
    return 0;
}
