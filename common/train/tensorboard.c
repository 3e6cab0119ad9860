// tensorboard: TFRecord framing, protocol-buffer encoding of Event/Summary, CRC32C.
#include "tensorboard.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/core/alloc.h"
#include "common/core/config.h"

// CRC-32C's reflected polynomial, and TFRecord's CRC mask.
static const uint32_t CRC32C_POLY = 0x82F63B78u;
static const uint32_t CRC_MASK_DELTA = 0xa282ead8u;
enum { CRC_MASK_ROTATION = 15 };

// Protocol-buffer wire types and the field numbers of event.proto / summary.proto.
enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_BYTES = 2, WIRE_FIXED32 = 5 };
enum { EVENT_WALL_TIME = 1, EVENT_STEP = 2, EVENT_FILE_VERSION = 3, EVENT_SUMMARY = 5 };
enum { SUMMARY_VALUE = 1, VALUE_TAG = 1, VALUE_SIMPLE_VALUE = 2 };

// Bytes a varint can take (64 bits, 7 per byte), and the fixed fields around a scalar.
enum {
    VARINT_MAX = 10,
    SCALAR_OVERHEAD = 3 * VARINT_MAX + 8,
    EVENT_OVERHEAD = 4 * VARINT_MAX + 32
};

enum { HOST_CAPACITY = 256, TB_PATH_CAPACITY = DSV3_CONFIG_STRING_CAPACITY + 2 * HOST_CAPACITY };

static const char FILE_VERSION[] = "brain.Event:2";

struct Dsv3TbWriter {
    FILE *file;
    char path[TB_PATH_CAPACITY];
};

static uint32_t crc_table[256];
static int crc_table_ready;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        crc_table[i] = c;
    }
    crc_table_ready = 1;
}

uint32_t dsv3_crc32c(const void *data, size_t n) {
    if (!crc_table_ready) crc_init(); // idempotent: a race only writes the same values twice
    const unsigned char *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

uint32_t dsv3_crc32c_masked(const void *data, size_t n) {
    uint32_t c = dsv3_crc32c(data, n);
    return ((c >> CRC_MASK_ROTATION) | (c << (32 - CRC_MASK_ROTATION))) + CRC_MASK_DELTA;
}

// ---- encoding into a byte buffer sized by the caller ----

typedef struct {
    unsigned char *p;
    size_t n;
} Buf;

static void put_varint(Buf *b, uint64_t v) {
    while (v >= 0x80) {
        b->p[b->n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    b->p[b->n++] = (unsigned char)v;
}

static void put_key(Buf *b, int field, int wire) {
    put_varint(b, ((uint64_t)field << 3) | (uint64_t)wire);
}

static void put_le(Buf *b, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++)
        b->p[b->n++] = (unsigned char)(v >> (8 * i));
}

static void put_bytes(Buf *b, int field, const void *data, size_t n) {
    put_key(b, field, WIRE_BYTES);
    put_varint(b, n);
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static void put_double(Buf *b, int field, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_key(b, field, WIRE_FIXED64);
    put_le(b, bits, 8);
}

static void put_float(Buf *b, int field, float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_key(b, field, WIRE_FIXED32);
    put_le(b, bits, 4);
}

static double wall_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// One TFRecord around `n` bytes of data.
static Dsv3Err write_record(Dsv3TbWriter *w, const unsigned char *data, size_t n) {
    unsigned char header[8];
    Buf h = {header, 0};
    put_le(&h, (uint64_t)n, 8);
    uint32_t header_crc = dsv3_crc32c_masked(header, sizeof header);
    uint32_t data_crc = dsv3_crc32c_masked(data, n);
    unsigned char crc[4];
    Buf c = {crc, 0};
    int ok = fwrite(header, 1, sizeof header, w->file) == sizeof header;
    put_le(&c, header_crc, 4);
    ok = ok && fwrite(crc, 1, 4, w->file) == 4;
    ok = ok && fwrite(data, 1, n, w->file) == n;
    c.n = 0;
    put_le(&c, data_crc, 4);
    ok = ok && fwrite(crc, 1, 4, w->file) == 4;
    ok = ok && fflush(w->file) == 0;
    DSV3_CHECK(ok, DSV3_ERR_IO, "writing the TensorBoard event file %s failed: %s", w->path,
               strerror(errno));
    return DSV3_OK;
}

Dsv3Err dsv3_tb_open(Dsv3TbWriter **out, const char *folder) {
    *out = NULL;
    Dsv3TbWriter *w = NULL;
    DSV3_CALL(dsv3_calloc((void **)&w, 1, sizeof *w, "TensorBoard writer"));
    char host[HOST_CAPACITY] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "localhost");
    int n = snprintf(w->path, sizeof w->path, "%s/events.out.tfevents.%lld.%s.%ld.dsv3", folder,
                     (long long)time(NULL), host, (long)getpid());
    Dsv3Err err = DSV3_OK;
    DSV3_CHECK_GOTO(err, fail, n > 0 && (size_t)n < sizeof w->path, DSV3_ERR_IO,
                    "TensorBoard folder '%s' gives a path that is too long", folder);
    w->file = fopen(w->path, "wb");
    DSV3_CHECK_GOTO(err, fail, w->file, DSV3_ERR_IO,
                    "cannot create the TensorBoard event file %s: %s", w->path, strerror(errno));
    unsigned char event[EVENT_OVERHEAD + sizeof FILE_VERSION];
    Buf b = {event, 0};
    put_double(&b, EVENT_WALL_TIME, wall_time());
    put_bytes(&b, EVENT_FILE_VERSION, FILE_VERSION, sizeof FILE_VERSION - 1);
    DSV3_CALL_GOTO(err, fail, write_record(w, event, b.n));
    *out = w;
    return DSV3_OK;
fail:
    dsv3_tb_close(w);
    return err;
}

Dsv3Err dsv3_tb_scalars(Dsv3TbWriter *w, int64_t step, const char *const *tags,
                        const double *values, int n) {
    // Sizes first: the Summary's length precedes it, and each Value's length precedes it.
    size_t summary = 0;
    for (int i = 0; i < n; i++) {
        size_t tag = strlen(tags[i]);
        size_t value = 1 + varint_size(tag) + tag + 1 + 4;
        summary += 1 + varint_size(value) + value;
    }
    unsigned char *event = NULL;
    DSV3_CALL(dsv3_alloc((void **)&event, summary + EVENT_OVERHEAD, "TensorBoard event"));
    Buf b = {event, 0};
    put_double(&b, EVENT_WALL_TIME, wall_time());
    put_key(&b, EVENT_STEP, WIRE_VARINT);
    put_varint(&b, (uint64_t)step);
    put_key(&b, EVENT_SUMMARY, WIRE_BYTES);
    put_varint(&b, summary);
    for (int i = 0; i < n; i++) {
        size_t tag = strlen(tags[i]);
        put_key(&b, SUMMARY_VALUE, WIRE_BYTES);
        put_varint(&b, 1 + varint_size(tag) + tag + 1 + 4);
        put_bytes(&b, VALUE_TAG, tags[i], tag);
        put_float(&b, VALUE_SIMPLE_VALUE, (float)values[i]);
    }
    DSV3_ASSERT(b.n <= summary + EVENT_OVERHEAD);
    Dsv3Err err = write_record(w, event, b.n);
    dsv3_free(event);
    return err;
}

const char *dsv3_tb_path(const Dsv3TbWriter *w) { return w->path; }

void dsv3_tb_close(Dsv3TbWriter *w) {
    if (!w) return;
    if (w->file) fclose(w->file);
    dsv3_free(w);
}
