// manifest: manifest.json (json-c), CRC-32 (zlib), and the step-N folder life cycle.
#define _XOPEN_SOURCE 700 // nftw
#include "manifest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/core/alloc.h"
#include "common/core/log.h"

// Bytes read at a time for a CRC.
enum { CRC_CHUNK = 4 << 20 };
// Open file descriptors nftw may use while removing a tree.
enum { TREE_FDS = 16 };
static const char STEP_PREFIX[] = "step-", TMP_SUFFIX[] = ".tmp", SHARDS_DIR[] = "shards";

// dir/name; a path too long for the buffer is cut (and then simply not found).
static void join(char out[DSV3_CKPT_PATH_CAPACITY], const char *dir, const char *name) {
    if (snprintf(out, DSV3_CKPT_PATH_CAPACITY, "%s/%s", dir, name) >= DSV3_CKPT_PATH_CAPACITY)
        out[0] = '\0';
}

Dsv3Err dsv3_manifest_describe(const char *dir, const char *relative, Dsv3ManifestFile *out) {
    char path[DSV3_CKPT_PATH_CAPACITY];
    join(path, dir, relative);
    memset(out, 0, sizeof *out);
    snprintf(out->path, sizeof out->path, "%s", relative);
    int fd = open(path, O_RDONLY);
    DSV3_CHECK(fd >= 0, DSV3_ERR_IO, "checkpoint file %s: %s", path, strerror(errno));
    unsigned char *buf = NULL;
    Dsv3Err err = dsv3_alloc((void **)&buf, CRC_CHUNK, "CRC buffer");
    uLong crc = crc32(0L, Z_NULL, 0);
    int64_t total = 0;
    while (err == DSV3_OK) {
        ssize_t got = read(fd, buf, CRC_CHUNK);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0)
            err = dsv3_error_raise(DSV3_ERR_IO, __FILE__, __LINE__, __func__, "cannot read %s: %s",
                                   path, strerror(errno));
        if (got <= 0) break;
        crc = crc32(crc, buf, (uInt)got);
        total += got;
    }
    close(fd);
    dsv3_free(buf);
    if (err != DSV3_OK) return err;
    out->bytes = total;
    out->crc32 = (uint32_t)crc;
    return DSV3_OK;
}

Dsv3Err dsv3_manifest_add(Dsv3Manifest *m, const Dsv3ManifestFile *file) {
    Dsv3ManifestFile *grown = NULL;
    DSV3_CALL(
        dsv3_alloc((void **)&grown, (size_t)(m->n_files + 1) * sizeof *grown, "manifest files"));
    if (m->n_files) memcpy(grown, m->files, (size_t)m->n_files * sizeof *grown);
    grown[m->n_files++] = *file;
    dsv3_free(m->files);
    m->files = grown;
    return DSV3_OK;
}

void dsv3_manifest_free(Dsv3Manifest *m) {
    dsv3_free(m->files);
    m->files = NULL;
    m->n_files = 0;
}

int dsv3_manifest_has(const Dsv3Manifest *m, const char *relative) {
    for (int64_t i = 0; i < m->n_files; i++)
        if (strcmp(m->files[i].path, relative) == 0) return 1;
    return 0;
}

// fsync of a folder, so that a rename in it is on disk.
static Dsv3Err sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    DSV3_CHECK(fd >= 0, DSV3_ERR_IO, "cannot open folder %s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    DSV3_CHECK(rc == 0, DSV3_ERR_IO, "cannot flush folder %s: %s", dir, strerror(errno));
    return DSV3_OK;
}

