// text_reader: file discovery, line reading through zlib, and JSON field extraction.
#include "text_reader.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "json_text.h"

enum {
    READ_CHUNK = 1 << 18,  // bytes per gzread
    GZ_BUFFER = 1 << 17,   // zlib's own input buffer
    BAD_LINES_LOGGED = 10, // the first malformed lines are named; later ones only counted
    PATH_CAPACITY = 4096,
    LOCATION_CAPACITY = PATH_CAPACITY + 32, // "path:line"
};

typedef enum { FORMAT_NONE, FORMAT_TEXT, FORMAT_JSON } Format;

typedef struct {
    char *path;
    Format format;
    int64_t size;
} File;

struct Dsv3TextReader {
    File *files;
    int n_files, capacity_files;
    char *field;
    int skip_bad;
    int current; // file being read, n_files when done
    gzFile gz;
    int64_t line_number;
    int64_t done_bytes; // bytes of the files before `current`
    char *chunk;        // raw bytes read, [chunk_at, chunk_end) not yet consumed
    size_t chunk_at, chunk_end;
    char *line; // the current line
    size_t line_length, line_capacity;
    int eof;
    Dsv3JsonText json; // the decoded field of the current JSON line
    int64_t documents, bad_lines;
    int64_t replacements;                      // U+FFFD put in by us or reported by the caller
    char first_replacement[LOCATION_CAPACITY]; // "path:line" of the first, "" before any
};

static Format format_of(const char *path) {
    size_t n = strlen(path);
    if (n > 3 && strcmp(path + n - 3, ".gz") == 0) n -= 3;
    static const struct {
        const char *suffix;
        Format format;
    } known[] = {{".txt", FORMAT_TEXT}, {".jsonl", FORMAT_JSON}, {".json", FORMAT_JSON}};
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
        size_t s = strlen(known[k].suffix);
        if (n > s && strncmp(path + n - s, known[k].suffix, s) == 0) return known[k].format;
    }
    return FORMAT_NONE;
}

static Dsv3Err add_file(Dsv3TextReader *r, const char *path, Format format, int64_t size) {
    if (r->n_files == r->capacity_files) {
        int cap = r->capacity_files ? 2 * r->capacity_files : 16;
        File *grown = NULL;
        DSV3_CALL(dsv3_calloc((void **)&grown, (size_t)cap, sizeof *grown, "text file list"));
        if (r->n_files) memcpy(grown, r->files, (size_t)r->n_files * sizeof *grown);
        dsv3_free(r->files);
        r->files = grown;
        r->capacity_files = cap;
    }
    File *f = &r->files[r->n_files];
    DSV3_CALL(dsv3_strdup(&f->path, path, "text file path"));
    f->format = format;
    f->size = size;
    r->n_files++;
    return DSV3_OK;
}

static int compare_files(const void *a, const void *b) {
    return strcmp(((const File *)a)->path, ((const File *)b)->path);
}

// Adds every file of a known format under `dir`, recursively, in the order the folder lists
// them (the caller sorts).
static Dsv3Err add_folder(Dsv3TextReader *r, const char *dir) {
    DIR *d = opendir(dir);
    DSV3_CHECK(d, DSV3_ERR_IO, "cannot open folder '%s': %s", dir, strerror(errno));
    Dsv3Err err = DSV3_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue; // ., .. and hidden files (e.g. partial downloads)
        char path[PATH_CAPACITY];
        int len = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        DSV3_CHECK_GOTO(err, done, len > 0 && (size_t)len < sizeof path, DSV3_ERR_IO,
                        "path too long in '%s'", dir);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode))
            DSV3_CALL_GOTO(err, done, add_folder(r, path));
        else if (S_ISREG(st.st_mode) && format_of(path) != FORMAT_NONE)
            DSV3_CALL_GOTO(err, done, add_file(r, path, format_of(path), (int64_t)st.st_size));
    }
done:
    closedir(d);
    return err;
}

