// format: numbers as people read them in logs ("33,014,016", "125.94 MiB").
#ifndef DSV3_CORE_FORMAT_H
#define DSV3_CORE_FORMAT_H

#include <stddef.h>
#include <stdint.h>

// Room for any int64 with separators, or any byte count with its unit.
enum { DSV3_FORMAT_CAPACITY = 32 };

// `n` with a comma every three digits.
const char *dsv3_format_count(int64_t n, char out[DSV3_FORMAT_CAPACITY]);

// `bytes` in the largest binary unit that keeps it ≥ 1, with two decimals ("1.50 GiB").
const char *dsv3_format_bytes(double bytes, char out[DSV3_FORMAT_CAPACITY]);

#endif
