// text_reader: documents from text files, one document per line, for dsv3-tokenize and the
// "text" training dataset.
//
// Formats, by file name (any of them may end in .gz; zlib reads those, and plain files too):
//   .txt              every line that is not blank is a document (without its "\n" or "\r\n")
//   .jsonl, .json     JSON lines: every non-blank line is an object whose `field` (default
//                     "text") is the document, as in C4's .json.gz shards
// A path may be a file or a folder; a folder contributes every file of those formats under it,
// recursively, in byte order (strcmp) of their whole paths relative to the folder, so
// "a.txt" comes before "a/b.txt" ('.' < '/') and "B.txt" before "a.txt"; other files and names
// starting with '.' are ignored. Several paths are read in the order given.
//
// JSON lines are strict JSON, decoded as Python's json.loads does (json_text.h). A malformed
// line (not JSON, not an object, `field` missing or not a string) is reported as file:line with
// the reason, and either skipped with a warning (skip_bad_lines) or an error.
//
// Replacements: a lone surrogate escape becomes U+FFFD (json_text.h) and is counted here; the
// caller adds those its tokenizer makes (invalid UTF-8), so one count and the file:line of the
// first replacement cover both.
//
// Not here: tokenizing (tokenizer.h), shuffling, sharding, seeking to a byte offset.
#ifndef DSV3_DATA_TEXT_READER_H
#define DSV3_DATA_TEXT_READER_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"

typedef struct Dsv3TextReader Dsv3TextReader;

// Opens the given files/folders. Fails naming the path if one is missing, is a file of an
// unknown format, or if no file of a known format is found at all.
Dsv3Err dsv3_text_reader_open(Dsv3TextReader **out, const char *const *paths, int n_paths,
                              const char *field, int skip_bad_lines);

void dsv3_text_reader_close(Dsv3TextReader *r);

// The next document into *text (*length bytes, not NUL-terminated, valid until the next call);
// *done = 1 and no document once the last file is finished.
Dsv3Err dsv3_text_reader_next(Dsv3TextReader *r, const char **text, size_t *length, int *done);

// Starts again at the first line of the first file.
Dsv3Err dsv3_text_reader_rewind(Dsv3TextReader *r);

// Files found, documents returned and malformed lines skipped since opening.
int dsv3_text_reader_file_count(const Dsv3TextReader *r);
int64_t dsv3_text_reader_documents(const Dsv3TextReader *r);
int64_t dsv3_text_reader_bad_lines(const Dsv3TextReader *r);

// Adds `count` replacements (U+FFFD) made in the document last returned; the first one's
// file:line is remembered.
void dsv3_text_reader_count_replacements(Dsv3TextReader *r, int64_t count);

// Replacements since opening (lone surrogate escapes and those the caller counted), and
// "file:line" of the first ("" when there was none).
int64_t dsv3_text_reader_replacements(const Dsv3TextReader *r);
const char *dsv3_text_reader_first_replacement(const Dsv3TextReader *r);

// Bytes of the files (as stored, compressed or not) read so far, and their total size.
void dsv3_text_reader_progress(const Dsv3TextReader *r, int64_t *read_bytes, int64_t *total_bytes);

#endif