Dsv3Err dsv3_text_reader_open(Dsv3TextReader **out, const char *const *paths, int n_paths,
                              const char *field, int skip_bad_lines) {
    DSV3_CHECK(out && paths && n_paths > 0, DSV3_ERR_USAGE, "dsv3_text_reader_open: no paths");
    *out = NULL;
    Dsv3TextReader *r = NULL;
    DSV3_CALL(dsv3_calloc((void **)&r, 1, sizeof *r, "text reader"));
    Dsv3Err err = DSV3_OK;
    r->skip_bad = skip_bad_lines;
    DSV3_CALL_GOTO(err, fail,
                   dsv3_strdup(&r->field, field && *field ? field : "text", "text field"));
    for (int i = 0; i < n_paths; i++) {
        struct stat st;
        DSV3_CHECK_GOTO(
            err, fail, paths[i][0] != '\0', DSV3_ERR_CONFIG,
            "no text path given (training.dataset_path for training.dataset = \"text\"): a .txt, "
            ".jsonl or .json.gz file, or a folder of them");
        DSV3_CHECK_GOTO(err, fail, stat(paths[i], &st) == 0, DSV3_ERR_IO,
                        "cannot open text data '%s': %s", paths[i], strerror(errno));
        if (S_ISDIR(st.st_mode)) {
            int before = r->n_files;
            DSV3_CALL_GOTO(err, fail, add_folder(r, paths[i]));
            DSV3_CHECK_GOTO(err, fail, r->n_files > before, DSV3_ERR_IO,
                            "folder '%s' holds no .txt, .jsonl, .json (or .gz of those) files",
                            paths[i]);
            // Byte order of the whole path: every path of this folder starts with the same
            // "folder/", so this is the byte order of the paths relative to the folder.
            qsort(r->files + before, (size_t)(r->n_files - before), sizeof *r->files,
                  compare_files);
        } else {
            Format f = format_of(paths[i]);
            DSV3_CHECK_GOTO(
                err, fail, f != FORMAT_NONE, DSV3_ERR_IO,
                "'%s' is not a text file of a known format: name it .txt, .jsonl, .json, or any of "
                "those with .gz",
                paths[i]);
            DSV3_CALL_GOTO(err, fail, add_file(r, paths[i], f, (int64_t)st.st_size));
        }
    }
    DSV3_CALL_GOTO(err, fail, dsv3_alloc((void **)&r->chunk, READ_CHUNK, "text read buffer"));
    *out = r;
    return DSV3_OK;
fail:
    dsv3_text_reader_close(r);
    return err;
}

static void close_current(Dsv3TextReader *r) {
    if (r->gz) gzclose(r->gz);
    r->gz = NULL;
}

void dsv3_text_reader_close(Dsv3TextReader *r) {
    if (!r) return;
    close_current(r);
    for (int i = 0; i < r->n_files; i++)
        dsv3_free(r->files[i].path);
    dsv3_free(r->files);
    dsv3_free(r->field);
    dsv3_free(r->chunk);
    dsv3_free(r->line);
    dsv3_json_text_free(&r->json);
    dsv3_free(r);
}

Dsv3Err dsv3_text_reader_rewind(Dsv3TextReader *r) {
    close_current(r);
    r->current = 0;
    r->done_bytes = 0;
    r->chunk_at = r->chunk_end = 0;
    r->eof = 0;
    r->line_number = 0;
    return DSV3_OK;
}

static Dsv3Err line_append(Dsv3TextReader *r, const char *s, size_t n) {
    if (r->line_length + n + 1 > r->line_capacity) {
        size_t cap = r->line_capacity ? r->line_capacity : 4096;
        while (cap < r->line_length + n + 1)
            cap *= 2;
        char *grown = NULL;
        DSV3_CALL(dsv3_alloc((void **)&grown, cap, "text line"));
        if (r->line_length) memcpy(grown, r->line, r->line_length);
        dsv3_free(r->line);
        r->line = grown;
        r->line_capacity = cap;
    }
    memcpy(r->line + r->line_length, s, n);
    r->line_length += n;
    r->line[r->line_length] = '\0';
    return DSV3_OK;
}

// Reads the next line of the current file into r->line (without "\n"); *got = 0 at its end.
static Dsv3Err read_line(Dsv3TextReader *r, int *got) {
    const File *f = &r->files[r->current];
    r->line_length = 0;
    DSV3_CALL(line_append(r, "", 0));
    int any = 0;
    for (;;) {
        if (r->chunk_at == r->chunk_end) {
            if (r->eof) break;
            int n = gzread(r->gz, r->chunk, READ_CHUNK);
            if (n < 0) {
                int code;
                const char *msg = gzerror(r->gz, &code);
                DSV3_RAISE(DSV3_ERR_IO, "cannot read '%s' after line %lld: %s", f->path,
                           (long long)r->line_number, code == Z_ERRNO ? strerror(errno) : msg);
            }
            if (n == 0) {
                r->eof = 1;
                break;
            }
            r->chunk_at = 0;
            r->chunk_end = (size_t)n;
        }
        const char *start = r->chunk + r->chunk_at;
        const char *nl = memchr(start, '\n', r->chunk_end - r->chunk_at);
        size_t take = nl ? (size_t)(nl - start) : r->chunk_end - r->chunk_at;
        DSV3_CALL(line_append(r, start, take));
        any = 1;
        r->chunk_at += take + (nl ? 1 : 0);
        if (nl) break;
    }
    if (!any) {
        *got = 0;
        return DSV3_OK;
    }
    r->line_number++;
    if (r->line_length && r->line[r->line_length - 1] == '\r') r->line[--r->line_length] = '\0';
    *got = 1;
    return DSV3_OK;
}

