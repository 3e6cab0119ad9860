// format: thousands separators and binary units.
#include "format.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

const char *dsv3_format_count(int64_t n, char out[DSV3_FORMAT_CAPACITY]) {
    char digits[DSV3_FORMAT_CAPACITY];
    // Work on the magnitude as unsigned so that INT64_MIN has one too.
    uint64_t magnitude = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
    int len = snprintf(digits, sizeof digits, "%" PRIu64, magnitude);
    size_t k = 0;
    if (n < 0) out[k++] = '-';
    for (int i = 0; i < len; i++) {
        if (i > 0 && (len - i) % 3 == 0) out[k++] = ',';
        out[k++] = digits[i];
    }
    out[k] = '\0';
    return out;
}

const char *dsv3_format_bytes(double bytes, char out[DSV3_FORMAT_CAPACITY]) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    enum { LAST_UNIT = 6 };
    int u = 0;
    while (bytes >= 1024.0 && u < LAST_UNIT)
        bytes /= 1024.0, u++;
    snprintf(out, DSV3_FORMAT_CAPACITY, u ? "%.2f %s" : "%.0f %s", bytes, units[u]);
    return out;
}
