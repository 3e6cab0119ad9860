// job_comm: MPMD duplicate or port-joined job communicator; see job_comm.h.
#include "job_comm.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/core/log.h"
#include "mpi_check.h"

// Pause between two MPI_Lookup_name calls while the training job has not published yet.
#define JOB_COMM_LOOKUP_POLL_S 0.2
// The accept/connect handshake gets at least this long after the name was found, however
// little of the caller's timeout was left: the training side is known to be waiting.
#define JOB_COMM_HANDSHAKE_MIN_S 10.0
// Ranks other than 0 wait this much longer before their silent exit, so the one line that
// explains the timeout comes from rank 0 (mpiexec tears the others down when it exits).
#define JOB_COMM_QUIET_GRACE_S 5.0

// Room for rank 0's failure text, broadcast so that every rank reports the same error.
enum { JOB_COMM_STATUS_CAPACITY = MPI_MAX_ERROR_STRING + 256, JOB_COMM_LINE_CAPACITY = 1024 };

// The watchdog that ends the process when an MPI call outlives its deadline.
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int done;                          // set by the main thread when the call returned
    struct timespec deadline;          // on CLOCK_MONOTONIC
    int speak;                         // print `line` before exiting (rank 0 only)
    char line[JOB_COMM_LINE_CAPACITY]; // the explanation
    // Set on the publishing rank when MPI allows calls from any thread: the watchdog then
    // unpublishes `service` before exiting, so that expert servers started later do not find a
    // port nobody listens on (ompi-server keeps names of jobs that ended).
    const char *unpublish_service;
    const char *unpublish_port;
} JobCommWatchdog;

static void *job_comm_watchdog_main(void *arg) {
    JobCommWatchdog *dog = arg;
    pthread_mutex_lock(&dog->lock);
    int rc = 0;
    while (!dog->done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&dog->wake, &dog->lock, &dog->deadline);
    if (!dog->done) {
        // The main thread is stuck inside MPI and cannot be unwound, and MPI_Abort from here
        // would be a second thread in MPI (and a self-connect to unblock the accept hangs in
        // OpenMPI 4.1); ending the process is the one way out, and mpiexec then ends the rest
        // of the job.
        // Said first: should the unpublish hang, the other ranks' watchdogs still end the job.
        if (dog->speak) DSV3_LOG_ERROR("%s", dog->line);
        fflush(stdout);
        if (dog->unpublish_service)
            MPI_Unpublish_name(dog->unpublish_service, MPI_INFO_NULL, dog->unpublish_port);
        _exit(DSV3_JOB_COMM_EXIT_TIMEOUT);
    }
    pthread_mutex_unlock(&dog->lock);
    return NULL;
}

// Starts a watchdog that fires `timeout_s` seconds from now.
static Dsv3Err job_comm_watchdog_start(JobCommWatchdog *dog, pthread_t *thread, double timeout_s,
                                       int speak) {
    dog->done = 0;
    dog->speak = speak;
    dog->unpublish_service = NULL;
    dog->unpublish_port = NULL;
    clock_gettime(CLOCK_MONOTONIC, &dog->deadline);
    double whole = (double)(time_t)timeout_s;
    dog->deadline.tv_sec += (time_t)timeout_s;
    dog->deadline.tv_nsec += (long)((timeout_s - whole) * 1e9);
    if (dog->deadline.tv_nsec >= 1000000000L) {
        dog->deadline.tv_sec += 1;
        dog->deadline.tv_nsec -= 1000000000L;
    }
    pthread_condattr_t attr;
    DSV3_CHECK(pthread_condattr_init(&attr) == 0, DSV3_ERR_INTERNAL,
               "pthread_condattr_init failed");
    // A monotonic deadline, so that a clock adjustment neither fires nor delays the watchdog.
    int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(&dog->wake, &attr);
    pthread_condattr_destroy(&attr);
    DSV3_CHECK(rc == 0, DSV3_ERR_INTERNAL, "could not set up the join watchdog: %s", strerror(rc));
    rc = pthread_mutex_init(&dog->lock, NULL);
    if (rc == 0) {
        rc = pthread_create(thread, NULL, job_comm_watchdog_main, dog);
        if (rc != 0) pthread_mutex_destroy(&dog->lock);
    }
    if (rc != 0) pthread_cond_destroy(&dog->wake);
    DSV3_CHECK(rc == 0, DSV3_ERR_INTERNAL, "could not start the join watchdog: %s", strerror(rc));
    return DSV3_OK;
}