Dsv3Err dsv3_manifest_write(const char *dir, const Dsv3Manifest *m) {
    json_object *root = json_object_new_object(), *files = json_object_new_array();
    DSV3_CHECK(root && files, DSV3_ERR_MEMORY, "cannot build the manifest of %s", dir);
    json_object_object_add(root, "format", json_object_new_string(DSV3_CKPT_FORMAT));
    json_object_object_add(root, "format_version", json_object_new_int64(DSV3_CKPT_FORMAT_VERSION));
    json_object_object_add(root, "step", json_object_new_int64(m->step));
    json_object_object_add(root, "kind", json_object_new_string(m->kind));
    for (int64_t i = 0; i < m->n_files; i++) {
        json_object *f = json_object_new_object();
        json_object_object_add(f, "path", json_object_new_string(m->files[i].path));
        json_object_object_add(f, "bytes", json_object_new_int64(m->files[i].bytes));
        json_object_object_add(f, "crc32", json_object_new_int64(m->files[i].crc32));
        json_object_array_add(files, f);
    }
    json_object_object_add(root, "files", files);
    const char *text = json_object_to_json_string_ext(
        root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);
    char tmp[DSV3_CKPT_PATH_CAPACITY], final[DSV3_CKPT_PATH_CAPACITY];
    join(tmp, dir, DSV3_MANIFEST_NAME ".tmp");
    join(final, dir, DSV3_MANIFEST_NAME);
    Dsv3Err err = DSV3_OK;
    FILE *f = fopen(tmp, "w");
    if (!f)
        err = dsv3_error_raise(DSV3_ERR_IO, __FILE__, __LINE__, __func__, "cannot create %s: %s",
                               tmp, strerror(errno));
    if (f) {
        int ok =
            fputs(text, f) >= 0 && fputc('\n', f) != EOF && fflush(f) == 0 && fsync(fileno(f)) == 0;
        ok = (fclose(f) == 0) && ok;
        if (!ok)
            err = dsv3_error_raise(DSV3_ERR_IO, __FILE__, __LINE__, __func__, "cannot write %s: %s",
                                   tmp, strerror(errno));
    }
    json_object_put(root);
    if (err != DSV3_OK) return err;
    DSV3_CHECK(rename(tmp, final) == 0, DSV3_ERR_IO, "cannot rename %s to %s: %s", tmp, final,
               strerror(errno));
    return sync_dir(dir);
}

static Dsv3Err field_int(json_object *obj, const char *key, const char *where, int64_t *out) {
    json_object *v = NULL;
    DSV3_CHECK(json_object_object_get_ex(obj, key, &v) && json_object_get_type(v) == json_type_int,
               DSV3_ERR_USAGE, "%s: \"%s\" is missing or not an integer", where, key);
    *out = json_object_get_int64(v);
    return DSV3_OK;
}

