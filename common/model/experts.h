// experts: the routed experts of the MoE layers, reached through an interface so that they
// can be computed on this rank or by the pipeline stage's expert servers.
//
// A MoE layer hands its experts the rows routed to them, sorted by expert (kernels.h
// moe_plan), and gets their outputs back; in backward it hands the gradients of those outputs
// and gets the gradients of the rows. Where the weights live and who accumulates their
// gradients is the implementation's business: the local implementation below takes the
// layer's experts group from the rank's parameter store and runs the grouped SwiGLU kernels;
// an expert-server implementation sends the rows over the stage's MoE communicator ("Collective
// on the MoE communicator" for it). All tensors are in the kernel context's memory space.
//
// Legend: M routed rows, D dim, F moe_inter_dim, E experts.
#ifndef DSV3_MODEL_EXPERTS_H
#define DSV3_MODEL_EXPERTS_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/model/param_store.h"
#include "kernels/kernels.h"

typedef struct Dsv3Experts Dsv3Experts;
struct Dsv3Experts {
    // ys (M, D) for xs (M, D) of MoE layer `layer`, rows grouped by expert as offsets (E + 1)
    // say, for the micro-batch in activation slot `slot` (model.h). h1, h3 (M, F) are what a
    // local implementation keeps for backward (others ignore them and may be given NULL); an
    // implementation that keeps its own keys it by (layer, slot), since a pipeline schedule runs
    // several forwards before their backwards.
    Dsv3Err (*forward)(Dsv3Experts *self, int64_t layer, int64_t slot, Dsv3TensorDtype dtype,
                       void *ys, void *h1, void *h3, const void *xs, const int64_t *offsets);
    // dxs (M, D) written from dys (M, D) for slot's micro-batch; the experts' weight gradients
    // are added where the experts live.
    Dsv3Err (*backward)(Dsv3Experts *self, int64_t layer, int64_t slot, Dsv3TensorDtype dtype,
                        void *dxs, const void *dys, const void *xs, const void *h1, const void *h3,
                        const int64_t *offsets);
    // ys of the last forward, or dxs of the last backward, are ready after this call, not
    // before: an implementation that sends the rows elsewhere returns from forward and backward
    // once they travel, and the layer computes what does not need them (the shared experts)
    // before it calls finish. Inputs stay untouched until then.
    Dsv3Err (*finish)(Dsv3Experts *self, int64_t layer);
};

// Experts computed on this rank from the experts groups of `store` (which must hold the
// routed experts: range.routed), with the kernels of `kernels`. Both must outlive it.
typedef struct {
    Dsv3Experts base;
    Dsv3ParamStore *store;
    const Dsv3KernelContext *kernels;
} Dsv3LocalExperts;

void dsv3_local_experts_init(Dsv3LocalExperts *experts, Dsv3ParamStore *store,
                             const Dsv3KernelContext *kernels);

#endif
