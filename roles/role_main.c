// role_main: MPI start, launch, the role's body, and the one place a job is aborted.
#include "role_main.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "common/core/stop_signal.h"
#include "kernels/kernels.h"

// Exit code of a start-up that failed on every rank with a reported error.
enum { ROLE_EXIT_FAILED = 1, ROLE_EXIT_ABORTED = 2 };

static void role_abort(Dsv3Err err) {
    dsv3_launch_report(err);
    MPI_Abort(MPI_COMM_WORLD, ROLE_EXIT_ABORTED);
    exit(ROLE_EXIT_ABORTED); // MPI_Abort does not return; this keeps compilers sure of it
}

int dsv3_role_main(Dsv3Role role, Dsv3RoleBody body, int argc, char **argv) {
    int provided = 0;
    dsv3_cpu_blas_restart_on_fallback(argv); // before anything starts: it may exec
    dsv3_stop_signal_install(); // before MPI: a stop signal must never kill a rank mid-step
    // A write to a peer process that died (a lost expert server job) fails instead of killing
    // this rank without a word; the protocol's watch then names the silent peer.
    signal(SIGPIPE, SIG_IGN);
    // MULTIPLE: the join watchdog (comm/job_comm.h) unpublishes a stale service name from its own
    // thread when a peer job never comes.
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "%s: MPI_Init_thread failed\n", dsv3_role_program(role));
        return ROLE_EXIT_ABORTED;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    Dsv3Launch *launch = NULL;
    Dsv3Err err = dsv3_calloc((void **)&launch, 1, sizeof *launch, "launch state");
    if (err == DSV3_OK) err = dsv3_launch_start(role, argc, argv, launch);
    if (err == DSV3_OK && launch->status == DSV3_LAUNCH_RUN) err = body(launch);
    if (err != DSV3_OK) role_abort(err);
    int code = launch->status == DSV3_LAUNCH_FAILED ? ROLE_EXIT_FAILED : EXIT_SUCCESS;
    dsv3_launch_finish(launch);
    dsv3_free(launch);
    MPI_Finalize();
    return code;
}
