// text_dataset: a forward-only token stream over text files, cut into windows.
#include "text_dataset.h"

#include <string.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "common/data/text_reader.h"
#include "common/data/tokenizer.h"

struct Dsv3TextDataset {
    Dsv3TextReader *reader;
    Dsv3Tokenizer *tokenizer;
    char *path;
    int64_t seq_len;
    int64_t position;    // next window
    Dsv3TokenIds buffer; // ids not yet in a window start at `head`
    size_t head;
    int64_t passes;           // times the files were read to the end
    int64_t tokens_this_pass; // so an empty corpus is caught instead of looping forever
};

Dsv3Err dsv3_text_dataset_open(Dsv3TextDataset **out, const char *path,
                               const char *tokenizer_folder, int64_t vocab_size, int64_t seq_len) {
    DSV3_CHECK(out && path && tokenizer_folder, DSV3_ERR_USAGE,
               "dsv3_text_dataset_open: NULL argument");
    *out = NULL;
    DSV3_CHECK(path[0] != '\0', DSV3_ERR_CONFIG,
               "training.dataset = \"text\" needs training.dataset_path: a .txt, .jsonl or "
               ".json.gz file, or a "
               "folder of them");
    DSV3_CHECK(seq_len >= 1, DSV3_ERR_CONFIG, "training.seq_len = %lld must be at least 1",
               (long long)seq_len);
    Dsv3TextDataset *d = NULL;
    DSV3_CALL(dsv3_calloc((void **)&d, 1, sizeof *d, "text dataset"));
    Dsv3Err err = DSV3_OK;
    d->seq_len = seq_len;
    DSV3_CALL_GOTO(err, fail, dsv3_strdup(&d->path, path, "text dataset path"));
    DSV3_CALL_GOTO(err, fail, dsv3_tokenizer_load(&d->tokenizer, tokenizer_folder));
    int64_t ids = dsv3_tokenizer_vocab_size(d->tokenizer);
    DSV3_CHECK_GOTO(err, fail, ids <= vocab_size, DSV3_ERR_CONFIG,
                    "the tokenizer in '%s' (model.hf_assets_path) has ids up to %lld, but "
                    "model.vocab_size = %lld: "
                    "set --model.vocab_size to at least %lld",
                    tokenizer_folder, (long long)(ids - 1), (long long)vocab_size, (long long)ids);
    const char *paths[1] = {path};
    DSV3_CALL_GOTO(err, fail, dsv3_text_reader_open(&d->reader, paths, 1, "text", 1));
    DSV3_LOG_INFO(
        "text data %s: %d file(s), tokenizer %s (%lld ids, BOS %d, EOS %d), windows of %lld tokens",
        path, dsv3_text_reader_file_count(d->reader), tokenizer_folder, (long long)ids,
        dsv3_tokenizer_bos_id(d->tokenizer), dsv3_tokenizer_eos_id(d->tokenizer),
        (long long)(seq_len + 1));
    *out = d;
    return DSV3_OK;
fail:
    dsv3_text_dataset_close(d);
    return err;
}

void dsv3_text_dataset_close(Dsv3TextDataset *d) {
    if (!d) return;
    dsv3_text_reader_close(d->reader);
    dsv3_tokenizer_free(d->tokenizer);
    dsv3_token_ids_free(&d->buffer);
    dsv3_free(d->path);
    dsv3_free(d);
}

// Tokenizes documents until the buffer holds a whole window.
static Dsv3Err fill(Dsv3TextDataset *d) {
    size_t want = (size_t)d->seq_len + 1;
    while (d->buffer.count - d->head < want) {
        const char *text;
        size_t length;
        int done;
        DSV3_CALL(dsv3_text_reader_next(d->reader, &text, &length, &done));
        if (done) {
            DSV3_CHECK(d->tokens_this_pass > 0, DSV3_ERR_IO, "text data '%s' holds no document",
                       d->path);
            d->passes++;
            d->tokens_this_pass = 0;
            if (d->passes == 1) {
                int64_t replacements = dsv3_text_reader_replacements(d->reader);
                DSV3_LOG_INFO("text data %s: read to the end (%lld documents, %lld malformed lines "
                              "skipped, %lld replaced by U+FFFD%s%s); reading it again from the "
                              "start",
                              d->path, (long long)dsv3_text_reader_documents(d->reader),
                              (long long)dsv3_text_reader_bad_lines(d->reader),
                              (long long)replacements, replacements ? ", the first at " : "",
                              dsv3_text_reader_first_replacement(d->reader));
            }
            DSV3_CALL(dsv3_text_reader_rewind(d->reader));
            continue;
        }
        // Keep the buffer small: drop the ids already handed out before appending.
        if (d->head > 0 && d->head * 2 >= d->buffer.count) {
            memmove(d->buffer.ids, d->buffer.ids + d->head,
                    (d->buffer.count - d->head) * sizeof *d->buffer.ids);
            d->buffer.count -= d->head;
            d->head = 0;
        }
        size_t before = d->buffer.count;
        int64_t replaced = dsv3_tokenizer_replaced_sequences(d->tokenizer);
        DSV3_CALL(dsv3_tokenizer_encode_document(d->tokenizer, text, length, &d->buffer));
        dsv3_text_reader_count_replacements(
            d->reader, dsv3_tokenizer_replaced_sequences(d->tokenizer) - replaced);
        d->tokens_this_pass += (int64_t)(d->buffer.count - before);
    }
    return DSV3_OK;
}

// Back to window 0: the files from the start, an empty buffer.
static Dsv3Err restart(Dsv3TextDataset *d) {
    DSV3_CALL(dsv3_text_reader_rewind(d->reader));
    d->buffer.count = 0;
    d->head = 0;
    d->position = 0;
    d->passes = 0;
    d->tokens_this_pass = 0;
    return DSV3_OK;
}

Dsv3Err dsv3_text_dataset_window(Dsv3TextDataset *d, int64_t window, int32_t *tokens) {
    DSV3_CHECK(d && tokens, DSV3_ERR_USAGE, "dsv3_text_dataset_window: NULL argument");
    DSV3_CHECK(window >= 0, DSV3_ERR_USAGE, "dsv3_text_dataset_window: window %lld is negative",
               (long long)window);
    if (window < d->position) {
        DSV3_LOG_INFO("text data %s: window %lld is before the stream's position %lld; reading "
                      "again from the "
                      "start",
                      d->path, (long long)window, (long long)d->position);
        DSV3_CALL(restart(d));
    }
    size_t want = (size_t)d->seq_len + 1;
    while (d->position < window) { // skip forward
        DSV3_CALL(fill(d));
        d->head += want;
        d->position++;
    }
    DSV3_CALL(fill(d));
    memcpy(tokens, d->buffer.ids + d->head, want * sizeof *tokens);
    d->head += want;
    d->position++;
    return DSV3_OK;
}

int64_t dsv3_text_dataset_position(const Dsv3TextDataset *d) { return d->position; }
int32_t dsv3_text_dataset_eos_id(const Dsv3TextDataset *d) {
    return dsv3_tokenizer_eos_id(d->tokenizer);
}
int32_t dsv3_text_dataset_bos_id(const Dsv3TextDataset *d) {
    return dsv3_tokenizer_bos_id(d->tokenizer);
}
