// manifest: the checkpoint folder protocol — what makes a folder a complete checkpoint.
//
// A checkpoint is the folder <checkpoint dir>/step-N. It is written as step-N.tmp and becomes
// step-N only when complete: every file flushed to disk, then manifest.json (the format
// version, the step, whether it is "full" or "model" only, and every file of the folder with
// its size in bytes and CRC-32) written under a temporary name and renamed, then the folder
// renamed. A folder without a valid manifest, or named *.tmp, is never loaded. Loading checks
// the manifest first — every file present with its size, and the CRC-32s (split over the
// loading ranks) — because a virtual dataset whose source file is missing reads back as fill
// values without any error (DESIGN.md §12).
//
// This module knows files and folders, not tensors or MPI.
#ifndef DSV3_CKPT_MANIFEST_H
#define DSV3_CKPT_MANIFEST_H

#include <stdint.h>

#include "common/core/error.h"

#define DSV3_MANIFEST_NAME "manifest.json"
#define DSV3_CKPT_FORMAT "dsv3-checkpoint"
enum {
    DSV3_CKPT_FORMAT_VERSION = 1,
    DSV3_CKPT_PATH_CAPACITY = 4096 + 128, // a config path plus the names inside a checkpoint
    DSV3_CKPT_KIND_CAPACITY = 16,
};

typedef struct {
    char path[DSV3_CKPT_PATH_CAPACITY]; // relative to the checkpoint folder
    int64_t bytes;
    uint32_t crc32;
} Dsv3ManifestFile;

typedef struct {
    int64_t version;
    int64_t step;
    char kind[DSV3_CKPT_KIND_CAPACITY]; // "full" (model, optimizer, train state) or "model"
    int64_t n_files;
    Dsv3ManifestFile *files;
} Dsv3Manifest;

// Size and CRC-32 of `dir`/`relative`, read in pieces.
Dsv3Err dsv3_manifest_describe(const char *dir, const char *relative, Dsv3ManifestFile *out);

// Appends a described file (the array grows as needed).
Dsv3Err dsv3_manifest_add(Dsv3Manifest *m, const Dsv3ManifestFile *file);

// Writes `dir`/manifest.json atomically (temporary name, fsync, rename, fsync of the folder).
Dsv3Err dsv3_manifest_write(const char *dir, const Dsv3Manifest *m);

// Reads and checks `dir`/manifest.json: format, version, every listed file present with its
// size. Errors name the folder and the first problem.
Dsv3Err dsv3_manifest_read(const char *dir, Dsv3Manifest *out);

// Checks the CRC-32 of files i with i % parts == part (so `parts` readers share the work).
Dsv3Err dsv3_manifest_verify(const char *dir, const Dsv3Manifest *m, int64_t part, int64_t parts);

void dsv3_manifest_free(Dsv3Manifest *m);

// Whether the manifest lists `relative`.
int dsv3_manifest_has(const Dsv3Manifest *m, const char *relative);

// ---- the checkpoint folder ----

// "<root>/step-<step>" and its temporary name "<root>/step-<step>.tmp".
void dsv3_ckpt_step_dir(char out[DSV3_CKPT_PATH_CAPACITY], const char *root, int64_t step, int tmp);

// Makes an empty <root>/step-N.tmp (removing a stale one a crash left) with its shards/ folder.
Dsv3Err dsv3_ckpt_dir_begin(const char *root, int64_t step);

// Renames step-N.tmp to step-N (replacing an older step-N) and flushes the parent folder.
Dsv3Err dsv3_ckpt_dir_commit(const char *root, int64_t step);

enum { DSV3_CKPT_INVALID = -1, DSV3_CKPT_MODEL = 0, DSV3_CKPT_FULL = 1 };

// The step-N folders of `root` (never *.tmp), ascending; kinds[i] says whether its manifest
// reads and what it holds (DSV3_CKPT_*). Both arrays are counted buffers (free with
// dsv3_free). A missing root gives none.
Dsv3Err dsv3_ckpt_list(const char *root, int64_t **steps, int **kinds, int64_t *count);

// Removes all but the newest `keep` valid checkpoints (keep 0: remove none), never the one of
// step `protect` (-1: none) and never a folder whose manifest does not read.
Dsv3Err dsv3_ckpt_retain(const char *root, int64_t keep, int64_t protect);

// Removes a folder and everything in it.
Dsv3Err dsv3_ckpt_remove_tree(const char *path);

#endif
