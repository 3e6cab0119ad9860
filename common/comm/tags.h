// tags: every point-to-point message tag of dsv3, in one place.
//
// Collectives need no tag. Each subsystem uses its own duplicated communicator as well, so a
// tag only has to be unique among the messages of one subsystem; keeping them in one enum
// makes that easy to see. They travel on the protocol's communicator (comm/protocol.h), except
// the DSV3_TAG_EXPERT_* ones, which travel on the expert exchange's (comm/expert_exchange.h),
// and the DSV3_TAG_PIPE_* ones, on the pipeline exchange's (comm/pipe_exchange.h).
#ifndef DSV3_COMM_TAGS_H
#define DSV3_COMM_TAGS_H

typedef enum {
    DSV3_TAG_BATCH = 100,   // coordinator → stage rank: one micro-batch's token windows
    DSV3_TAG_REPORT,        // stage rank → coordinator: the step's loss, norm, timings, memory
    DSV3_TAG_EXPERT_COUNTS, // stage rank 0 → coordinator: tokens per expert (L, E) int64
    DSV3_TAG_EXPERT_BIAS,   // stage rank 0 → coordinator: expert biases (L, E) float
    DSV3_TAG_TRACE,         // stage rank → coordinator: a profiled step's trace events
    DSV3_TAG_PING,          // a rank whose wait timed out → a peer: are you alive? (comm/watch.h)
    DSV3_TAG_PONG,          // the peer's answer: what it is waiting for
    DSV3_TAG_EXPERT_REQUEST,   // stage rank → expert server: what to do next, rows per expert
    DSV3_TAG_EXPERT_ROWS,      // stage rank → expert server: the rows (or their gradients)
    DSV3_TAG_EXPERT_RESULT,    // expert server → stage rank: the outputs (or input gradients)
    DSV3_TAG_PIPE_ACTIVATIONS, // stage s → stage s + 1: a micro-batch's output activations
    DSV3_TAG_PIPE_DOC,         // stage s → stage s + 1: their document ids
    DSV3_TAG_PIPE_GRADIENT,    // stage s + 1 → stage s: the gradient of stage s's output
} Dsv3Tag;

#endif
