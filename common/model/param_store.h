// param_store: where a rank's parameters live, and how a layer gets them (an interface).
//
// The stage model never owns parameter memory. Before it runs a group's forward or backward it
// asks its store to make the group's full parameters available (acquire: afterwards
// group->data/grad and every Dsv3Param's data/grad point at full buffers of group->numel
// elements); afterwards it gives them back (release); after a group's backward it hands its
// gradients over (reduce: the group's gradient buffer holds this micro-batch's contribution
// added to what was there), or, after the first part of a split backward, keeps them for the
// rest (keep). What a store does behind those calls is its own business: the
// local store below keeps every group whole, so all three do nothing; an FSDP store all-gathers
// a group's shards into a gather buffer on acquire, frees or keeps it on release (the reshard
// policy) and reduce-scatters the gradients into the shards on reduce.
//
// After the last micro-batch of a step the caller finishes the step's gradients (finish: every
// pending reduction complete, the shards' gradients hold the step's sums over the store's
// ranks, gathered copies dropped because the optimizer is about to change the values).
//
// What a rank owns is its flat shards (Dsv3ParamShard, one per group, shard_numel elements
// each, in the kernel context's memory space): the optimizer steps those, the checkpoint
// writes and reads their boxes (params.h), the gradient norm sums them.
//
// Calls are made in the same order on every rank of a group's FSDP group, so a store may use
// collectives inside them ("Collective on the FSDP group" for such a store; the local store
// makes none). Errors come back to the caller; a store never ends the job.
#ifndef DSV3_MODEL_PARAM_STORE_H
#define DSV3_MODEL_PARAM_STORE_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/model/model_args.h"
#include "common/model/params.h"
#include "kernels/kernels.h"

// WEIGHT_GRAD: a split backward's W, which needs only the gradient buffer its I kept (no
// parameter values: a sharded store gathers nothing for it).
typedef enum {
    DSV3_PARAM_USE_FORWARD,
    DSV3_PARAM_USE_BACKWARD,
    DSV3_PARAM_USE_WEIGHT_GRAD
} Dsv3ParamUse;

typedef struct Dsv3ParamStore Dsv3ParamStore;

typedef struct {
    // Makes group `g`'s full parameters (and its full gradient buffer) available for `use`; for
    // DSV3_PARAM_USE_WEIGHT_GRAD only the gradient buffer that keep held (the values unbound).
    Dsv3Err (*acquire)(Dsv3ParamStore *self, int g, Dsv3ParamUse use);
    // The group's full buffers are no longer needed for `use`.
    Dsv3Err (*release)(Dsv3ParamStore *self, int g, Dsv3ParamUse use);
    // The group's backward of one micro-batch is done: take its gradients into the shard.
    Dsv3Err (*reduce)(Dsv3ParamStore *self, int g);
    // Only part of the group's backward is done (a split backward's I; its W comes later): its
    // gradient buffer, with what was added, outlives the release that follows, and the next
    // acquire for backward adds to it instead of starting from zero. The next reduce takes all.
    Dsv3Err (*keep)(Dsv3ParamStore *self, int g);
    // The step's backward is over: complete the reductions, drop the gathered copies.
    Dsv3Err (*finish)(Dsv3ParamStore *self);
    void (*destroy)(Dsv3ParamStore *self);
} Dsv3ParamStoreOps;

struct Dsv3ParamStore {
    const Dsv3ParamStoreOps *ops;
    const Dsv3KernelContext *kernels; // memory space and ops of the buffers
    Dsv3ModelArgs args;
    Dsv3StageRange range;
    int n_groups;
    Dsv3ParamGroup *groups; // (n_groups) layouts, in dsv3_param_stage_groups order
    Dsv3ParamShard *shards; // (n_groups) what this rank owns
    // Ranks the shards are spread over (the FSDP group; 1: every group whole on this rank).
    // Their gradients are complete after finish, summed over those ranks (and, for HSDP, over
    // the replicas); with 1 the caller sums them over the data-parallel ranks itself.
    int64_t fsdp_size;
};

// The index of the group of `kind` for `layer_id` (-1 for the embedding and the head), or -1
// when this store has no such group.
int dsv3_param_store_find(const Dsv3ParamStore *store, Dsv3GroupKind kind, int64_t layer_id);

// The parameter with this FQN and its group (or NULL when this store has none).
Dsv3Param *dsv3_param_store_find_fqn(Dsv3ParamStore *store, const char *fqn, int *group);

// Elements of every shard together (what the rank owns).
int64_t dsv3_param_store_numel(const Dsv3ParamStore *store);

// For stores: lays out the groups of store->range for `spec`, allocates every group's shard
// (values initialised as torchtitan does with `seed`, gradients and moments zero) in memory of
// store->kernels's space. store->args, range and kernels must be set.
Dsv3Err dsv3_param_store_shards_create(Dsv3ParamStore *store, const Dsv3ShardSpec *spec,
                                       uint64_t seed);

// For stores: frees what dsv3_param_store_shards_create made (safe on a partial one).
void dsv3_param_store_shards_free(Dsv3ParamStore *store);

// The local store: every group of `range` whole (no sharding), in memory of `kernels`'s space,
// values initialised as torchtitan does with `seed`, gradients and moments zero. Its
// acquire/release/reduce/finish make no collective and change nothing; the groups are bound to
// their buffers from creation on. `spec` (NULL: nothing cut) may cut the routed experts over ep
// (an expert server's 1/ep of them) and the tensors over tp (a tp rank's pieces); fsdp must
// be 1. `kernels` must outlive the store.
Dsv3Err dsv3_param_store_local_create(Dsv3ParamStore **out, const Dsv3KernelContext *kernels,
                                      const Dsv3ModelArgs *args, const Dsv3StageRange *range,
                                      const Dsv3ShardSpec *spec, uint64_t seed);

// Releases a store of any kind (NULL is allowed).
void dsv3_param_store_destroy(Dsv3ParamStore *store);

#endif