static Dsv3Err parse_manifest(json_object *root, const char *path, const char *dir,
                              Dsv3Manifest *m) {
    json_object *v = NULL, *files = NULL;
    DSV3_CHECK(json_object_get_type(root) == json_type_object &&
                   json_object_object_get_ex(root, "format", &v) &&
                   strcmp(json_object_get_string(v), DSV3_CKPT_FORMAT) == 0,
               DSV3_ERR_USAGE, "%s is not a dsv3 checkpoint manifest (\"format\": \"%s\" expected)",
               path, DSV3_CKPT_FORMAT);
    DSV3_CALL(field_int(root, "format_version", path, &m->version));
    DSV3_CHECK(m->version == DSV3_CKPT_FORMAT_VERSION, DSV3_ERR_USAGE,
               "%s has format version %" PRId64 "; this dsv3 reads version %d", path, m->version,
               DSV3_CKPT_FORMAT_VERSION);
    DSV3_CALL(field_int(root, "step", path, &m->step));
    DSV3_CHECK(json_object_object_get_ex(root, "kind", &v) &&
                   json_object_get_type(v) == json_type_string &&
                   (strcmp(json_object_get_string(v), "full") == 0 ||
                    strcmp(json_object_get_string(v), "model") == 0),
               DSV3_ERR_USAGE, "%s: \"kind\" must be \"full\" or \"model\"", path);
    snprintf(m->kind, sizeof m->kind, "%s", json_object_get_string(v));
    DSV3_CHECK(json_object_object_get_ex(root, "files", &files) &&
                   json_object_get_type(files) == json_type_array,
               DSV3_ERR_USAGE, "%s: \"files\" is missing", path);
    for (size_t i = 0; i < json_object_array_length(files); i++) {
        json_object *f = json_object_array_get_idx(files, i), *p = NULL;
        Dsv3ManifestFile entry = {0};
        int64_t crc = 0;
        DSV3_CHECK(json_object_get_type(f) == json_type_object &&
                       json_object_object_get_ex(f, "path", &p) &&
                       json_object_get_type(p) == json_type_string,
                   DSV3_ERR_USAGE, "%s: files[%zu] has no path", path, i);
        snprintf(entry.path, sizeof entry.path, "%s", json_object_get_string(p));
        DSV3_CHECK(entry.path[0] != '/' && !strstr(entry.path, ".."), DSV3_ERR_USAGE,
                   "%s: file %s is not inside the checkpoint folder", path, entry.path);
        DSV3_CALL(field_int(f, "bytes", path, &entry.bytes));
        DSV3_CALL(field_int(f, "crc32", path, &crc));
        entry.crc32 = (uint32_t)crc;
        char full[DSV3_CKPT_PATH_CAPACITY];
        join(full, dir, entry.path);
        struct stat st;
        DSV3_CHECK(stat(full, &st) == 0, DSV3_ERR_IO,
                   "checkpoint %s is incomplete: %s is missing (%s)", dir, entry.path,
                   strerror(errno));
        DSV3_CHECK((int64_t)st.st_size == entry.bytes, DSV3_ERR_IO,
                   "checkpoint %s is damaged: %s has %" PRId64
                   " bytes but the manifest says %" PRId64 " (truncated?)",
                   dir, entry.path, (int64_t)st.st_size, entry.bytes);
        DSV3_CALL(dsv3_manifest_add(m, &entry));
    }
    return DSV3_OK;
}

Dsv3Err dsv3_manifest_read(const char *dir, Dsv3Manifest *out) {
    memset(out, 0, sizeof *out);
    char path[DSV3_CKPT_PATH_CAPACITY];
    join(path, dir, DSV3_MANIFEST_NAME);
    struct stat st;
    DSV3_CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode), DSV3_ERR_IO,
               "checkpoint folder %s does not exist", dir);
    DSV3_CHECK(stat(path, &st) == 0, DSV3_ERR_IO,
               "%s has no %s: not a complete dsv3 checkpoint (a save that never finished?)", dir,
               DSV3_MANIFEST_NAME);
    json_object *root = json_object_from_file(path);
    DSV3_CHECK(root, DSV3_ERR_USAGE, "%s is not valid JSON: %s", path, json_util_get_last_err());
    Dsv3Err err = parse_manifest(root, path, dir, out);
    json_object_put(root);
    if (err != DSV3_OK) {
        dsv3_manifest_free(out);
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    return DSV3_OK;
}

Dsv3Err dsv3_manifest_verify(const char *dir, const Dsv3Manifest *m, int64_t part, int64_t parts) {
    for (int64_t i = part; i < m->n_files; i += parts) {
        Dsv3ManifestFile now;
        DSV3_CALL(dsv3_manifest_describe(dir, m->files[i].path, &now));
        DSV3_CHECK(now.bytes == m->files[i].bytes && now.crc32 == m->files[i].crc32, DSV3_ERR_IO,
                   "checkpoint %s is corrupt: %s has CRC-32 %08x but the manifest says %08x", dir,
                   m->files[i].path, now.crc32, m->files[i].crc32);
    }
    return DSV3_OK;
}

// ---- folders ----

