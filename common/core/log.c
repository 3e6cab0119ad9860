// log: "[role rank] message" lines, one write per line.
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum { LOG_LINE_CAPACITY = 4096, LOG_PREFIX_CAPACITY = 64 };

static char log_prefix[LOG_PREFIX_CAPACITY] = "[dsv3]";
static Dsv3LogLevel log_threshold = DSV3_LOG_INFO;

void dsv3_log_init(const char *role, int rank) {
    snprintf(log_prefix, sizeof log_prefix, "[%s %d]", role, rank);
    const char *env = getenv("DSV3_LOG_LEVEL");
    if (!env) return;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(env, names[i]) == 0) log_threshold = (Dsv3LogLevel)i;
}

void dsv3_log_set_level(Dsv3LogLevel level) { log_threshold = level; }

Dsv3LogLevel dsv3_log_level(void) { return log_threshold; }

void dsv3_log(Dsv3LogLevel level, const char *fmt, ...) {
    if (level < log_threshold) return;
    static const char *const tags[] = {"debug: ", "", "warning: ", "error: "};
    char line[LOG_LINE_CAPACITY];
    int n = snprintf(line, sizeof line, "%s %s", log_prefix, tags[level]);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    if (len == sizeof line - 1) len--; // keep room for the newline of a cut line
    line[len++] = '\n';
    FILE *stream = level >= DSV3_LOG_WARN ? stderr : stdout;
    fwrite(line, 1, len, stream);
    fflush(stream);
}

double dsv3_log_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
