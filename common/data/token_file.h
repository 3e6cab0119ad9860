// token_file: a pre-tokenized dataset (training.dataset = "tokens") read window by window.
//
// The file (training.dataset_path) is a flat array of little-endian uint32 token ids, as
// numpy's `np.asarray(ids, dtype="<u4").tofile(path)` writes it, with no header. It is cut
// into W = floor(num_tokens / (seq_len + 1)) non-overlapping windows: window w covers tokens
// [w·(seq_len+1), (w+1)·(seq_len+1)) (input = the first seq_len, labels = the last seq_len);
// the last num_tokens mod (seq_len + 1) tokens are never read. A window index >= W wraps to
// w mod W (one log line the first time), so a run may take more windows than the file holds.
//
// Each window is read with pread when asked for: the file is never loaded whole, and any
// window can be read in any order (resume, any data-parallel layout). Every id is checked
// against vocab_size as it is read.
//
// This module does not tokenize, shuffle or shard (the tokenizer tool and the sampler do).
// A Dsv3TokenFile is not thread-safe (it remembers whether it has wrapped).
#ifndef DSV3_DATA_TOKEN_FILE_H
#define DSV3_DATA_TOKEN_FILE_H

#include <stdint.h>

#include "common/core/error.h"

// Bytes per token id in the file.
enum { DSV3_TOKEN_FILE_BYTES_PER_TOKEN = 4 };

typedef struct Dsv3TokenFile Dsv3TokenFile;

// Opens `path` for windows of seq_len + 1 tokens with ids < vocab_size (model.vocab_size, at
// most 2^31 so ids fit int32_t). Fails, naming the file, if it is missing or not a regular
// file, its size is not a multiple of 4 bytes, or it holds fewer than seq_len + 1 tokens.
Dsv3Err dsv3_token_file_open(Dsv3TokenFile **out, const char *path, int64_t vocab_size,
                             int64_t seq_len);

// Closes the file and frees `f`; NULL is ignored.
void dsv3_token_file_close(Dsv3TokenFile *f);

// Reads window `window` (>= 0, wrapping modulo the number of windows) into
// tokens[0 .. seq_len] (seq_len + 1 ids). An id >= vocab_size fails with the file, the byte
// offset and the value.
Dsv3Err dsv3_token_file_window(Dsv3TokenFile *f, int64_t window, int32_t *tokens);

// Tokens in the file, and whole windows (W above).
int64_t dsv3_token_file_num_tokens(const Dsv3TokenFile *f);
int64_t dsv3_token_file_num_windows(const Dsv3TokenFile *f);

#endif
