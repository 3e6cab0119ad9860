// dsv3-tokenize: text files -> a uint32 token file for training.dataset = "tokens".
//
//   dsv3-tokenize --tokenizer DIR --output FILE [--field NAME] [--skip-bad-lines] [--no-progress]
//                 INPUT...
//
// INPUTs are .txt / .jsonl / .json files (or .gz of those) or folders of them, one document per
// line (common/data/text_reader.h). Each document becomes BOS + ids + EOS with the tokenizer
// of DIR (tokenizer.json + tokenizer_config.json), as the "text" dataset does when training,
// and the ids are written as little-endian uint32. The file appears under its final name only
// once complete (it is written to a temporary name beside it, then renamed). A progress bar is
// drawn on a terminal; a summary line ends the run.
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/core/alloc.h"
#include "common/core/format.h"
#include "common/core/log.h"
#include "common/data/text_reader.h"
#include "common/data/tokenizer.h"

enum {
    PATH_CAPACITY = 4096,
    BAR_WIDTH = 30,
    BYTES_PER_ID = 4,
    WRITE_BATCH = 1 << 16, // ids converted and written per fwrite
};

static const double PROGRESS_INTERVAL_SECONDS = 0.2;
static const double MIB = 1024.0 * 1024.0;

static volatile sig_atomic_t interrupted = 0;

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct {
    const char *tokenizer, *output, *field;
    int skip_bad, progress;
    const char **inputs;
    int n_inputs;
} Options;

static void usage(FILE *to) {
    fprintf(
        to,
        "usage: dsv3-tokenize --tokenizer DIR --output FILE [--field NAME] [--skip-bad-lines] "
        "[--no-progress] "
        "INPUT...\n"
        "  --tokenizer DIR    folder with tokenizer.json and tokenizer_config.json "
        "(model.hf_assets_path)\n"
        "  --output FILE      the token file to write (little-endian uint32 ids)\n"
        "  --field NAME       the JSON field holding a document's text (default: text)\n"
        "  --skip-bad-lines   skip malformed JSON lines with a warning instead of stopping\n"
        "  --no-progress      no progress bar, even on a terminal\n"
        "  INPUT              .txt, .jsonl or .json files (or .gz of those), or folders of them\n");
}

// Reads --key VALUE or --key=VALUE at argv[*i]; returns 1 if argv[*i] is that option.
static int option_value(int argc, char **argv, int *i, const char *key, const char **value,
                        int *bad) {
    size_t n = strlen(key);
    if (strncmp(argv[*i], key, n) != 0) return 0;
    if (argv[*i][n] == '=') {
        *value = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0') return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "dsv3-tokenize: %s needs a value\n", key);
        *bad = 1;
        return 1;
    }
    *value = argv[++*i];
    return 1;
}

static int parse_options(int argc, char **argv, Options *o) {
    memset(o, 0, sizeof *o);
    o->field = "text";
    o->progress = isatty(STDERR_FILENO);
    o->inputs = calloc((size_t)argc, sizeof *o->inputs);
    if (!o->inputs) return 2;
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 1;
        }
        if (option_value(argc, argv, &i, "--tokenizer", &o->tokenizer, &bad)) continue;
        if (option_value(argc, argv, &i, "--output", &o->output, &bad)) continue;
        if (option_value(argc, argv, &i, "--field", &o->field, &bad)) continue;
        if (strcmp(argv[i], "--skip-bad-lines") == 0)
            o->skip_bad = 1;
        else if (strcmp(argv[i], "--no-progress") == 0)
            o->progress = 0;
        else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "dsv3-tokenize: unknown option '%s'\n", argv[i]);
            bad = 1;
        } else
            o->inputs[o->n_inputs++] = argv[i];
    }
    if (!bad && (!o->tokenizer || !o->output || o->n_inputs == 0)) {
        fprintf(stderr,
                "dsv3-tokenize: --tokenizer, --output and at least one INPUT are required\n");
        bad = 1;
    }
    if (bad) usage(stderr);
    return bad ? 2 : 0;
}

typedef struct {
    int64_t documents, tokens;
    double start, last_draw;
} Progress;

