// layer: one DeepSeek-V3 transformer block, forward and backward.
//
//   h   = x + wo · MLA(attention_norm(x))
//   out = h + FFN(ffn_norm(h))       FFN = SwiGLU (dense layers) or MoE (shared + routed)
//
// A layer keeps what its backward needs in Dsv3LayerActs. Which of those buffers belong to
// the layer and which are shared scratch depends on activation checkpointing:
//   none       every buffer per layer;
//   op         matmul and attention outputs per layer; norm outputs, SwiGLU products and
//              gathered expert inputs are recomputed in backward (element-wise, cheap);
//   full       only the layer input per layer; backward reruns the whole forward first.
// Selective "every N-th layer" uses full for layers (id + 1) % N == 0 and none for others.
// Every mode computes the same numbers: recomputation repeats the same operations in the
// same order.
//
// Tensor and sequence parallelism (torchtitan's DeepSeek-V3 plan, params.h): over tp ranks, a
// layer holds H/tp heads (wq or wq_b and wkv_b column-wise, wo row-wise) and I/tp or Fs/tp
// hidden features of the dense FFN or the shared experts (w1, w3 column-wise, w2 row-wise);
// wq_a, wkv_a, the norms, the router and the routed experts are replicated. Between those TP
// regions the micro-batch is split over the tp ranks by rows (tokens): rank r holds rows
// [r·N/tp, (r+1)·N/tp) of the layer's input and output, its norms' outputs, residuals, router
// and routed experts (sequence parallelism). A TP region's input (attention_norm's or
// ffn_norm's output) is all-gathered over the tp group (DSV3_GROUP_TP), its row-wise output
// reduce-scattered back into rows; in backward the other way round. The gradients of
// replicated parameters are then partial sums over the tp ranks (their own rows, or their own
// heads' share), which the caller sums over the tp group before the optimizer step.
//
// Context parallelism (cp > 1, torchtitan's load balancing): a rank holds T = Tk / cp positions
// of each of the micro-batch's sequences of Tk tokens: chunks r and 2·cp − 1 − r of the
// sequence cut into 2·cp, so that every rank has the same causal work. Everything but the
// attention runs on these tokens alone; the attention's keys and values are all-gathered over
// the cp group (DSV3_GROUP_CP) after RoPE, into the whole sequence's order, and its queries
// attend at their positions in it (q_pos); in backward the keys' and values' gradients are
// reduce-scattered back (torchtitan's "allgather" rotation). With cp_ring ("alltoall") the
// keys and values pass around the cp ring instead, one rank's shard per step: the queries
// attend to each shard at their places among its keys (ring_pos), and the partial attentions
// merge (attention_merge); in backward each shard's key and value gradients travel with it and
// arrive home after cp steps. Each rank then holds one shard at a time, not the whole sequence.
//
// Legend: N = B × T tokens of the micro-batch, Nl = N / tp this rank's rows, D dim, H heads,
// Dqk = nope + rope head dims, Dv value head dim, Q q_lora_rank, C kv_lora_rank, R rope dims,
// I inter_dim, E experts, K top_k, M = Nl × K routed rows, F moe_inter_dim, Tk = T × cp key
// positions per sequence, Nk = B × Tk key rows,
// Fs = F × num_shared_experts; H, I and Fs are a tp rank's share (the global ones / tp). No MPI
// here.
#ifndef DSV3_MODEL_LAYER_H
#define DSV3_MODEL_LAYER_H

#include <stdint.h>

#include "common/core/arena.h"
#include "common/core/error.h"
#include "common/model/collectives.h"
#include "common/model/experts.h"
#include "common/model/model_args.h"
#include "common/model/params.h"
#include "kernels/kernels.h"

typedef enum { DSV3_AC_NONE, DSV3_AC_OP, DSV3_AC_FULL } Dsv3AcMode;

// A split backward (a zero-bubble pipeline's I and W actions): the I pass computes what flows
// to the layer's input — and the gradients of the norm weights and the routed experts — and
// defers the weight gradients of the layer's linears (wq or wq_a and wq_b, wkv_a, wkv_b, wo,
// the dense FFN's or the shared experts' w1, w2, w3, the router gate) into a queue; the W pass
// adds them later. Each record keeps a copy of its linear's dout (scratch, overwritten before W
// runs) and points at its x: the layer's own activation when the layer is not checkpointed
// (kept until the slot's next forward, which comes after W), else a copy (the recomputation
// buffers are shared by all layers).
typedef struct {
    int64_t layer_id;    // the layer whose group holds the weight
    Dsv3ParamSlot param; // which weight of it
    int64_t N, In, Out;  // the linear's shape (kernels.h)
    const float *dout;   // (N, Out) in the queue's floats
    const float *x;      // (N, In) in the layer's activations or the queue's floats
} Dsv3WeightGrad;

// The most linears one layer defers: wq_a, wq_b, wkv_a, wkv_b, wo, w1, w2, w3 and the router gate.
enum { DSV3_LAYER_DEFERRED_MAX = 9 };

