// text_dataset: training.dataset = "text": documents from text files (text_reader.h),
// tokenized on the fly and packed into windows of seq_len + 1 tokens.
//
// As torchtitan's text datasets: every document becomes BOS + its ids + EOS (the tokens of
// tokenizer_config.json, when it names them); the ids of consecutive documents are concatenated
// into one stream, which is cut into non-overlapping windows of seq_len + 1 tokens (input = the
// first seq_len, labels = the last seq_len), so a document may span windows and a window may
// hold several documents (the EOS id marks where they meet, for block-causal masks). When the
// last file ends the files are read again from the start and the stream goes on (one log line).
//
// Position. The stream is read forward only; its position is one number, the index of the next
// window. Asking for a later window skips (tokenizes and drops) the windows before it; asking
// for an earlier one starts again from the beginning. A checkpoint saves the position and a
// resumed run asks for that window: the windows are the same as in an uninterrupted run.
//
// Not here: shuffling, and splitting the files between several readers.
#ifndef DSV3_DATA_TEXT_DATASET_H
#define DSV3_DATA_TEXT_DATASET_H

#include <stdint.h>

#include "common/core/error.h"

typedef struct Dsv3TextDataset Dsv3TextDataset;

// Opens `path` (a file or folder, text_reader.h) with the tokenizer in `tokenizer_folder`
// (model.hf_assets_path). Fails if the tokenizer has ids >= vocab_size (model.vocab_size) or the
// files hold no document. JSON lines use the "text" field; malformed lines are skipped with a
// warning naming file:line.
Dsv3Err dsv3_text_dataset_open(Dsv3TextDataset **out, const char *path,
                               const char *tokenizer_folder, int64_t vocab_size, int64_t seq_len);

void dsv3_text_dataset_close(Dsv3TextDataset *d);

// Writes window `window` (>= 0) into tokens[0 .. seq_len] (seq_len + 1 ids).
Dsv3Err dsv3_text_dataset_window(Dsv3TextDataset *d, int64_t window, int32_t *tokens);

// The index of the next window the stream will produce (0 after opening).
int64_t dsv3_text_dataset_position(const Dsv3TextDataset *d);

// EOS / BOS ids of the tokenizer (-1: none).
int32_t dsv3_text_dataset_eos_id(const Dsv3TextDataset *d);
int32_t dsv3_text_dataset_bos_id(const Dsv3TextDataset *d);

#endif
