// stop_signal: records SIGTERM and SIGUSR1 for the step loops.
#include "stop_signal.h"

#include <signal.h>
#include <stdio.h>

static volatile sig_atomic_t stop_signal_first = 0;

static void stop_signal_record(int sig) {
    if (stop_signal_first == 0) stop_signal_first = sig;
}

void dsv3_stop_signal_install(void) {
    struct sigaction action = {.sa_handler = stop_signal_record};
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART; // a blocking call in progress carries on
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGUSR1, &action, NULL);
}

int dsv3_stop_signal_received(void) { return stop_signal_first; }

const char *dsv3_stop_signal_name(int sig) {
    static _Thread_local char other[32];
    switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    }
    snprintf(other, sizeof other, "signal %d", sig);
    return other;
}