// The deferred weight gradients of a micro-batch's backward, in the order of their linears.
typedef struct {
    Dsv3WeightGrad *records; // (capacity)
    int64_t count, capacity;
    float *floats; // (n_floats) the records' dout and copied x
    int64_t used, n_floats;
    int inputs_kept; // the layer being deferred keeps its inputs (no checkpointing): no copies
} Dsv3WeightGrads;

// Attention keeps its scores for backward (saving a q·kᵀ recomputation) while they take at
// most this many bytes per layer: short sequences yes, long ones no.
#define DSV3_ATTENTION_SCORES_MAX_BYTES (64LL << 20)

// Shared by every layer of a model for one micro-batch shape.
typedef struct {
    const Dsv3KernelContext *kernels; // where the ops run, with a workspace for all of them
    int64_t B, T;                     // micro-batch: B sequences of T tokens (this rank's)
    const float *rope_cos;            // (T, R/2) at the tokens' positions
    const float *rope_sin;            // (T, R/2)
    float softmax_scale;              // Dqk^-0.5, × mscale² with YaRN
    const int32_t *doc;   // (B, Tk) document ids for block-causal masks, or NULL (causal)
    int64_t cp, cp_rank;  // context-parallel degree (1: whole sequences) and rank
    int cp_ring;          // cp > 1: keys and values pass around the ring instead of all-gathered
    const int32_t *q_pos; // (B, T) the tokens' positions in their sequence (cp > 1), or NULL
    // cp_ring: for each rank j's shard, (cp, B, T) the tokens' places among its keys (−1: none
    // visible) and (cp, B, T) its keys' document ids (NULL: causal).
    const int32_t *ring_pos, *ring_doc;
    Dsv3RouterArgs router;
    Dsv3Experts *experts;         // the routed experts of the MoE layers
    int64_t slot;                 // the micro-batch's activation slot (model.h), for the experts
    int64_t tp, tp_rank;          // tensor-parallel degree (1: the whole layer) and rank
    Dsv3Collectives *collectives; // gathers and reductions over DSV3_GROUP_TP when tp > 1
    Dsv3WeightGrads *defer;       // backward defers the linears' weight gradients here (NULL:
                                  // adds them to the gradients at once)
} Dsv3LayerContext;

typedef struct {
    Dsv3AcMode mode;
    // attention block
    float *x;                 // (Nl, D) layer input (always per layer)
    float *xn, *attn_rstd;    // (N, D) gathered, (Nl): attention_norm
    float *qa, *qa_rstd, *qn; // (N, Q), (N), (N, Q): q_lora_rank > 0 only
    float *q;                 // (N, H, Dqk) after RoPE
    float *kvc, *kv_rstd;     // (N, C), (N): the latent before kv_norm
    float *kvn;               // (N, C)
    float *kpe;               // (N, R) after RoPE
    float *k, *v;             // (Nk, H, Dqk), (Nk, H, Dv): the whole sequences' under cp
                              // (this rank's alone with cp_ring)
    float *o;                 // (N, H, Dv) attention output
    float *lse;               // (B, H, T)
    float *attn_scores;       // (B, H, T, Tk) attention scores kept for backward, or NULL
    float *h;                 // (Nl, D) residual after attention
    // FFN block
    float *hn, *ffn_rstd;   // (N, D) gathered for the FFN or shared experts, (Nl): ffn_norm
    float *fa, *fb, *fg;    // dense (N, I) or shared experts (N, Fs): w1 h, w3 h, silu(a)·b
    float *logits, *scores; // (Nl, E) router
    float *weights;         // (Nl, K)
    int32_t *topk;          // (Nl, K)
    int64_t *counts;        // (E) tokens per expert of this micro-batch
    int32_t *order;         // (M) routed rows, sorted by expert
    int64_t *offsets;       // (E + 1)
    float *xs;              // (M, D) gathered expert inputs
    float *h1, *h3, *ys;    // (M, F), (M, F) when the experts are local; (M, D)
} Dsv3LayerActs;

// Temporaries of forward and backward, shared by all layers of a model.
typedef struct {
    float *kva;             // (N, C + R)
    float *kvb;             // (N, H, nope + Dv)
    float *dx;              // (Nl, D) gradient flowing into the layer input
    float *dh;              // (Nl, D)
    float *dn;              // (N, D) gradient of a norm output (partial under tp)
    float *dq;              // (N, H, Dqk)
    float *dk, *dv;         // (N, H, Dqk), (N, H, Dv)
    float *do_;             // (N, H, Dv)
    float *dkvb;            // (N, H, nope + Dv)
    float *dkvn;            // (N, C)
    float *dkvc;            // (N, C)
    float *dkva;            // (N, C + R)
    float *dqn, *dqa;       // (N, Q)
    float *dfa, *dfb, *dfg; // (N, max(I, Fs))
    float *ffn_out;         // (N, D) a row-wise layer's output (partial under tp)
    float *dlogits;         // (Nl, E)
    float *dweights;        // (Nl, K)
    float *dxs, *dys;       // (M, D)
    float *rows;            // (Nl, D) tp > 1: a reduce-scatter's rows
    float *gathered;        // (N, D) tp > 1: an all-gathered gradient
    float *k_ranks;         // (cp, N, H, Dqk) cp > 1: keys (or their gradients) in rank order
    float *v_ranks;         // (cp, N, H, Dv)
    float *dk_keys;         // (Nk, H, Dqk) cp > 1: the whole sequences' key gradients
    float *dv_keys;         // (Nk, H, Dv)
    // cp_ring: the shard in flight and its gradients (two of each: one sent, one received),
    // a shard's partial output, lse and gradients.
    float *ring_k[2], *ring_v[2], *ring_dk[2], *ring_dv[2]; // (N, H, Dqk), (N, H, Dv)
    float *ring_o, *ring_lse, *ring_dq;                     // (N, H, Dv), (B, H, T), (N, H, Dqk)
    float *ring_dk_part, *ring_dv_part;                     // (N, H, Dqk), (N, H, Dv)
} Dsv3LayerScratch;

