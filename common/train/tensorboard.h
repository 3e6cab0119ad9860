// tensorboard: TensorBoard event files of scalar summaries, written without TensorFlow.
//
// An event file is a sequence of TFRecords: uint64 length (little-endian), the masked CRC32C
// of those 8 bytes, the record bytes, the masked CRC32C of the record. Each record is an
// `Event` protocol buffer (tensorflow/core/util/event.proto): the first carries
// file_version "brain.Event:2", every later one a wall time, a step and a `Summary` of
// scalar values (tag, simple_value). TensorBoard and its Python event readers load these
// files. File names hold "tfevents", which is how TensorBoard finds them. No images,
// histograms or other summary kinds; no MPI.
#ifndef DSV3_TRAIN_TENSORBOARD_H
#define DSV3_TRAIN_TENSORBOARD_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of n bytes.
uint32_t dsv3_crc32c(const void *data, size_t n);

// TFRecord's masked CRC: rotate right by 15, add 0xa282ead8 (so that CRCs of data that holds
// CRCs stay well distributed).
uint32_t dsv3_crc32c_masked(const void *data, size_t n);

typedef struct Dsv3TbWriter Dsv3TbWriter;

// Creates events.out.tfevents.<unix time>.<host>.<pid>.dsv3 in `folder` (which must exist)
// and writes the file-version event.
Dsv3Err dsv3_tb_open(Dsv3TbWriter **out, const char *folder);

// Appends one event at `step` with n scalars (tags[i], values[i], stored as float as
// TensorBoard's simple_value is) and flushes it to the file.
Dsv3Err dsv3_tb_scalars(Dsv3TbWriter *w, int64_t step, const char *const *tags,
                        const double *values, int n);

// The event file's path.
const char *dsv3_tb_path(const Dsv3TbWriter *w);

// NULL-safe.
void dsv3_tb_close(Dsv3TbWriter *w);

#endif
