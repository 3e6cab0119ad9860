// experts: the local implementation — the layer's experts group from the store, grouped
// SwiGLU kernels on this rank. Legend as in experts.h.
#include "experts.h"

#include <inttypes.h>

// The store's experts group of `layer`, acquired for `use`.
static Dsv3Err acquire_group(Dsv3LocalExperts *e, int64_t layer, Dsv3ParamUse use, int *g) {
    *g = dsv3_param_store_find(e->store, DSV3_GROUP_EXPERTS, layer);
    DSV3_CHECK(*g >= 0, DSV3_ERR_USAGE,
               "experts: this rank holds no routed experts of layer %" PRId64
               " (its parameter store has no experts group for it)",
               layer);
    return e->store->ops->acquire(e->store, *g, use);
}

// h1 and h3 are the slot's own (the model's activations): the slot is not needed here.
static Dsv3Err local_forward(Dsv3Experts *self, int64_t layer, int64_t slot, Dsv3TensorDtype dtype,
                             void *ys, void *h1, void *h3, const void *xs, const int64_t *offsets) {
    (void)slot;
    Dsv3LocalExperts *e = (Dsv3LocalExperts *)self;
    int g = -1;
    DSV3_CALL(acquire_group(e, layer, DSV3_PARAM_USE_FORWARD, &g));
    const Dsv3ParamGroup *group = &e->store->groups[g];
    const Dsv3Param *w1 = &group->params[DSV3_P_EXPERTS_W1];
    Dsv3Err err = dsv3_experts_forward(
        e->kernels, dtype, ys, h1, h3, xs, w1->data, group->params[DSV3_P_EXPERTS_W2].data,
        group->params[DSV3_P_EXPERTS_W3].data, offsets, w1->local[0], w1->local[2], w1->local[1]);
    Dsv3Err released = e->store->ops->release(e->store, g, DSV3_PARAM_USE_FORWARD);
    DSV3_CALL(err);
    return released;
}

static Dsv3Err local_backward(Dsv3Experts *self, int64_t layer, int64_t slot, Dsv3TensorDtype dtype,
                              void *dxs, const void *dys, const void *xs, const void *h1,
                              const void *h3, const int64_t *offsets) {
    (void)slot;
    Dsv3LocalExperts *e = (Dsv3LocalExperts *)self;
    int g = -1;
    DSV3_CALL(acquire_group(e, layer, DSV3_PARAM_USE_BACKWARD, &g));
    const Dsv3ParamGroup *group = &e->store->groups[g];
    const Dsv3Param *w1 = &group->params[DSV3_P_EXPERTS_W1],
                    *w2 = &group->params[DSV3_P_EXPERTS_W2],
                    *w3 = &group->params[DSV3_P_EXPERTS_W3];
    Dsv3Err err = dsv3_experts_backward(e->kernels, dtype, dxs, w1->grad, w2->grad, w3->grad, dys,
                                        xs, h1, h3, w1->data, w2->data, w3->data, offsets,
                                        w1->local[0], w1->local[2], w1->local[1]);
    if (err == DSV3_OK) err = e->store->ops->reduce(e->store, g);
    Dsv3Err released = e->store->ops->release(e->store, g, DSV3_PARAM_USE_BACKWARD);
    DSV3_CALL(err);
    return released;
}

// Local results are ready when forward and backward return.
static Dsv3Err local_finish(Dsv3Experts *self, int64_t layer) {
    (void)self, (void)layer;
    return DSV3_OK;
}

void dsv3_local_experts_init(Dsv3LocalExperts *e, Dsv3ParamStore *store,
                             const Dsv3KernelContext *kernels) {
    *e = (Dsv3LocalExperts){
        .base = {local_forward, local_backward, local_finish}, .store = store, .kernels = kernels};
}