// Allocates a layer's activations for mode `mode` (moe: 1 for a MoE layer, 0 for a dense
// one); buffers that the mode recomputes point into `shared`, one set for all layers made
// with mode DSV3_AC_NONE, shared = NULL and moe = -1 (room for both kinds). The routed
// experts' hidden activations h1 and h3 exist only when the experts run on this rank
// (local_experts); expert servers keep their own. tp and cp are the tensor- and
// context-parallel degrees (cp_ring: the ring rotation); T the rank's positions per sequence.
Dsv3Err dsv3_layer_acts_create(Dsv3LayerActs *acts, Dsv3Arena *arena, Dsv3AcMode mode,
                               const Dsv3LayerActs *shared, const Dsv3ModelArgs *args, int moe,
                               int local_experts, int64_t B, int64_t T, int64_t tp, int64_t cp,
                               int cp_ring);

// Context parallelism's load balancing: of the sequence cut into 2·cp chunks, half `half` (0 or
// 1) of cp rank `rank`'s tokens is chunk rank (half 0) or 2·cp − 1 − rank (half 1).
int64_t dsv3_layer_cp_chunk(int64_t cp, int64_t rank, int64_t half);

// Sequence parallelism's two collectives on DSV3_GROUP_TP, for n_rows rows of D floats per tp
// rank. sp_gather: full (tp × n_rows, D) = every rank's rows, this rank's copied from `rows`
// first (unless they are already in place); with tp 1 only that copy. sp_reduce (tp > 1):
// rows (n_rows, D) = this rank's rows of the sum over the tp ranks of partial (tp × n_rows, D).
Dsv3Err dsv3_layer_sp_gather(const Dsv3LayerContext *ctx, float *full, const float *rows,
                             int64_t n_rows, int64_t D);
Dsv3Err dsv3_layer_sp_reduce(const Dsv3LayerContext *ctx, float *rows, const float *partial,
                             int64_t n_rows, int64_t D);

Dsv3Err dsv3_layer_scratch_create(Dsv3LayerScratch *s, Dsv3Arena *arena, const Dsv3ModelArgs *args,
                                  int64_t B, int64_t T, int64_t tp, int64_t cp, int cp_ring);

// out (Nl, D) = the block applied to x (Nl, D), this rank's rows; x is copied into acts->x
// (unless it is acts->x). acts->counts holds this rank's rows' tokens per expert for MoE
// layers.
Dsv3Err dsv3_layer_forward(float *out, const float *x, Dsv3LayerActs *acts, const Dsv3ParamGroup *g,
                           const Dsv3ModelArgs *args, const float *expert_bias,
                           const Dsv3LayerContext *ctx, Dsv3LayerScratch *s);

// dx (Nl, D) written from dout (Nl, D) (they may alias); parameter gradients added to g->grad
// (replicated ones partial under tp, see above), those of the linears queued instead when
// ctx->defer is set. `shared` holds the recomputation buffers of checkpointed modes.
Dsv3Err dsv3_layer_backward(float *dx, const float *dout, Dsv3LayerActs *acts, Dsv3ParamGroup *g,
                            const Dsv3ModelArgs *args, const float *expert_bias,
                            const Dsv3LayerContext *ctx, Dsv3LayerScratch *s,
                            Dsv3LayerActs *shared);

// The floats a layer's deferred weight gradients take in a queue (Σ N · Out over its deferred
// linears, and N · In as well when `mode` checkpoints), for the arguments of
// dsv3_layer_acts_create.
int64_t dsv3_layer_deferred_floats(const Dsv3ModelArgs *args, int moe, Dsv3AcMode mode, int64_t B,
                                   int64_t T, int64_t tp, int64_t cp, int cp_ring);

// An empty queue with room for `records` records and `n_floats` floats (NULL in a measuring
// arena's plan).
Dsv3Err dsv3_layer_weight_grads_create(Dsv3WeightGrads *q, Dsv3Arena *arena, int64_t records,
                                       int64_t n_floats);

// The W pass of one layer: adds q's records from *next on that belong to g's layer (g acquired
// for backward) into g's gradients, and moves *next past them.
Dsv3Err dsv3_layer_weight_grads_run(const Dsv3KernelContext *kc, const Dsv3WeightGrads *q,
                                    int64_t *next, Dsv3ParamGroup *g);

#endif
