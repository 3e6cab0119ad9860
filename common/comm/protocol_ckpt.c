// protocol_ckpt: the checkpoint commands, the agreement and the gather of shard descriptions.
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/comm/mpi_check.h"
#include "common/comm/protocol_internal.h"

static const int COORDINATOR_PEER[1] = {DSV3_PROTOCOL_COORDINATOR};

// Collective: broadcasts `size` bytes at buf from the coordinator.
static Dsv3Err broadcast(Dsv3Protocol *p, void *buf, int size, const char *thing) {
    int root = p->role == DSV3_ROLE_COORDINATOR;
    char where[DSV3_PROTOCOL_TEXT_CAPACITY], what[DSV3_WATCH_TEXT_CAPACITY];
    dsv3_protocol_describe_plan(&p->plan, where, sizeof where);
    if (root)
        snprintf(what, sizeof what, "waits for every rank to take the %s after %s", thing, where);
    else
        snprintf(what, sizeof what, "waits for the coordinator's %s after %s", thing, where);
    MPI_Request req;
    DSV3_MPI_CALL(MPI_Ibcast(buf, size, MPI_BYTE, DSV3_PROTOCOL_COORDINATOR, p->comm, &req));
    return dsv3_protocol_wait_one(p, &req, root ? NULL : COORDINATOR_PEER,
                                  root ? DSV3_WATCH_ALL_PEERS : 1, what);
}

Dsv3Err dsv3_protocol_send_save(Dsv3Protocol *p, const Dsv3CkptSaveCommand *cmd) {
    DSV3_ASSERT(p->role == DSV3_ROLE_COORDINATOR);
    Dsv3CkptSaveCommand sent = *cmd;
    DSV3_CALL(broadcast(p, &sent, (int)sizeof sent, "checkpoint command"));
    if (sent.step > 0) dsv3_watch_set_patience(p->watch, DSV3_PATIENCE_INIT);
    return DSV3_OK;
}

Dsv3Err dsv3_protocol_recv_save(Dsv3Protocol *p, Dsv3CkptSaveCommand *cmd) {
    DSV3_ASSERT(p->role != DSV3_ROLE_COORDINATOR);
    DSV3_CALL(broadcast(p, cmd, (int)sizeof *cmd, "checkpoint command"));
    if (cmd->step > 0) dsv3_watch_set_patience(p->watch, DSV3_PATIENCE_INIT);
    return DSV3_OK;
}

Dsv3Err dsv3_protocol_send_load(Dsv3Protocol *p, const Dsv3CkptLoadCommand *cmd) {
    DSV3_ASSERT(p->role == DSV3_ROLE_COORDINATOR);
    Dsv3CkptLoadCommand sent = *cmd;
    return broadcast(p, &sent, (int)sizeof sent, "checkpoint load command");
}

Dsv3Err dsv3_protocol_recv_load(Dsv3Protocol *p, Dsv3CkptLoadCommand *cmd) {
    DSV3_ASSERT(p->role != DSV3_ROLE_COORDINATOR);
    return broadcast(p, cmd, (int)sizeof *cmd, "checkpoint load command");
}

Dsv3Err dsv3_protocol_agree(Dsv3Protocol *p, int ok, int *all_ok) {
    *all_ok = ok != 0;
    MPI_Request req;
    DSV3_MPI_CALL(MPI_Iallreduce(MPI_IN_PLACE, all_ok, 1, MPI_INT, MPI_MIN, p->comm, &req));
    return dsv3_protocol_wait_one(p, &req, NULL, DSV3_WATCH_ALL_PEERS,
                                  "waits in the checkpoint agreement (every rank's result)");
}

Dsv3Err dsv3_protocol_gather_descriptions(Dsv3Protocol *p, const char *mine, char ***all) {
    int root = p->role == DSV3_ROLE_COORDINATOR, size = p->job_size;
    size_t own = strlen(mine) + 1;
    DSV3_CHECK(own <= INT_MAX, DSV3_ERR_INTERNAL, "checkpoint: shard description too large");
    int length = (int)own, *lengths = NULL, *offsets = NULL;
    char *text = NULL;
    Dsv3Err err = DSV3_OK;
    MPI_Request req;
    if (root) {
        DSV3_CALL(
            dsv3_calloc((void **)&lengths, (size_t)size, sizeof *lengths, "description lengths"));
        DSV3_CALL_GOTO(
            err, done,
            dsv3_calloc((void **)&offsets, (size_t)size, sizeof *offsets, "description offsets"));
    }
    DSV3_MPI_CALL_GOTO(err, done,
                       MPI_Igather(&length, 1, MPI_INT, lengths, 1, MPI_INT,
                                   DSV3_PROTOCOL_COORDINATOR, p->comm, &req));
    DSV3_CALL_GOTO(err, done,
                   dsv3_protocol_wait_one(p, &req, NULL, DSV3_WATCH_ALL_PEERS,
                                          "waits in the gather of checkpoint shard descriptions"));
    if (root) {
        int64_t total = 0;
        for (int r = 0; r < size; r++)
            total += lengths[r];
        // Gatherv's displacements are int: the descriptions (a few hundred bytes per rank)
        // stay far below.
        DSV3_CHECK_GOTO(err, done, total < INT_MAX, DSV3_ERR_INTERNAL,
                        "checkpoint: shard descriptions too large");
        for (int r = 0, at = 0; r < size; r++)
            offsets[r] = at, at += lengths[r];
        DSV3_CALL_GOTO(err, done, dsv3_alloc((void **)&text, (size_t)total, "shard descriptions"));
    }
    DSV3_MPI_CALL_GOTO(err, done,
                       MPI_Igatherv(mine, length, MPI_CHAR, text, lengths, offsets, MPI_CHAR,
                                    DSV3_PROTOCOL_COORDINATOR, p->comm, &req));
    DSV3_CALL_GOTO(err, done,
                   dsv3_protocol_wait_one(p, &req, NULL, DSV3_WATCH_ALL_PEERS,
                                          "waits in the gather of checkpoint shard descriptions"));
    if (root) {
        DSV3_CALL_GOTO(
            err, done,
            dsv3_calloc((void **)all, (size_t)size, sizeof **all, "shard description list"));
        for (int r = 0; r < size; r++)
            (*all)[r] = text + offsets[r];
        text = NULL; // owned through (*all)[0]
    }
done:
    dsv3_free(text);
    dsv3_free(lengths);
    dsv3_free(offsets);
    return err;
}