static void job_comm_watchdog_stop(JobCommWatchdog *dog, pthread_t thread) {
    pthread_mutex_lock(&dog->lock);
    dog->done = 1;
    pthread_cond_signal(&dog->wake);
    pthread_mutex_unlock(&dog->lock);
    pthread_join(thread, NULL);
    pthread_cond_destroy(&dog->wake);
    pthread_mutex_destroy(&dog->lock);
}

// The rest of a joined job's start-up, watched (dsv3_job_comm_watch_join).
static JobCommWatchdog join_dog;
static pthread_t join_thread;
static int join_watched;

Dsv3Err dsv3_job_comm_watch_join(double timeout_s, const char *peer) {
    int rank = 0;
    DSV3_MPI_CALL(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    snprintf(join_dog.line, sizeof join_dog.line,
             "start-up did not finish within comm.init_timeout_seconds = %g s after the join: %s "
             "stopped answering (it ended, or hangs); every process of this job stops",
             timeout_s, peer);
    int speak = rank == 0;
    DSV3_CALL(job_comm_watchdog_start(
        &join_dog, &join_thread, speak ? timeout_s : timeout_s + JOB_COMM_QUIET_GRACE_S, speak));
    join_watched = 1;
    return DSV3_OK;
}

void dsv3_job_comm_joined_ready(void) {
    if (!join_watched) return;
    job_comm_watchdog_stop(&join_dog, join_thread);
    join_watched = 0;
}

// MPI_Open_port, MPI_Publish_name and MPI_Lookup_name report on MPI_COMM_WORLD's error handler
// (MPI_COMM_SELF's under MPI-4 rules), whose default would end the job on a name that is not
// published yet. These switch both to MPI_ERRORS_RETURN for the join and back.
typedef struct {
    MPI_Errhandler world, self;
} JobCommHandlers;

static Dsv3Err job_comm_handlers_return(JobCommHandlers *saved) {
    DSV3_MPI_CALL(MPI_Comm_get_errhandler(MPI_COMM_WORLD, &saved->world));
    DSV3_MPI_CALL(MPI_Comm_get_errhandler(MPI_COMM_SELF, &saved->self));
    DSV3_MPI_CALL(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    DSV3_MPI_CALL(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN));
    return DSV3_OK;
}

static void job_comm_handlers_restore(JobCommHandlers *saved) {
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, saved->world);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, saved->self);
    MPI_Errhandler_free(&saved->world);
    MPI_Errhandler_free(&saved->self);
}

// Writes "<what> failed: <MPI's description>" into `status`.
static void job_comm_describe(char *status, const char *what, int rc) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS) length = 0;
    text[length < MPI_MAX_ERROR_STRING ? length : MPI_MAX_ERROR_STRING - 1] = '\0';
    snprintf(status, JOB_COMM_STATUS_CAPACITY, "%s failed: %s", what,
             length ? text : "no description");
}

static Dsv3Err job_comm_check_args(const char *service, double timeout_s, MPI_Comm *job) {
    DSV3_CHECK(job != NULL, DSV3_ERR_USAGE, "the job comm output is NULL");
    *job = MPI_COMM_NULL;
    DSV3_CHECK(service != NULL && service[0] != '\0', DSV3_ERR_USAGE,
               "the expert service name is empty; give the name both jobs use to meet");
    DSV3_CHECK(timeout_s > 0, DSV3_ERR_USAGE, "the join timeout is %g s, but it must be positive",
               timeout_s);
    return DSV3_OK;
}

