// launch: bringing a job up on every rank — job communicator, config, topology.
//
// Every role's main() calls dsv3_launch_start after MPI_Init. The coordinator parses the
// command line and the config file, resolves and validates them, and broadcasts the config as
// TOML text; every other rank parses that text, so all ranks hold the same config. Expert
// servers started as their own job (`dsv3-expert --join SERVICE`) connect through an MPI port
// first, and the training job accepts them when parallelism.expert_server_launch = "join".
// Then every rank builds the topology, which checks the launch against the layout, and, when
// the job is to run, the protocol (comm/protocol.h) that carries training's messages.
//
// Errors that every rank reaches together (a bad config, a launch that does not match it) are
// printed once, by job rank 0, and end the start-up with DSV3_LAUNCH_FAILED on every rank, so
// the job stops with one message and a non-zero exit. Any other error is returned to the
// caller, whose main() prints it and calls MPI_Abort.
#ifndef DSV3_COMM_LAUNCH_H
#define DSV3_COMM_LAUNCH_H

#include "common/core/config.h"
#include "common/core/error.h"
#include "common/comm/protocol.h"
#include "common/comm/topology.h"
#include "common/model/model_args.h"

typedef enum {
    DSV3_LAUNCH_RUN,    // start-up complete: run the role
    DSV3_LAUNCH_DONE,   // the request was served at start-up (help, dry run): exit 0
    DSV3_LAUNCH_FAILED, // reported already by job rank 0: exit non-zero
} Dsv3LaunchStatus;

typedef struct {
    Dsv3Role role;
    Dsv3LaunchStatus status;
    Dsv3Config config;      // resolved; identical on every rank
    Dsv3ModelArgs model;    // from config
    Dsv3Topology topology;  // every communicator of the job (topology.job is the job comm)
    Dsv3Protocol *protocol; // training's messages and deadlines; NULL unless status is RUN
} Dsv3Launch;

// Collective over the launched job (and the joining one). `launch` must be zeroed by the
// caller; it is large, so keep it off the stack.
Dsv3Err dsv3_launch_start(Dsv3Role role, int argc, char **argv, Dsv3Launch *launch);

// Collective: frees the protocol and the communicators. Safe after a failed start.
void dsv3_launch_finish(Dsv3Launch *launch);

// Prints an error returned by dsv3_launch_start or a role: the message for the user's own
// mistakes (config, usage) and for a silent peer (timeout: the message names it), the whole
// traceback for everything else or at debug level.
void dsv3_launch_report(Dsv3Err err);

#endif
