// token_file: pread of one window at a time, decoded from little-endian in place.
#include "token_file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "common/core/alloc.h"
#include "common/core/log.h"

// Byte offsets of files beyond 2 GiB must fit off_t.
_Static_assert(sizeof(off_t) >= 8, "token files need a 64-bit off_t");

// Largest vocab_size whose ids fit int32_t.
static const int64_t TOKEN_FILE_MAX_VOCAB = (int64_t)INT32_MAX + 1;

struct Dsv3TokenFile {
    int fd;
    char *path;
    int64_t vocab_size;
    int64_t seq_len;
    int64_t num_tokens;
    int64_t num_windows;
    int wrapped; // the first wrap has been logged
};

Dsv3Err dsv3_token_file_open(Dsv3TokenFile **out, const char *path, int64_t vocab_size,
                             int64_t seq_len) {
    DSV3_CHECK(out && path, DSV3_ERR_USAGE, "dsv3_token_file_open: out or path is NULL");
    *out = NULL;
    DSV3_CHECK(path[0] != '\0', DSV3_ERR_CONFIG,
               "training.dataset = \"tokens\" needs training.dataset_path: a file of little-endian "
               "uint32 token ids");
    DSV3_CHECK(vocab_size >= 1 && vocab_size <= TOKEN_FILE_MAX_VOCAB, DSV3_ERR_CONFIG,
               "model.vocab_size = %lld: token ids must fit int32, so it must be in [1, %lld]",
               (long long)vocab_size, (long long)TOKEN_FILE_MAX_VOCAB);
    // The window's byte count must fit size_t and ssize_t (it is read in one pread).
    DSV3_CHECK(seq_len >= 1 && seq_len < INT32_MAX / DSV3_TOKEN_FILE_BYTES_PER_TOKEN,
               DSV3_ERR_CONFIG,
               "training.seq_len = %lld must be in [1, %d] to read token file '%s'",
               (long long)seq_len, INT32_MAX / DSV3_TOKEN_FILE_BYTES_PER_TOKEN - 1, path);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    DSV3_CHECK(fd >= 0, DSV3_ERR_IO, "cannot open token file '%s': %s", path, strerror(errno));
    Dsv3Err err = DSV3_OK;
    Dsv3TokenFile *f = NULL;
    struct stat st;
    DSV3_CHECK_GOTO(err, fail, fstat(fd, &st) == 0, DSV3_ERR_IO, "cannot stat token file '%s': %s",
                    path, strerror(errno));
    DSV3_CHECK_GOTO(err, fail, S_ISREG(st.st_mode), DSV3_ERR_IO,
                    "token file '%s' is not a regular file", path);
    int64_t size = (int64_t)st.st_size;
    DSV3_CHECK_GOTO(
        err, fail, size % DSV3_TOKEN_FILE_BYTES_PER_TOKEN == 0, DSV3_ERR_IO,
        "token file '%s' has %lld bytes, not a multiple of %d: it must hold little-endian "
        "uint32 token ids only (is it truncated?)",
        path, (long long)size, DSV3_TOKEN_FILE_BYTES_PER_TOKEN);
    int64_t num_tokens = size / DSV3_TOKEN_FILE_BYTES_PER_TOKEN;
    DSV3_CHECK_GOTO(
        err, fail, num_tokens >= seq_len + 1, DSV3_ERR_IO,
        "token file '%s' holds %lld tokens, fewer than one window of training.seq_len + 1 "
        "= %lld tokens",
        path, (long long)num_tokens, (long long)(seq_len + 1));

    DSV3_CALL_GOTO(err, fail, dsv3_calloc((void **)&f, 1, sizeof *f, "token file"));
    f->fd = fd;
    f->vocab_size = vocab_size;
    f->seq_len = seq_len;
    f->num_tokens = num_tokens;
    f->num_windows = num_tokens / (seq_len + 1);
    DSV3_CALL_GOTO(err, fail, dsv3_strdup(&f->path, path, "token file path"));
    DSV3_LOG_INFO("token file %s: %lld tokens, %lld windows of %lld tokens (the last %lld tokens "
                  "are never read)",
                  path, (long long)num_tokens, (long long)f->num_windows, (long long)(seq_len + 1),
                  (long long)(num_tokens % (seq_len + 1)));
    *out = f;
    return DSV3_OK;
fail:
    if (f) dsv3_free(f->path);
    dsv3_free(f);
    close(fd);
    return err;
}

void dsv3_token_file_close(Dsv3TokenFile *f) {
    if (!f) return;
    close(f->fd);
    dsv3_free(f->path);
    dsv3_free(f);
}

// Reads `bytes` bytes at `offset`, retrying short reads and interrupts.
static Dsv3Err read_exact(const Dsv3TokenFile *f, unsigned char *dst, size_t bytes,
                          int64_t offset) {
    size_t done = 0;
    while (done < bytes) {
        ssize_t n = pread(f->fd, dst + done, bytes - done, (off_t)(offset + (int64_t)done));
        if (n < 0 && errno == EINTR) continue;
        DSV3_CHECK(n >= 0, DSV3_ERR_IO, "cannot read token file '%s' at byte %lld: %s", f->path,
                   (long long)(offset + (int64_t)done), strerror(errno));
        DSV3_CHECK(n > 0, DSV3_ERR_IO,
                   "token file '%s' ended at byte %lld while reading a window "
                   "(did it shrink after it was opened?)",
                   f->path, (long long)(offset + (int64_t)done));
        done += (size_t)n;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_token_file_window(Dsv3TokenFile *f, int64_t window, int32_t *tokens) {
    DSV3_CHECK(f && tokens, DSV3_ERR_USAGE, "dsv3_token_file_window: file or tokens is NULL");
    DSV3_CHECK(window >= 0, DSV3_ERR_USAGE, "dsv3_token_file_window: window %lld is negative",
               (long long)window);
    if (window >= f->num_windows && !f->wrapped) {
        f->wrapped = 1;
        DSV3_LOG_INFO("token file %s: window %lld is past its %lld windows; reading it again from "
                      "the start (window index modulo %lld)",
                      f->path, (long long)window, (long long)f->num_windows,
                      (long long)f->num_windows);
    }
    int64_t count = f->seq_len + 1;
    int64_t offset = (window % f->num_windows) * count * DSV3_TOKEN_FILE_BYTES_PER_TOKEN;
    // int32_t and the file's uint32 have the same size, so the raw bytes land in the caller's
    // buffer and each id is decoded in place.
    unsigned char *raw = (unsigned char *)tokens;
    DSV3_CALL(read_exact(f, raw, (size_t)count * DSV3_TOKEN_FILE_BYTES_PER_TOKEN, offset));
    for (int64_t i = 0; i < count; i++) {
        const unsigned char *b = raw + i * DSV3_TOKEN_FILE_BYTES_PER_TOKEN;
        uint32_t id =
            (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        DSV3_CHECK(
            (int64_t)id < f->vocab_size, DSV3_ERR_IO,
            "token file '%s': the id at byte offset %lld is %lu, not below model.vocab_size = "
            "%lld (was the file made with another tokenizer?)",
            f->path, (long long)(offset + i * DSV3_TOKEN_FILE_BYTES_PER_TOKEN), (unsigned long)id,
            (long long)f->vocab_size);
        tokens[i] = (int32_t)id;
    }
    return DSV3_OK;
}

int64_t dsv3_token_file_num_tokens(const Dsv3TokenFile *f) { return f->num_tokens; }

int64_t dsv3_token_file_num_windows(const Dsv3TokenFile *f) { return f->num_windows; }
