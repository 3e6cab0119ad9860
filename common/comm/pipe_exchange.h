// pipe_exchange: activations and their gradients between neighbouring pipeline stages.
//
// Over a duplicate of the stage's pp communicator (comm/topology.h; its rank is the pipeline
// rank), point to point and non-blocking, as the schedule's actions say
// (train/pipeline_schedule.h): a receive is posted ahead of the compute that consumes it and
// waited for there; a send starts right after its compute. Every call names the pipeline rank
// of the other end (the schedule's placement of stages says which: the next rank, the first
// rank after the last under a looped schedule, the rank before, or this very rank where a v
// turns around). Activations travel
// with the document ids of their tokens when masks are block-causal. Messages of one direction
// between two ranks match in the order they are posted (MPI's non-overtaking rule), which the
// schedule's lists keep; a receive names the micro-batch and the stage it is for.
//
// Buffers. Received activations and gradients land in two buffers per direction, used in turn:
// a receive is posted at most one compute ahead, so one buffer is being read while the other
// fills. Activations are sent from the model's slot output, which stays valid until the slot's
// next forward: dsv3_pipe_exchange_release_slot waits for that send before it (slots are
// numbered over every stage of the rank). Input gradients are copied into two send buffers used
// in turn (the model's input gradient is overwritten by the next backward). Every wait goes
// through the watch and names the neighbour.
#ifndef DSV3_COMM_PIPE_EXCHANGE_H
#define DSV3_COMM_PIPE_EXCHANGE_H

#include <stdint.h>

#include "common/comm/topology.h"
#include "common/comm/watch.h"
#include "common/core/error.h"

typedef struct Dsv3PipeExchange Dsv3PipeExchange;

// Which of its stages' messages a rank's exchange carries.
typedef struct {
    int64_t n_rows, dim; // rows of `dim` floats per micro-batch (this rank's tokens of it)
    int64_t n_doc;       // document ids per micro-batch travelling with them (0: none)
    int64_t slots;       // activation slots of all the rank's stages
    int receives;        // some stage of the rank has a previous stage (activations come in)
    int sends;           // some stage of the rank has a next stage (activations go out)
} Dsv3PipeExchangeShape;

// Collective over the stage ranks of the job's pp communicator of this rank. `watch` outlives
// the exchange.
Dsv3Err dsv3_pipe_exchange_create(Dsv3PipeExchange **out, const Dsv3Topology *topo,
                                  const Dsv3PipeExchangeShape *shape, Dsv3Watch *watch);

// Bytes an exchange of this shape allocates (memory plans).
int64_t dsv3_pipe_exchange_bytes(const Dsv3PipeExchangeShape *shape);

// Waits for the sends still in flight and frees. NULL is a no-op.
Dsv3Err dsv3_pipe_exchange_finish(Dsv3PipeExchange *x);
void dsv3_pipe_exchange_destroy(Dsv3PipeExchange *x);

// Posts the receive of micro-batch `micro`'s input activations of stage `stage` (from stage
// stage − 1, held by pipeline rank `from`).
Dsv3Err dsv3_pipe_exchange_post_activations(Dsv3PipeExchange *x, int64_t micro, int64_t stage,
                                            int64_t from);
// Waits for them: *act (n_rows, dim) and *doc (n_doc; NULL without document ids), valid until
// the next post of activations after the next one.
Dsv3Err dsv3_pipe_exchange_wait_activations(Dsv3PipeExchange *x, int64_t micro, int64_t stage,
                                            const float **act, const int32_t **doc);
// Sends output activations from activation slot `slot` to the next stage, on pipeline rank `to`.
Dsv3Err dsv3_pipe_exchange_send_activations(Dsv3PipeExchange *x, int64_t slot, int64_t to,
                                            const float *act, const int32_t *doc);
// Waits until slot `slot`'s last activations have left (before the slot's next forward).
Dsv3Err dsv3_pipe_exchange_release_slot(Dsv3PipeExchange *x, int64_t slot);

// The same for gradients of stage `stage`'s output (from stage stage + 1) and of an input (to
// the previous stage; copied, so the caller's buffer is free at once).
Dsv3Err dsv3_pipe_exchange_post_gradient(Dsv3PipeExchange *x, int64_t micro, int64_t stage,
                                         int64_t from);
Dsv3Err dsv3_pipe_exchange_wait_gradient(Dsv3PipeExchange *x, int64_t micro, int64_t stage,
                                         const float **grad);
Dsv3Err dsv3_pipe_exchange_send_gradient(Dsv3PipeExchange *x, int64_t micro, int64_t to,
                                         const float *grad);

// Seconds spent waiting for neighbours since the last call (the stage's pipeline idle time).
double dsv3_pipe_exchange_take_wait_seconds(Dsv3PipeExchange *x);

#endif