void dsv3_ckpt_step_dir(char out[DSV3_CKPT_PATH_CAPACITY], const char *root, int64_t step,
                        int tmp) {
    if (snprintf(out, DSV3_CKPT_PATH_CAPACITY, "%s/%s%" PRId64 "%s", root, STEP_PREFIX, step,
                 tmp ? TMP_SUFFIX : "") >= DSV3_CKPT_PATH_CAPACITY)
        out[0] = '\0';
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

Dsv3Err dsv3_ckpt_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0 && errno == ENOENT) return DSV3_OK;
    DSV3_CHECK(nftw(path, remove_entry, TREE_FDS, FTW_DEPTH | FTW_PHYS) == 0, DSV3_ERR_IO,
               "cannot remove %s: %s", path, strerror(errno));
    return DSV3_OK;
}

// mkdir -p for the checkpoint root (dump_folder/folder).
static Dsv3Err make_dirs(const char *path) {
    char buf[DSV3_CKPT_PATH_CAPACITY];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        DSV3_CHECK(mkdir(buf, 0777) == 0 || errno == EEXIST, DSV3_ERR_IO,
                   "cannot create folder %s: %s", buf, strerror(errno));
        *p = '/';
    }
    DSV3_CHECK(mkdir(buf, 0777) == 0 || errno == EEXIST, DSV3_ERR_IO, "cannot create folder %s: %s",
               buf, strerror(errno));
    return DSV3_OK;
}