static void draw(const Dsv3TextReader *r, Progress *p, int final) {
    double now = dsv3_log_seconds();
    if (!final && now - p->last_draw < PROGRESS_INTERVAL_SECONDS) return;
    p->last_draw = now;
    int64_t done, total;
    dsv3_text_reader_progress(r, &done, &total);
    double frac = total > 0 ? (double)done / (double)total : 1.0;
    char bar[BAR_WIDTH + 1];
    int filled = (int)(frac * BAR_WIDTH);
    for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < filled ? '=' : i == filled ? '>' : ' ';
    bar[BAR_WIDTH] = '\0';
    char docs[DSV3_FORMAT_CAPACITY], toks[DSV3_FORMAT_CAPACITY], rate[DSV3_FORMAT_CAPACITY];
    double seconds = now - p->start;
    fprintf(stderr, "\r%3d%% [%s] %.1f / %.1f MiB  %s docs  %s tokens  %s tokens/s ",
            (int)(frac * 100), bar, (double)done / MIB, (double)total / MIB,
            dsv3_format_count(p->documents, docs), dsv3_format_count(p->tokens, toks),
            dsv3_format_count(seconds > 0 ? (int64_t)((double)p->tokens / seconds) : 0, rate));
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

static Dsv3Err write_ids(FILE *out, const char *path, const int32_t *ids, size_t count) {
    static unsigned char bytes[WRITE_BATCH * BYTES_PER_ID];
    for (size_t at = 0; at < count;) {
        size_t n = count - at < WRITE_BATCH ? count - at : WRITE_BATCH;
        for (size_t i = 0; i < n; i++) {
            uint32_t v = (uint32_t)ids[at + i];
            unsigned char *b = bytes + i * BYTES_PER_ID;
            b[0] = (unsigned char)v, b[1] = (unsigned char)(v >> 8),
            b[2] = (unsigned char)(v >> 16), b[3] = (unsigned char)(v >> 24);
        }
        DSV3_CHECK(fwrite(bytes, BYTES_PER_ID, n, out) == n, DSV3_ERR_IO, "cannot write '%s': %s",
                   path, strerror(errno));
        at += n;
    }
    return DSV3_OK;
}

static Dsv3Err tokenize(const Options *o, Dsv3Tokenizer *tok, Dsv3TextReader *reader, FILE *out,
                        const char *tmp, Progress *p) {
    Dsv3TokenIds ids = {0};
    Dsv3Err err = DSV3_OK;
    for (;;) {
        DSV3_CHECK_GOTO(err, done, !interrupted, DSV3_ERR_IO, "interrupted: '%s' was not written",
                        o->output);
        const char *text;
        size_t length;
        int finished;
        DSV3_CALL_GOTO(err, done, dsv3_text_reader_next(reader, &text, &length, &finished));
        if (finished) break;
        ids.count = 0;
        int64_t replaced = dsv3_tokenizer_replaced_sequences(tok);
        DSV3_CALL_GOTO(err, done, dsv3_tokenizer_encode_document(tok, text, length, &ids));
        dsv3_text_reader_count_replacements(reader,
                                            dsv3_tokenizer_replaced_sequences(tok) - replaced);
        DSV3_CALL_GOTO(err, done, write_ids(out, tmp, ids.ids, ids.count));
        p->documents++;
        p->tokens += (int64_t)ids.count;
        if (o->progress) draw(reader, p, 0);
    }
    if (o->progress) draw(reader, p, 1);
done:
    dsv3_token_ids_free(&ids);
    return err;
}

static Dsv3Err run(const Options *o) {
    Dsv3Tokenizer *tok = NULL;
    Dsv3TextReader *reader = NULL;
    FILE *out = NULL;
    char tmp[PATH_CAPACITY];
    int fd = -1;
    Dsv3Err err = DSV3_OK;
    tmp[0] = '\0';
    double t0 = dsv3_log_seconds();
    DSV3_CALL_GOTO(err, done, dsv3_tokenizer_load(&tok, o->tokenizer));
    DSV3_LOG_INFO("tokenizer %s: %lld ids, BOS %d, EOS %d (loaded in %.2f s)", o->tokenizer,
                  (long long)dsv3_tokenizer_vocab_size(tok), dsv3_tokenizer_bos_id(tok),
                  dsv3_tokenizer_eos_id(tok), dsv3_log_seconds() - t0);
    DSV3_CALL_GOTO(err, done,
                   dsv3_text_reader_open(&reader, o->inputs, o->n_inputs, o->field, o->skip_bad));
    int n = snprintf(tmp, sizeof tmp, "%s.partial-XXXXXX", o->output);
    DSV3_CHECK_GOTO(err, done, n > 0 && (size_t)n < sizeof tmp, DSV3_ERR_USAGE,
                    "--output path too long");
    fd = mkstemp(tmp);
    DSV3_CHECK_GOTO(err, done, fd >= 0, DSV3_ERR_IO, "cannot create a file beside '%s': %s",
                    o->output, strerror(errno));
    // mkstemp creates the file private (0600); give it the permissions of a normal new file.
    mode_t mask = umask(0);
    umask(mask);
    DSV3_CHECK_GOTO(err, done, fchmod(fd, 0666 & ~mask) == 0, DSV3_ERR_IO,
                    "cannot set the permissions of '%s': %s", tmp, strerror(errno));
    out = fdopen(fd, "wb");
    DSV3_CHECK_GOTO(err, done, out, DSV3_ERR_IO, "cannot open '%s': %s", tmp, strerror(errno));
    fd = -1;
    Progress p = {.start = dsv3_log_seconds()};
    DSV3_CALL_GOTO(err, done, tokenize(o, tok, reader, out, tmp, &p));
    DSV3_CHECK_GOTO(err, done, fflush(out) == 0 && fsync(fileno(out)) == 0, DSV3_ERR_IO,
                    "cannot write '%s': %s", tmp, strerror(errno));
    int closed = fclose(out);
    out = NULL;
    DSV3_CHECK_GOTO(err, done, closed == 0, DSV3_ERR_IO, "cannot write '%s': %s", tmp,
                    strerror(errno));
    DSV3_CHECK_GOTO(err, done, rename(tmp, o->output) == 0, DSV3_ERR_IO,
                    "cannot rename '%s' to '%s': %s", tmp, o->output, strerror(errno));
    tmp[0] = '\0';
    double seconds = dsv3_log_seconds() - p.start;
    char docs[DSV3_FORMAT_CAPACITY], toks[DSV3_FORMAT_CAPACITY], rate[DSV3_FORMAT_CAPACITY];
    int64_t replacements = dsv3_text_reader_replacements(reader);
    DSV3_LOG_INFO("wrote %s: %s documents, %s tokens (BOS/EOS included) in %.2f s, %s tokens/s; "
                  "%lld malformed lines skipped, %lld replaced by U+FFFD (invalid UTF-8, lone "
                  "surrogate escapes)%s%s; train with training.dataset = \"tokens\", "
                  "model.vocab_size >= %lld",
                  o->output, dsv3_format_count(p.documents, docs),
                  dsv3_format_count(p.tokens, toks), seconds,
                  dsv3_format_count(seconds > 0 ? (int64_t)((double)p.tokens / seconds) : 0, rate),
                  (long long)dsv3_text_reader_bad_lines(reader), (long long)replacements,
                  replacements ? ", the first at " : "", dsv3_text_reader_first_replacement(reader),
                  (long long)dsv3_tokenizer_vocab_size(tok));
done:
    if (out) fclose(out);
    if (fd >= 0) close(fd);
    if (tmp[0]) unlink(tmp); // never leave a partial file behind
    dsv3_text_reader_close(reader);
    dsv3_tokenizer_free(tok);
    return err;
}

int main(int argc, char **argv) {
    dsv3_log_init("tokenize", 0);
    Options o;
    int rc = parse_options(argc, argv, &o);
    if (rc != 0) {
        free(o.inputs);
        return rc == 1 ? 0 : 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    Dsv3Err err = run(&o);
    free(o.inputs);
    if (err != DSV3_OK) {
        DSV3_LOG_ERROR("%s", dsv3_log_level() == DSV3_LOG_DEBUG ? dsv3_error_text()
                                                                : dsv3_error_message());
        return 1;
    }
    return 0;
}