// A malformed line: an error, or a warning (the first few) and a count.
static Dsv3Err bad_line(Dsv3TextReader *r, const char *why) {
    const File *f = &r->files[r->current];
    DSV3_CHECK(r->skip_bad, DSV3_ERR_IO, "%s:%lld: %s", f->path, (long long)r->line_number, why);
    r->bad_lines++;
    if (r->bad_lines <= BAD_LINES_LOGGED)
        DSV3_LOG_WARN(
            "%s:%lld: %s; skipping the line%s", f->path, (long long)r->line_number, why,
            r->bad_lines == BAD_LINES_LOGGED ? " (further malformed lines are only counted)" : "");
    return DSV3_OK;
}

static int blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

// Extracts the document of a JSON line; *ok = 0 when the line was malformed and skipped.
static Dsv3Err json_document(Dsv3TextReader *r, const char **text, size_t *length, int *ok) {
    char why[DSV3_JSON_TEXT_WHY_CAPACITY];
    DSV3_CALL(dsv3_json_text_field(&r->json, r->line, r->line_length, r->field, ok, why));
    if (!*ok) return bad_line(r, why);
    if (r->json.lone_surrogates) dsv3_text_reader_count_replacements(r, r->json.lone_surrogates);
    *text = r->json.text ? r->json.text : "";
    *length = r->json.length;
    return DSV3_OK;
}
Dsv3Err dsv3_text_reader_next(Dsv3TextReader *r, const char **text, size_t *length, int *done) {
    *done = 0;
    while (r->current < r->n_files) {
        const File *f = &r->files[r->current];
        if (!r->gz) {
            r->gz = gzopen(f->path, "rb");
            DSV3_CHECK(r->gz, DSV3_ERR_IO, "cannot open '%s': %s", f->path, strerror(errno));
            gzbuffer(r->gz, GZ_BUFFER);
            r->eof = 0;
            r->chunk_at = r->chunk_end = 0;
            r->line_number = 0;
        }
        int got = 0;
        DSV3_CALL(read_line(r, &got));
        if (!got) {
            close_current(r);
            r->done_bytes += f->size;
            r->current++;
            continue;
        }
        if (blank(r->line, r->line_length)) continue;
        if (f->format == FORMAT_TEXT) {
            *text = r->line;
            *length = r->line_length;
        } else {
            int ok;
            DSV3_CALL(json_document(r, text, length, &ok));
            if (!ok) continue;
        }
        r->documents++;
        return DSV3_OK;
    }
    *done = 1;
    return DSV3_OK;
}

int dsv3_text_reader_file_count(const Dsv3TextReader *r) { return r->n_files; }
int64_t dsv3_text_reader_documents(const Dsv3TextReader *r) { return r->documents; }
int64_t dsv3_text_reader_bad_lines(const Dsv3TextReader *r) { return r->bad_lines; }

void dsv3_text_reader_count_replacements(Dsv3TextReader *r, int64_t count) {
    if (count <= 0) return;
    if (r->replacements == 0 && r->current < r->n_files)
        snprintf(r->first_replacement, sizeof r->first_replacement, "%s:%lld",
                 r->files[r->current].path, (long long)r->line_number);
    r->replacements += count;
}

int64_t dsv3_text_reader_replacements(const Dsv3TextReader *r) { return r->replacements; }

const char *dsv3_text_reader_first_replacement(const Dsv3TextReader *r) {
    return r->first_replacement;
}

void dsv3_text_reader_progress(const Dsv3TextReader *r, int64_t *read_bytes, int64_t *total_bytes) {
    int64_t total = 0;
    for (int i = 0; i < r->n_files; i++)
        total += r->files[i].size;
    int64_t now = r->done_bytes + (r->gz ? (int64_t)gzoffset(r->gz) : 0);
    *read_bytes = now < total ? now : total;
    *total_bytes = total;
}
