// idle_wait: MPI_Testall with a sleep between polls.
#include "idle_wait.h"

#include <time.h>

#include "common/comm/mpi_check.h"

// Short enough not to delay a step measurably, long enough to leave the core to others.
static const long POLL_INTERVAL_NS = 1000000;

Dsv3Err dsv3_idle_waitall(int count, MPI_Request *requests) {
    const struct timespec pause = {0, POLL_INTERVAL_NS};
    for (;;) {
        int done = 0;
        DSV3_MPI_CALL(MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE));
        if (done) return DSV3_OK;
        nanosleep(&pause, NULL);
    }
}
