// protocol_internal: what protocol.c and protocol_ckpt.c share; not for other modules.
#ifndef DSV3_COMM_PROTOCOL_INTERNAL_H
#define DSV3_COMM_PROTOCOL_INTERNAL_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "common/comm/protocol.h"

enum {
    DSV3_PROTOCOL_COORDINATOR = 0,     // job rank of the coordinator
    DSV3_PROTOCOL_FIRST_STAGE = 1,     // job rank of stage index 0
    DSV3_PROTOCOL_INLINE_REQUESTS = 8, // requests of one wait kept off the heap
    DSV3_PROTOCOL_TEXT_CAPACITY = 64,  // "the validation pass after step 123456789"
};

struct Dsv3Protocol {
    MPI_Comm comm; // duplicate of the job communicator
    Dsv3Role role;
    int job_size;
    int64_t n_stage;
    int *stage_ranks;         // (S) job ranks of the stage ranks, for waits on all of them
    int64_t chunk;            // elements per point-to-point message
    MPI_Datatype event_type;  // one Dsv3TraceEvent, as bytes
    MPI_Datatype report_type; // one Dsv3StepReport, as bytes
    Dsv3Watch *watch;
    Dsv3StepPlan plan; // the last plan sent or received (zero before the first), for wait texts
};

// The requests of one wait: up to DSV3_PROTOCOL_INLINE_REQUESTS inline (stage ranks allocate
// nothing per message, so their memory statistics do not move), more on the heap.
typedef struct {
    MPI_Request *list;
    int64_t n, capacity;
    MPI_Request inline_list[DSV3_PROTOCOL_INLINE_REQUESTS];
} Dsv3ProtocolRequests;

// Room for `capacity` requests; must not be copied (list may point inside).
Dsv3Err dsv3_protocol_requests_init(Dsv3ProtocolRequests *r, int64_t capacity);
void dsv3_protocol_requests_free(Dsv3ProtocolRequests *r);

// Messages needed for `count` elements at the protocol's chunk limit.
int64_t dsv3_protocol_chunks(const Dsv3Protocol *p, int64_t count);

// Posts `count` elements of `type` (elem_bytes each) at buf to (sending) or from `peer` with
// `tag`, as dsv3_protocol_chunks(count) messages appended to r.
Dsv3Err dsv3_protocol_post(Dsv3Protocol *p, Dsv3ProtocolRequests *r, int sending, void *buf,
                           int64_t count, MPI_Datatype type, int64_t elem_bytes, int peer, int tag);

// Waits for r's requests (or one) under the watch; `what` is the answer to pings.
Dsv3Err dsv3_protocol_wait(Dsv3Protocol *p, Dsv3ProtocolRequests *r, const int *peers, int n_peers,
                           const char *what);
Dsv3Err dsv3_protocol_wait_one(Dsv3Protocol *p, MPI_Request *request, const int *peers, int n_peers,
                               const char *what);

// "start-up", "step 7", "the validation pass after step 60": what `plan` is about.
void dsv3_protocol_describe_plan(const Dsv3StepPlan *plan, char *out, size_t capacity);

#endif
