// stop_signal: SIGTERM and SIGUSR1 ask a training job to stop cleanly.
//
// Every role installs the handler before MPI starts its own. The handler only records the first
// such signal (async-signal-safe); nothing is interrupted. Between steps the coordinator looks
// at its own record and at every stage rank's (carried in the step reports): any signal makes it
// save the state after the step just completed on every rank, whether or not a save was due and
// even with checkpoint.enable = false, and stop the job with exit code 0 (common/train/
// coordinator_loop.c). So a signal to any one process of a job, or to all of them (Slurm's
// preemption and time-limit signals, scancel, mpiexec forwarding SIGUSR1, run/train.sh
// forwarding what it gets), ends it the same way. A second signal changes nothing.
#ifndef DSV3_CORE_STOP_SIGNAL_H
#define DSV3_CORE_STOP_SIGNAL_H

// Records SIGTERM and SIGUSR1 instead of letting them end the process. Not thread-safe; call once
// at start-up, before MPI_Init.
void dsv3_stop_signal_install(void);

// The first stop signal this process received (SIGTERM or SIGUSR1), or 0.
int dsv3_stop_signal_received(void);

// "SIGTERM", "SIGUSR1", or "signal N" for any other number.
const char *dsv3_stop_signal_name(int sig);

#endif
