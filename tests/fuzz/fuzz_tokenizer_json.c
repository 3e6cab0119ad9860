// fuzz_tokenizer_json: libFuzzer harness for the tokenizer.json loader (common/data/tokenizer*).
//
// Every input is the text of a tokenizer.json, loaded from memory (dsv3_tokenizer_load_json,
// the loader that dsv3_tokenizer_load runs on the file's bytes). A rejected file must say why
// and leave no counted bytes. An accepted one encodes a fixed text (ASCII words and spaces,
// digits, an added token's look-alike, accented and CJK letters, an emoji and invalid UTF-8)
// and the input's own first bytes, each twice (the second time through the word cache, giving
// the same ids); every id is below the vocabulary size and decodes, with and without special
// tokens; then it is freed, leaving no counted bytes. Any broken expectation aborts, which
// libFuzzer reports. The same file also builds with gcc for tests/fuzz/replay_main.c.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/error.h"
#include "common/core/log.h"
#include "common/data/tokenizer.h"
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// Bytes of the input also encoded as text: enough for a few words of the vocabulary it defines.
enum { FUZZ_OWN_TEXT_BYTES = 256 };

static const char FIXED_TEXT[] = "Hello  world\n\t123 4567 <s>x don't caf\xc3\xa9 \xe4\xb8\xad\xe6"
                                 "\x96\x87 \xf0\x9f\x98\x80 \xff\xfe ab abc aaa";

// Encodes text twice (the second time from the cache) and decodes the ids both ways.
static void encode_decode(Dsv3Tokenizer *t, const char *text, size_t length) {
    Dsv3TokenIds first = {0}, again = {0};
    if (dsv3_tokenizer_encode(t, text, length, &first) != DSV3_OK ||
        dsv3_tokenizer_encode(t, text, length, &again) != DSV3_OK)
        fuzz_fail("encoding failed: %s", dsv3_error_message());
    if (first.count != again.count ||
        (first.count && memcmp(first.ids, again.ids, first.count * sizeof *first.ids) != 0))
        fuzz_fail("the same text encoded twice gave %zu and %zu different ids", first.count,
                  again.count);
    int64_t vocab = dsv3_tokenizer_vocab_size(t);
    for (size_t i = 0; i < first.count; i++)
        if (first.ids[i] < 0 || first.ids[i] >= vocab)
            fuzz_fail("id %d outside the vocabulary of %lld", first.ids[i], (long long)vocab);
    for (int skip_special = 0; skip_special < 2; skip_special++) {
        char *decoded = NULL;
        size_t decoded_length = 0;
        if (dsv3_tokenizer_decode(t, first.ids, first.count, skip_special, &decoded,
                                  &decoded_length) != DSV3_OK)
            fuzz_fail("decoding its own ids failed: %s", dsv3_error_message());
        if (strlen(decoded) > decoded_length) fuzz_fail("decoded text longer than its length");
        dsv3_free(decoded);
    }
    dsv3_token_ids_free(&first);
    dsv3_token_ids_free(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dsv3_log_set_level(DSV3_LOG_ERROR); // regexes warn about Unicode versions each time
    size_t before = dsv3_alloc_current_bytes();
    Dsv3Tokenizer *t = NULL;
    if (dsv3_tokenizer_load_json(&t, "tokenizer.json", (const char *)data, size) != DSV3_OK) {
        if (t || dsv3_error_message()[0] == '\0') fuzz_fail("refused without a reason");
        if (dsv3_alloc_current_bytes() != before) fuzz_fail("a refused tokenizer leaked");
        dsv3_error_clear();
        return 0;
    }
    encode_decode(t, FIXED_TEXT, sizeof FIXED_TEXT - 1);
    encode_decode(t, (const char *)data, size < FUZZ_OWN_TEXT_BYTES ? size : FUZZ_OWN_TEXT_BYTES);
    dsv3_tokenizer_free(t);
    if (dsv3_alloc_current_bytes() != before) fuzz_fail("an accepted tokenizer leaked");
    return 0;
}