// Collective over MPI_COMM_WORLD: merges `inter` into *job (`high` orders this job's ranks after
// the peer's), frees `inter` and gives *job the error handler MPI_COMM_WORLD had before the join.
static Dsv3Err job_comm_merge(MPI_Comm *inter, int high, MPI_Errhandler handler, MPI_Comm *job) {
    Dsv3Err err = DSV3_OK;
    DSV3_MPI_CALL_GOTO(err, done, MPI_Intercomm_merge(*inter, high, job));
    DSV3_MPI_CALL_GOTO(err, done, MPI_Comm_set_errhandler(*job, handler));
done:
    MPI_Comm_free(inter);
    return err;
}

Dsv3Err dsv3_job_comm_world(MPI_Comm *job) {
    DSV3_CHECK(job != NULL, DSV3_ERR_USAGE, "the job comm output is NULL");
    DSV3_MPI_CALL(MPI_Comm_dup(MPI_COMM_WORLD, job));
    return DSV3_OK;
}

// Rank 0 of the training job: opens the port and publishes it; `status` stays empty on success.
static void job_comm_publish(const char *service, char *port, char *status) {
    int rc = MPI_Open_port(MPI_INFO_NULL, port);
    if (rc != MPI_SUCCESS) {
        job_comm_describe(status, "MPI_Open_port", rc);
        return;
    }
    rc = MPI_Publish_name(service, MPI_INFO_NULL, port);
    if (rc != MPI_SUCCESS) {
        job_comm_describe(status, "MPI_Publish_name", rc);
        MPI_Close_port(port);
    }
}

