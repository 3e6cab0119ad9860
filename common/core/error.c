// error: the per-thread failure record behind DSV3_CALL / DSV3_CHECK / DSV3_ASSERT.
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

// Enough for a long message and a deep traceback; longer records are cut, never overrun.
// The message takes at most ERROR_MESSAGE_SHOWN bytes of the text so that the frames saying
// where it failed always have room; frames are kept whole, innermost first.
enum {
    ERROR_TEXT_CAPACITY = 8192,
    ERROR_MESSAGE_SHOWN = ERROR_TEXT_CAPACITY / 2,
    ERROR_FRAME_CAPACITY = 1024,
};

// Ends the traceback when the next frame no longer fits.
static const char error_cut_marker[] = "  ... (further frames cut)\n";

static _Thread_local char error_text[ERROR_TEXT_CAPACITY];
static _Thread_local size_t error_length;
static _Thread_local size_t error_message_end; // where the message stops and frames begin
static _Thread_local int error_frames_cut;     // the marker is written; frames are dropped
static _Thread_local char error_message[ERROR_TEXT_CAPACITY];

const char *dsv3_error_name(Dsv3Err code) {
    switch (code) {
    case DSV3_OK: return "ok";
    case DSV3_ERR_USAGE: return "usage error";
    case DSV3_ERR_CONFIG: return "config error";
    case DSV3_ERR_INTERNAL: return "internal error";
    case DSV3_ERR_IO: return "I/O error";
    case DSV3_ERR_MEMORY: return "out of memory";
    case DSV3_ERR_MPI: return "MPI error";
    case DSV3_ERR_LAUNCH: return "launch error";
    case DSV3_ERR_NUMERIC: return "numeric error";
    case DSV3_ERR_TIMEOUT: return "timeout";
    case DSV3_ERR_BACKEND: return "backend error";
    }
    return "unknown error";
}

// Appends `n` bytes, cutting at capacity.
static void error_append(const char *text, size_t n) {
    size_t room = ERROR_TEXT_CAPACITY - 1 - error_length;
    if (n > room) n = room;
    memcpy(error_text + error_length, text, n);
    error_length += n;
    error_text[error_length] = '\0';
}

Dsv3Err dsv3_error_raise(Dsv3Err code, const char *file, int line, const char *func,
                         const char *fmt, ...) {
    // Formatted aside first: the arguments may point into the record being replaced (a caller
    // adding context to dsv3_error_message() or dsv3_error_text()).
    char formatted[ERROR_TEXT_CAPACITY];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(formatted, sizeof formatted, fmt, ap);
    va_end(ap);
    if (n < 0) formatted[0] = '\0';
    memcpy(error_message, formatted, sizeof error_message);
    error_length = 0;
    error_frames_cut = 0;
    const char *name = dsv3_error_name(code);
    size_t shown = strlen(error_message);
    if (shown > ERROR_MESSAGE_SHOWN) shown = ERROR_MESSAGE_SHOWN;
    error_append(name, strlen(name));
    error_append(": ", 2);
    error_append(error_message, shown);
    error_append("\n", 1);
    error_message_end = error_length;
    return dsv3_error_trace(code, file, line, func);
}

Dsv3Err dsv3_error_trace(Dsv3Err code, const char *file, int line, const char *func) {
    if (error_frames_cut) return code;
    char frame[ERROR_FRAME_CAPACITY];
    int n = snprintf(frame, sizeof frame, "  at %s:%d in %s()\n", file, line, func);
    if (n < 0) return code;
    size_t length = (size_t)n < sizeof frame ? (size_t)n : sizeof frame - 1;
    // A frame is written only if the marker would still fit after it.
    if (error_length + length + sizeof error_cut_marker <= ERROR_TEXT_CAPACITY) {
        error_append(frame, length);
    } else {
        error_append(error_cut_marker, sizeof error_cut_marker - 1);
        error_frames_cut = 1;
    }
    return code;
}

const char *dsv3_error_text(void) {
    error_text[error_length] = '\0';
    return error_text;
}

const char *dsv3_error_message(void) { return error_message_end ? error_message : ""; }

void dsv3_error_clear(void) {
    error_length = 0;
    error_message_end = 0;
    error_frames_cut = 0;
    error_text[0] = '\0';
    error_message[0] = '\0';
}