Dsv3Err dsv3_ckpt_dir_begin(const char *root, int64_t step) {
    char tmp[DSV3_CKPT_PATH_CAPACITY], shards[DSV3_CKPT_PATH_CAPACITY];
    DSV3_CALL(make_dirs(root));
    dsv3_ckpt_step_dir(tmp, root, step, 1);
    DSV3_CALL(dsv3_ckpt_remove_tree(tmp));
    DSV3_CHECK(mkdir(tmp, 0777) == 0, DSV3_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    join(shards, tmp, SHARDS_DIR);
    DSV3_CHECK(mkdir(shards, 0777) == 0, DSV3_ERR_IO, "cannot create %s: %s", shards,
               strerror(errno));
    return DSV3_OK;
}

Dsv3Err dsv3_ckpt_dir_commit(const char *root, int64_t step) {
    char tmp[DSV3_CKPT_PATH_CAPACITY], final[DSV3_CKPT_PATH_CAPACITY],
        old[DSV3_CKPT_PATH_CAPACITY + 16];
    dsv3_ckpt_step_dir(tmp, root, step, 1);
    dsv3_ckpt_step_dir(final, root, step, 0);
    struct stat st;
    int replace = stat(final, &st) == 0;
    if (replace) { // a step-N of an earlier run: moved aside (still *.tmp, so never loaded), then
                   // removed
        snprintf(old, sizeof old, "%s.replaced%s", final, TMP_SUFFIX);
        DSV3_CALL(dsv3_ckpt_remove_tree(old));
        DSV3_CHECK(rename(final, old) == 0, DSV3_ERR_IO, "cannot move %s aside: %s", final,
                   strerror(errno));
    }
    DSV3_CHECK(rename(tmp, final) == 0, DSV3_ERR_IO, "cannot rename %s to %s: %s", tmp, final,
               strerror(errno));
    DSV3_CALL(sync_dir(root));
    if (replace) DSV3_CALL(dsv3_ckpt_remove_tree(old));
    return DSV3_OK;
}

// "step-<digits>" exactly; -1 otherwise.
static int64_t step_of(const char *name) {
    size_t n = strlen(STEP_PREFIX);
    if (strncmp(name, STEP_PREFIX, n) != 0 || !name[n]) return -1;
    int64_t v = 0;
    for (const char *p = name + n; *p; p++) {
        if (*p < '0' || *p > '9' || v > INT64_MAX / 10 - 9) return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

static int compare_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

Dsv3Err dsv3_ckpt_list(const char *root, int64_t **steps, int **full, int64_t *count) {
    *steps = NULL, *full = NULL, *count = 0;
    DIR *d = opendir(root);
    if (!d && errno == ENOENT) return DSV3_OK;
    DSV3_CHECK(d, DSV3_ERR_IO, "cannot read checkpoint folder %s: %s", root, strerror(errno));
    int64_t capacity = 0, n = 0, *found = NULL;
    Dsv3Err err = DSV3_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && err == DSV3_OK) {
        int64_t step = step_of(e->d_name);
        if (step < 0) continue;
        if (n == capacity) {
            int64_t *grown = NULL;
            capacity = capacity ? 2 * capacity : 16;
            err = dsv3_alloc((void **)&grown, (size_t)capacity * sizeof *grown, "checkpoint list");
            if (err != DSV3_OK) break;
            if (n) memcpy(grown, found, (size_t)n * sizeof *grown);
            dsv3_free(found);
            found = grown;
        }
        found[n++] = step;
    }
    closedir(d);
    if (err == DSV3_OK && n) qsort(found, (size_t)n, sizeof *found, compare_i64);
    int *kinds = NULL;
    if (err == DSV3_OK)
        err = dsv3_calloc((void **)&kinds, (size_t)(n ? n : 1), sizeof *kinds, "checkpoint kinds");
    for (int64_t i = 0; i < n && err == DSV3_OK; i++) {
        char dir[DSV3_CKPT_PATH_CAPACITY];
        dsv3_ckpt_step_dir(dir, root, found[i], 0);
        Dsv3Manifest m;
        if (dsv3_manifest_read(dir, &m) != DSV3_OK) { // a step-N folder that is no checkpoint
            kinds[i] = DSV3_CKPT_INVALID;
            dsv3_error_clear();
            continue;
        }
        kinds[i] = strcmp(m.kind, "full") == 0 ? DSV3_CKPT_FULL : DSV3_CKPT_MODEL;
        dsv3_manifest_free(&m);
    }
    if (err != DSV3_OK) {
        dsv3_free(found);
        dsv3_free(kinds);
        return err;
    }
    *steps = found, *full = kinds, *count = n;
    return DSV3_OK;
}

// Renames a committed step-N aside (*.tmp: never loaded) before removing its files, so that
// a crash during the removal leaves no step-N without its manifest or with part of its files.
static Dsv3Err remove_atomically(const char *dir) {
    char aside[DSV3_CKPT_PATH_CAPACITY + 16];
    snprintf(aside, sizeof aside, "%s.removed%s", dir, TMP_SUFFIX);
    DSV3_CALL(dsv3_ckpt_remove_tree(aside));
    DSV3_CHECK(rename(dir, aside) == 0, DSV3_ERR_IO, "cannot move %s aside to remove it: %s", dir,
               strerror(errno));
    return dsv3_ckpt_remove_tree(aside);
}

Dsv3Err dsv3_ckpt_retain(const char *root, int64_t keep, int64_t protect) {
    if (keep <= 0) return DSV3_OK;
    int64_t *steps = NULL, count = 0;
    int *full = NULL;
    DSV3_CALL(dsv3_ckpt_list(root, &steps, &full, &count));
    Dsv3Err err = DSV3_OK;
    int64_t valid = 0;
    for (int64_t i = 0; i < count; i++)
        valid += full[i] != DSV3_CKPT_INVALID;
    // The oldest valid - keep are candidates; the newest `keep` always stay.
    for (int64_t i = 0, seen = 0; i < count && seen < valid - keep && err == DSV3_OK; i++) {
        if (full[i] == DSV3_CKPT_INVALID) continue;
        seen++;
        if (steps[i] == protect) continue;
        char dir[DSV3_CKPT_PATH_CAPACITY];
        dsv3_ckpt_step_dir(dir, root, steps[i], 0);
        DSV3_LOG_INFO("checkpoint: removing %s (keep_latest_k %" PRId64 ")", dir, keep);
        err = remove_atomically(dir);
    }
    dsv3_free(steps);
    dsv3_free(full);
    return err;
}