Dsv3Err dsv3_job_comm_accept(const char *service, double timeout_s, MPI_Comm *job) {
    DSV3_CALL(job_comm_check_args(service, timeout_s, job));
    int rank = 0;
    DSV3_MPI_CALL(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    JobCommHandlers saved;
    DSV3_CALL(job_comm_handlers_return(&saved));

    char port[MPI_MAX_PORT_NAME] = "";
    char status[JOB_COMM_STATUS_CAPACITY] = "";
    if (rank == 0) job_comm_publish(service, port, status);
    Dsv3Err err = DSV3_OK;
    // Every rank learns whether rank 0 published, so none waits in MPI_Comm_accept alone.
    DSV3_MPI_CALL_GOTO(err, done, MPI_Bcast(status, sizeof status, MPI_CHAR, 0, MPI_COMM_WORLD));
    DSV3_CHECK_GOTO(err, done, status[0] == '\0', DSV3_ERR_MPI,
                    "could not publish the expert service '%s': %s; is another training job "
                    "using that name on the same ompi-server?",
                    service, status);

    JobCommWatchdog dog;
    snprintf(dog.line, sizeof dog.line,
             "no expert servers joined service '%s' within %g s; start them with "
             "`./run/expert_servers.sh`, with the same service name and ompi-server URI "
             "(`mpiexec --ompi-server file:<uri>`) as this job",
             service, timeout_s);
    int thread_level = MPI_THREAD_SINGLE;
    DSV3_MPI_CALL_GOTO(err, close, MPI_Query_thread(&thread_level));
    pthread_t thread;
    int speak = rank == 0;
    double limit = speak ? timeout_s : timeout_s + JOB_COMM_QUIET_GRACE_S;
    DSV3_CALL_GOTO(err, close, job_comm_watchdog_start(&dog, &thread, limit, speak));
    if (rank == 0 && thread_level == MPI_THREAD_MULTIPLE) {
        pthread_mutex_lock(&dog.lock);
        dog.unpublish_service = service;
        dog.unpublish_port = port;
        pthread_mutex_unlock(&dog.lock);
    }
    MPI_Comm inter = MPI_COMM_NULL;
    int rc = MPI_Comm_accept(port, MPI_INFO_NULL, 0, MPI_COMM_WORLD, &inter);
    job_comm_watchdog_stop(&dog, thread);
    if (rc != MPI_SUCCESS) {
        err = dsv3_mpi_raise(rc, "MPI_Comm_accept", __FILE__, __LINE__, __func__);
        goto close;
    }
    DSV3_CALL_GOTO(err, close, job_comm_merge(&inter, 0, saved.world, job));
close:
    // Taken down at once, so no second expert job can connect to a port nobody accepts on.
    if (rank == 0) {
        MPI_Unpublish_name(service, MPI_INFO_NULL, port);
        MPI_Close_port(port);
    }
done:
    job_comm_handlers_restore(&saved);
    return err;
}

// Rank 0 of the expert job: polls MPI_Lookup_name until `service` appears or `deadline` (on
// dsv3_log_seconds' clock) passes; on failure `status` holds the last lookup error.
static void job_comm_lookup(const char *service, double deadline, char *port, char *status) {
    const struct timespec pause = {0, (long)(JOB_COMM_LOOKUP_POLL_S * 1e9)};
    for (;;) {
        int rc = MPI_Lookup_name(service, MPI_INFO_NULL, port);
        if (rc == MPI_SUCCESS) {
            status[0] = '\0'; // forget the misses before the name appeared
            return;
        }
        job_comm_describe(status, "MPI_Lookup_name", rc);
        if (dsv3_log_seconds() >= deadline) return;
        nanosleep(&pause, NULL);
    }
}

Dsv3Err dsv3_job_comm_connect(const char *service, double timeout_s, MPI_Comm *job) {
    DSV3_CALL(job_comm_check_args(service, timeout_s, job));
    double start = dsv3_log_seconds();
    int rank = 0;
    DSV3_MPI_CALL(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    JobCommHandlers saved;
    DSV3_CALL(job_comm_handlers_return(&saved));

    char port[MPI_MAX_PORT_NAME] = "";
    char status[JOB_COMM_STATUS_CAPACITY] = "";
    if (rank == 0) job_comm_lookup(service, start + timeout_s, port, status);
    Dsv3Err err = DSV3_OK;
    DSV3_MPI_CALL_GOTO(err, done, MPI_Bcast(status, sizeof status, MPI_CHAR, 0, MPI_COMM_WORLD));
    DSV3_CHECK_GOTO(err, done, status[0] == '\0', DSV3_ERR_TIMEOUT,
                    "no training job published the expert service '%s' within %g s (last "
                    "%s); start the training job first (`./run/train.sh`), and give both jobs "
                    "the same service name and ompi-server URI (`mpiexec --ompi-server "
                    "file:<uri>`)",
                    service, timeout_s, status);

    double left = start + timeout_s - dsv3_log_seconds();
    double limit = left > JOB_COMM_HANDSHAKE_MIN_S ? left : JOB_COMM_HANDSHAKE_MIN_S;
    JobCommWatchdog dog;
    snprintf(dog.line, sizeof dog.line,
             "found the expert service '%s' but could not connect to the training job within "
             "%.3g s; the job that published it may have ended without unpublishing it: restart "
             "the training job (`./run/train.sh`), then the expert servers",
             service, limit);
    int speak = rank == 0;
    if (!speak) limit += JOB_COMM_QUIET_GRACE_S;
    pthread_t thread;
    DSV3_CALL_GOTO(err, done, job_comm_watchdog_start(&dog, &thread, limit, speak));
    MPI_Comm inter = MPI_COMM_NULL;
    int rc = MPI_Comm_connect(port, MPI_INFO_NULL, 0, MPI_COMM_WORLD, &inter);
    job_comm_watchdog_stop(&dog, thread);
    if (rc != MPI_SUCCESS) {
        err = dsv3_mpi_raise(rc, "MPI_Comm_connect", __FILE__, __LINE__, __func__);
        goto done;
    }
    DSV3_CALL_GOTO(err, done, job_comm_merge(&inter, 1, saved.world, job));
    if (getenv(DSV3_JOB_COMM_TEST_EXIT)) { // fault injection: a server job lost after the join
        DSV3_LOG_WARN("%s is set: this expert server exits after joining", DSV3_JOB_COMM_TEST_EXIT);
        _exit(1);
    }
done:
    job_comm_handlers_restore(&saved);
    return err;
}
