// tokenizer: Hugging Face byte-level BPE tokenizers (tokenizer.json + tokenizer_config.json),
// such as DeepSeek-V3's and deepseek-moe-16b's, giving the same ids as the `tokenizers` library.
//
// Encoding a text runs, as `tokenizers` does with add_special_tokens=False:
//   1. invalid UTF-8 is replaced by U+FFFD, one per maximal invalid subpart (as Python's
//      bytes.decode("utf-8", "replace") does), so any byte string can be encoded;
//   2. added tokens (tokenizer.json "added_tokens", special or not) are cut out first: leftmost,
//      then longest match; those with "normalized": false over the text, then those with
//      "normalized": true over the pieces between;
//   3. the pre-tokenizer splits each remaining piece: a "Sequence" of "Split" (regex or string
//      patterns, every behavior, invert), "Digits" and a final "ByteLevel";
//   4. the BPE model merges each pre-token's bytes by rank (a priority queue per word, and a
//      cache of recent words), honouring "ignore_merges".
// Decoding maps ids back to bytes through the "ByteLevel" decoder: decode(encode(x)) == x for
// every valid UTF-8 x.
//
// Supported in tokenizer.json: normalizer null or an empty "Sequence"; the pre-tokenizers
// above (ByteLevel with add_prefix_space false); model "BPE" (merges as "a b" strings or
// ["a", "b"] pairs, no dropout, no subword prefix/suffix); post-processor null or "ByteLevel"
// (it only moves offsets); decoder "ByteLevel". Regexes are Oniguruma's (as `tokenizers`
// compiles them); they run on PCRE2 with Unicode properties after translating the escapes
// whose meaning differs (\s \S \h \H; ^ and $ match at line ends). Anything else is an error
// that names its JSON path (`pre_tokenizer.pretokenizers[1].type = "Metaspace" is not
// supported`), never a silent difference.
//
// tokenizer_config.json gives bos_token and eos_token (a string or an AddedToken object);
// documents are encoded as BOS + text + EOS, as torchtitan's text datasets do.
//
// Not here: training tokenizers, normalizers that change text, unigram/wordpiece models,
// offsets, padding and truncation. A Dsv3Tokenizer is not thread-safe (its word cache and
// scratch buffers change during encode); use one per thread.
#ifndef DSV3_DATA_TOKENIZER_H
#define DSV3_DATA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"

typedef struct Dsv3Tokenizer Dsv3Tokenizer;

// A growable list of token ids (owned; free with dsv3_token_ids_free).
typedef struct {
    int32_t *ids;
    size_t count, capacity;
} Dsv3TokenIds;

void dsv3_token_ids_free(Dsv3TokenIds *ids);

// Appends one id, growing the list.
Dsv3Err dsv3_token_ids_push(Dsv3TokenIds *ids, int32_t id);

// Loads `folder`/tokenizer.json and `folder`/tokenizer_config.json (the latter may be
// missing: then there is no BOS or EOS). Fails naming the file and the JSON path of anything
// malformed or unsupported.
Dsv3Err dsv3_tokenizer_load(Dsv3Tokenizer **out, const char *folder);

// The same from explicit files; config_path may be NULL.
Dsv3Err dsv3_tokenizer_load_files(Dsv3Tokenizer **out, const char *tokenizer_path,
                                  const char *config_path);

// The same from tokenizer.json's text in memory (json[0 .. length), any bytes); `name` stands
// for the file in messages. No tokenizer_config.json: no BOS or EOS.
Dsv3Err dsv3_tokenizer_load_json(Dsv3Tokenizer **out, const char *name, const char *json,
                                 size_t length);

void dsv3_tokenizer_free(Dsv3Tokenizer *t);

// Appends the ids of text[0 .. length) (any bytes) to `out`; no BOS or EOS.
Dsv3Err dsv3_tokenizer_encode(Dsv3Tokenizer *t, const char *text, size_t length, Dsv3TokenIds *out);

// Appends BOS (if the tokenizer has one), the ids of the text, then EOS (if it has one).
Dsv3Err dsv3_tokenizer_encode_document(Dsv3Tokenizer *t, const char *text, size_t length,
                                       Dsv3TokenIds *out);

// Decodes ids into *out (NUL-terminated, counted allocation; *length excludes the NUL).
// skip_special leaves out added tokens marked "special". An id with no token is an error.
Dsv3Err dsv3_tokenizer_decode(const Dsv3Tokenizer *t, const int32_t *ids, size_t count,
                              int skip_special, char **out, size_t *length);

// One past the largest id (model vocabulary and added tokens): model.vocab_size must be at
// least this.
int64_t dsv3_tokenizer_vocab_size(const Dsv3Tokenizer *t);

// BOS / EOS ids from tokenizer_config.json, -1 when there is none.
int32_t dsv3_tokenizer_bos_id(const Dsv3Tokenizer *t);
int32_t dsv3_tokenizer_eos_id(const Dsv3Tokenizer *t);

// The id of a token given as its text (an added token's content, or a model token's bytes),
// -1 when there is none.
int32_t dsv3_tokenizer_token_id(const Dsv3Tokenizer *t, const char *text, size_t length);

// The EOS id of the tokenizer in `folder` (model.hf_assets_path), for block-causal masks over a
// token file; *eos_id = -1 when the folder has no tokenizer.json (not an error) or no eos_token.
Dsv3Err dsv3_tokenizer_folder_eos_id(const char *folder, int32_t *eos_id);

// Invalid UTF-8 sequences replaced since the tokenizer was loaded (each became U+FFFD).
int64_t dsv3_tokenizer_replaced_sequences(const Dsv3Tokenizer *t);

#endif
