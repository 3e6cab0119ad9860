// log: levelled log lines prefixed "[role rank]".
//
// Each process sets its role and rank once (dsv3_log_init); lines go to stderr for warnings and
// errors and to stdout otherwise, each written with one call so ranks do not interleave within
// a line. The level comes from DSV3_LOG_LEVEL (debug, info, warn, error; default info).
// This module does no MPI and does not end the process.
#ifndef DSV3_CORE_LOG_H
#define DSV3_CORE_LOG_H

typedef enum {
    DSV3_LOG_DEBUG = 0,
    DSV3_LOG_INFO,
    DSV3_LOG_WARN,
    DSV3_LOG_ERROR,
} Dsv3LogLevel;

// Sets the prefix of every later line ("coordinator", 0 gives "[coordinator 0]") and reads the
// level from the environment.
void dsv3_log_init(const char *role, int rank);

void dsv3_log_set_level(Dsv3LogLevel level);
Dsv3LogLevel dsv3_log_level(void);

void dsv3_log(Dsv3LogLevel level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Seconds on a monotonic clock, for "took 1.23 s" lines and timers.
double dsv3_log_seconds(void);

#define DSV3_LOG_DEBUG(...) dsv3_log(DSV3_LOG_DEBUG, __VA_ARGS__)
#define DSV3_LOG_INFO(...) dsv3_log(DSV3_LOG_INFO, __VA_ARGS__)
#define DSV3_LOG_WARN(...) dsv3_log(DSV3_LOG_WARN, __VA_ARGS__)
#define DSV3_LOG_ERROR(...) dsv3_log(DSV3_LOG_ERROR, __VA_ARGS__)

#endif
