// tokenizer_driver: encodes and decodes test cases with dsv3's tokenizer for exactness.py.
//
//   tokenizer_driver TOKENIZER_DIR CASES OUT
//
// CASES holds texts as [uint32 length][bytes]...; OUT receives, per case, [uint32 n][n uint32
// ids] then [uint32 length][bytes] of decode(ids) (special tokens kept), all little-endian.
// It checks decode(encode(x)) == x for every case that is valid UTF-8 and prints the encoding
// time of all cases (encode only, one thread) for the throughput comparison.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "common/data/tokenizer.h"

static int read_u32(FILE *f, uint32_t *v) {
    unsigned char b[4];
    if (fread(b, 1, 4, f) != 4) return 0;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 1;
}

static void write_u32(FILE *f, uint32_t v) {
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    fwrite(b, 1, 4, f);
}

static int die(const char *what) {
    fprintf(stderr, "tokenizer_driver: %s\n%s\n", what, dsv3_error_text());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: tokenizer_driver TOKENIZER_DIR CASES OUT\n");
        return 2;
    }
    dsv3_log_init("tokenizer_driver", 0);
    Dsv3Tokenizer *t = NULL;
    if (dsv3_tokenizer_load(&t, argv[1]) != DSV3_OK) return die("load failed");
    FILE *in = fopen(argv[2], "rb"), *out = fopen(argv[3], "wb");
    if (!in || !out) return die("cannot open the case files");
    // Read every case first, so the timing covers encoding only.
    size_t n = 0, cap = 0, total_bytes = 0;
    char **texts = NULL;
    uint32_t *lengths = NULL;
    uint32_t len;
    while (read_u32(in, &len)) {
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            texts = realloc(texts, cap * sizeof *texts);
            lengths = realloc(lengths, cap * sizeof *lengths);
            if (!texts || !lengths) return die("out of memory");
        }
        texts[n] = malloc(len + 1);
        if (!texts[n] || fread(texts[n], 1, len, in) != len) return die("truncated case file");
        lengths[n++] = len;
        total_bytes += len;
    }
    Dsv3TokenIds *ids = calloc(n + 1, sizeof *ids);
    unsigned char *valid = calloc(n + 1, 1); // nothing replaced: the case is valid UTF-8
    if (!ids || !valid) return die("out of memory");
    int64_t replaced_before = dsv3_tokenizer_replaced_sequences(t);
    double start = dsv3_log_seconds();
    size_t total_ids = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t replaced = dsv3_tokenizer_replaced_sequences(t);
        if (dsv3_tokenizer_encode(t, texts[i], lengths[i], &ids[i]) != DSV3_OK)
            return die("encode failed");
        valid[i] = dsv3_tokenizer_replaced_sequences(t) == replaced;
        total_ids += ids[i].count;
    }
    double seconds = dsv3_log_seconds() - start;
    int roundtrip_failures = 0;
    for (size_t i = 0; i < n; i++) {
        char *text = NULL;
        size_t text_length = 0;
        if (dsv3_tokenizer_decode(t, ids[i].ids, ids[i].count, 0, &text, &text_length) != DSV3_OK)
            return die("decode failed");
        if (valid[i] && (text_length != lengths[i] || memcmp(text, texts[i], text_length) != 0)) {
            if (roundtrip_failures++ < 5) fprintf(stderr, "case %zu: decode(encode(x)) != x\n", i);
        }
        write_u32(out, (uint32_t)ids[i].count);
        for (size_t k = 0; k < ids[i].count; k++)
            write_u32(out, (uint32_t)ids[i].ids[k]);
        write_u32(out, (uint32_t)text_length);
        fwrite(text, 1, text_length, out);
        dsv3_free(text);
        dsv3_token_ids_free(&ids[i]);
        free(texts[i]);
    }
    printf("dsv3 encode: %zu cases, %zu bytes, %zu tokens in %.4f s (%.2f MB/s, %.0f tokens/s); "
           "%lld invalid "
           "UTF-8 sequences replaced\n",
           n, total_bytes, total_ids, seconds, (double)total_bytes / seconds / 1e6,
           (double)total_ids / seconds,
           (long long)(dsv3_tokenizer_replaced_sequences(t) - replaced_before));
    free(ids);
    free(valid);
    free(texts);
    free(lengths);
    fclose(in);
    if (fclose(out) != 0) return die("cannot write the output");
    dsv3_tokenizer_free(t);
    if (roundtrip_failures) {
        fprintf(stderr, "%d cases failed decode(encode(x)) == x\n", roundtrip_failures);
        return 1;
    }
    return 0;
}
