// expert_exchange: the routed-expert rows between a pipeline stage's stage ranks and its expert
// servers (DESIGN.md §2, §4), over a duplicate of the stage's MoE communicator (comm/topology.h:
// the stage ranks in mesh order, then the ep expert servers).
//
// Expert server j of ep owns experts [j·El, (j+1)·El) of every MoE layer of its stage, El = E/ep
// (model/params.h). A MoE layer of a stage rank has its routed rows sorted by expert (offsets,
// E + 1); the rows of server j's experts are one contiguous block of them.
//
// Stage rank side: dsv3_expert_exchange_experts is the model's Dsv3Experts (model/experts.h).
// forward posts to every server a request (operation, layer, rows per expert of its El) and the
// block of rows for its experts, and the receives of their outputs straight into place; backward
// does the same with the gradients of the outputs and receives the gradients of the rows; finish
// waits. Between the two the layer computes its shared experts: the part of the rows' time away
// spent in that work is hidden, the part spent in finish is exposed. Two calls may be in flight,
// told apart by their layer: DualPipeV's overlapped pair (core/turns.h) runs a forward and a
// backward of two stages as turns, and finish hands the turn to the other one before it waits,
// so that the other's compute hides this call's time too. After the
// last micro-batch of a step (or of a validation pass) dsv3_expert_exchange_end tells every
// server the pass is over.
//
// Server side: dsv3_expert_exchange_next waits for the next request of every stage rank of the
// stage (they must agree on operation and layer: the ranks of a stage run the same layers in
// the same order); dsv3_expert_exchange_receive takes the rows into one (rows, D) buffer sorted
// by expert across the stage ranks (expert e: stage rank 0's rows, then rank 1's, …), with
// offsets (El + 1), which the grouped expert kernels take as they are; dsv3_expert_exchange_reply
// sends each stage rank its rows of a result laid out the same way, in the order it sent them.
//
// Both: dsv3_expert_exchange_step_sum adds the squared gradient norm over the stage's stage ranks
// and servers, and hands the stage ranks what each server did in the step.
//
// Every wait goes through the protocol's watch (comm/watch.h): a deadline, pings answered, a
// silent peer named. Rows travel as fp32 in host memory; a row is one MPI element (D floats),
// so counts stay far below INT_MAX. Collective calls (create, destroy, sum) are collective on
// the MoE communicator; the others are the point-to-point pairs described above.
//
// Legend: M routed rows of a stage rank, D dim, E experts, El = E / ep, S stage ranks of the
// pipeline stage.
#ifndef DSV3_COMM_EXPERT_EXCHANGE_H
#define DSV3_COMM_EXPERT_EXCHANGE_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/comm/protocol.h"
#include "common/comm/topology.h"
#include "common/comm/watch.h"
#include "common/model/experts.h"
#include "common/model/model_args.h"

typedef struct Dsv3ExpertExchange Dsv3ExpertExchange;

typedef enum {
    DSV3_EXPERT_FORWARD = 1, // rows in, outputs back
    DSV3_EXPERT_BACKWARD,    // output gradients in, row gradients back (weight gradients kept)
    DSV3_EXPERT_END,         // the step's (or the validation pass's) last request
} Dsv3ExpertOp;

// What the stage ranks asked for, on a server.
typedef struct {
    Dsv3ExpertOp op;
    int64_t layer;          // model layer id (-1 for DSV3_EXPERT_END)
    int64_t slot;           // the micro-batch's activation slot on the stage ranks
    int64_t rows;           // over all stage ranks
    const int64_t *offsets; // (El + 1) rows per local expert, as the receive lays them out
} Dsv3ExpertRequest;

// Collective on the MoE communicator of the caller's pipeline stage (stage ranks and expert
// servers of a job with expert servers). `watch` (the protocol's) must outlive the exchange.
Dsv3Err dsv3_expert_exchange_create(Dsv3ExpertExchange **out, const Dsv3Topology *topo,
                                    const Dsv3ModelArgs *args, Dsv3Watch *watch);

// Collective on the MoE communicator. NULL is a no-op.
void dsv3_expert_exchange_destroy(Dsv3ExpertExchange *x);

// Stage rank: the routed experts the model calls (valid as long as the exchange).
Dsv3Experts *dsv3_expert_exchange_experts(Dsv3ExpertExchange *x);

// Stage rank: tells every server of the stage that the pass is over.
Dsv3Err dsv3_expert_exchange_end(Dsv3ExpertExchange *x);

// Server: waits for every stage rank's next request. *req stays valid until the next call.
Dsv3Err dsv3_expert_exchange_next(Dsv3ExpertExchange *x, Dsv3ExpertRequest *req);

// Server: receives the request's rows into rows (req->rows, D), sorted by local expert.
Dsv3Err dsv3_expert_exchange_receive(Dsv3ExpertExchange *x, float *rows);

// Server: sends each stage rank its rows of `result` (req->rows, D, laid out as received).
Dsv3Err dsv3_expert_exchange_reply(Dsv3ExpertExchange *x, const float *result);

// One expert server's step: rows received, seconds computing, seconds waiting, and the stop
// signal it received (core/stop_signal.h; 0: none), which the stage ranks report for it.
typedef struct {
    double rows, compute_s, idle_s;
    int stop_signal;
} Dsv3ExpertServerWork;

// Collective on the MoE communicator, once per step: *sum_squares summed over its ranks; a
// server gives its `work` (stage ranks NULL) and a stage rank gets every server's summed up in
// *stats (servers NULL).
Dsv3Err dsv3_expert_exchange_step_sum(Dsv3ExpertExchange *x, double *sum_squares,
                                      const Dsv3ExpertServerWork *work,
                                      Dsv3ExpertServerStats *stats);

// Collective on the MoE communicator, with a pipeline, after dsv3_expert_exchange_step_sum: the
// stage ranks have summed *sum_squares over the pipeline stages (the servers take no part in
// that); the stage's first stage rank hands the global value to every member, servers included.
Dsv3Err dsv3_expert_exchange_share_sum(Dsv3ExpertExchange *x, double *sum_squares);

// Bytes of requests and rows this rank sent and received so far (both directions, every pass).
int64_t dsv3_expert_exchange_bytes(const Dsv3ExpertExchange *x);

// Stage rank: seconds the routed rows were away (dispatch, the servers' work, combine), and of
// those the seconds spent waiting in finish (exposed; the rest overlapped the shared experts).
typedef struct {
    double total_s, exposed_s;
} Dsv3ExpertTimes;

// Stage rank: the times since the last call, and starts counting again.
Dsv3ExpertTimes dsv3_expert_exchange_take_times(Dsv3ExpertExchange *x);

#endif
