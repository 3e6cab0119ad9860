// kernels: the op library, one backend-neutral C API.
//
// Every op of the model has a forward and a backward, called through a kernel context
// (Dsv3KernelContext): the backend that runs it (CPU with OpenBLAS and OpenMP, the CPU
// reference, or CUDA), its stream, its BLAS handle and the caller's workspace. A backend table
// (kernels/backend.h) holds one function per op; the public functions below dispatch to the
// context's table, so a caller never names a backend after creating its context.
//
// Memory. Tensors live in the context's memory space: host memory on the CPU backends, device
// memory on CUDA (allocated with dsv3_memory_alloc, moved with dsv3_memory_copy). Ops never
// allocate: the scratch an op needs comes from ctx->workspace, whose size the caller takes from
// dsv3_workspace_bytes (the largest over the ops it will call); an op given too small a
// workspace fails with DSV3_ERR_USAGE before computing anything. Ops keep no state between
// calls and are asynchronous on CUDA (ordered on the context's stream; dsv3_synchronize waits);
// results that are scalars (a loss, a sum of squares, a count) are written to memory the caller
// passes, in the context's memory space.
//
// Precision. Activations and the weights they meet may be bf16 on a GPU: such tensors are
// `void *` and their op takes a Dsv3TensorDtype that says what they hold. Everything else is
// fp32 (typed float *): normalisation statistics, router scores and weights, softmax
// statistics, rotary tables, weight gradients, master weights and AdamW state. The CPU
// backends accept DSV3_TENSOR_F32 only (DSV3_ERR_USAGE otherwise); bf16 is stored as raw
// uint16_t bits, since C11 has no bf16 type. Separately, a context's GEMMs may compute in bf16
// on fp32 tensors (dsv3_kernel_context_set_matmul): operands rounded, products summed in fp32.
//
// Gradients of inputs ("d<x>") are WRITTEN unless the comment says added; gradients of weights
// are ADDED, so that micro-batches accumulate into the same buffer.
//
// A reference version of every op, written for clarity, is the DSV3_BACKEND_CPU_REFERENCE
// backend: the fast CPU ops and the CUDA ops are tested against it, and it against PyTorch.
//
// This library knows nothing of the model: no layer, no config, no MPI.
//
// Legend: N tokens (B × T), B sequences, T positions, D model width, In/Out linear in/out
// features, V vocabulary, H heads, Dqk / Dv query-key / value head dims, R rotary dims,
// E experts, K experts per token, F expert hidden width, M = N × K routed rows.
#ifndef DSV3_KERNELS_KERNELS_H
#define DSV3_KERNELS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

// Label of a position that does not count in the loss (PyTorch's ignore_index).
enum { DSV3_IGNORE_INDEX = -100 };

// ---- context ----

typedef enum {
    DSV3_BACKEND_CPU,           // C, OpenBLAS GEMMs, OpenMP threads
    DSV3_BACKEND_CPU_REFERENCE, // the plain reference versions, single-threaded
    DSV3_BACKEND_CUDA,          // CUDA kernels, cuBLASLt (built when nvcc is found)
} Dsv3Backend;

enum { DSV3_BACKEND_COUNT = 3 };

// What the `void *` tensors of an op hold.
typedef enum { DSV3_TENSOR_F32, DSV3_TENSOR_BF16 } Dsv3TensorDtype;

// Directions of dsv3_memory_copy ("device" is the context's memory space).
typedef enum {
    DSV3_COPY_HOST_TO_DEVICE,
    DSV3_COPY_DEVICE_TO_HOST,
    DSV3_COPY_DEVICE_TO_DEVICE,
} Dsv3CopyKind;

typedef struct Dsv3KernelOps Dsv3KernelOps;

typedef struct {
    const Dsv3KernelOps *ops; // the backend's table
    Dsv3Backend backend;
    int device;             // CUDA device ordinal; -1 on the CPU backends
    void *stream;           // cudaStream_t; NULL on the CPU backends
    void *blas;             // the backend's BLAS state (cuBLASLt handle); NULL on the CPU
    void *workspace;        // scratch for the ops, in the context's memory space; the caller's
    size_t workspace_bytes; // size of workspace
    // What the GEMMs of the ops round their fp32 operands to (the products are summed in
    // fp32): DSV3_TENSOR_F32 after create, DSV3_TENSOR_BF16 by dsv3_kernel_context_set_matmul.
    Dsv3TensorDtype matmul_dtype;
    // DSV3_CONTEXT_SCALARS 8-byte slots of the context's memory, made by create, for the scalar
    // results of ops that the caller reads back (a loss, a sum of squares, a count): pass
    // (double *)ctx->scalars + i as the op's output, then dsv3_scalar_read it.
    void *scalars;
} Dsv3KernelContext;

enum { DSV3_CONTEXT_SCALARS = 8 };

// "cpu", "cpu-reference", "cuda".
const char *dsv3_backend_name(Dsv3Backend backend);

// Whether this build has the backend (CUDA: compiled in; a device is checked at create).
int dsv3_backend_built(Dsv3Backend backend);

// A context for `backend` on `device` (CUDA: makes it current, creates a stream and a cuBLASLt
// handle; ignored on the CPU). No workspace: set ctx->workspace and ctx->workspace_bytes to
// memory of the context's space before calling an op that needs one. Errors: DSV3_ERR_USAGE
// for a backend this build lacks, DSV3_ERR_BACKEND when the device cannot be used (error.h has
// no DSV3_ERR_CUDA: a CUDA failure is a backend error).
Dsv3Err dsv3_kernel_context_create(Dsv3KernelContext *ctx, Dsv3Backend backend, int device);

// Makes the context's GEMMs (linear layers, experts, attention, output head) round their
// operands to `dtype` and sum the products in fp32: DSV3_TENSOR_BF16 is bf16 compute, as GPUs
// do it (the CPU backend needs a CPU with AVX512-BF16); DSV3_TENSOR_F32 is plain fp32. Tensors
// stay as their ops' dtypes say. Errors: DSV3_ERR_USAGE naming the backend and what it lacks.
Dsv3Err dsv3_kernel_context_set_matmul(Dsv3KernelContext *ctx, Dsv3TensorDtype dtype);

// Releases the stream, handle and scalar slots (not the workspace). Safe on a zeroed context.
void dsv3_kernel_context_destroy(Dsv3KernelContext *ctx);

// host (bytes) = the scalar result at `scalar` (context memory, e.g. a slot of ctx->scalars),
// once the ops issued before have finished (on CUDA: waits for the stream, and reports the
// data faults its kernels met).
Dsv3Err dsv3_scalar_read(const Dsv3KernelContext *ctx, void *host, const void *scalar,
                         size_t bytes);

// The name OpenBLAS gives the kernels it runs for the CPU backend's fp32 GEMMs ("SkylakeX",
// "Haswell", ...; blas_kernels.c).
const char *dsv3_cpu_blas_kernels(void);

// OpenBLAS picks its kernels when it loads, from the CPU's model, and falls back to its generic
// SSE3 kernels ("Prescott") on a model newer than its release, several times slower than the
// AVX2 or AVX-512 kernels the CPU runs. Where that happened and OPENBLAS_CORETYPE is not set,
// restarts the process (the same executable and arguments) with OPENBLAS_CORETYPE naming the
// fastest kernels the CPU's instruction sets allow; returns where there is nothing to do or the
// restart failed. Call first in main, before MPI or any thread starts.
void dsv3_cpu_blas_restart_on_fallback(char **argv);

// Router settings (torchtitan's TokenChoiceTopKRouter).
typedef struct {
    int64_t num_experts;        // E
    int64_t top_k;              // K
    int64_t num_groups;         // expert groups for group-limited routing; 0: off
    int64_t num_limited_groups; // groups a token may use; 0: off
    int sigmoid;                // 1: sigmoid scores, 0: softmax over experts
    int route_norm;             // 1: the K weights of a token are renormalised to sum to one
    float route_scale;          // factor on the weights
} Dsv3RouterArgs;

// AdamW settings of one step.
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int64_t step; // 1 on the first step (bias correction)
} Dsv3AdamWArgs;

// Shapes for dsv3_workspace_bytes: the fields the op's signature uses, the others 0.
typedef struct {
    int64_t N, D, V, B, T, Tq, Tk, H, Dqk, Dv, E, K, M, F, chunk;
} Dsv3OpShape;

// ---- the ops ----
//
// X(ID, name, parameter list, argument list): each line declares dsv3_<name>, a Dsv3Err
// function with those parameters, and the table entry of every backend. The comment above a
// block gives each op's semantics and shapes.

// Memory of the context's space, and moving bytes.
//   memory_alloc: *out = `bytes` bytes, 64-byte aligned, counted (`what` names them in errors).
//   memory_free: releases memory_alloc's memory; NULL is allowed.
//   memory_copy: `bytes` bytes from src to dst in the direction `kind`; the regions may not
//     overlap. Host memory is the caller's ordinary memory.
//   memory_zero: `bytes` zero bytes at dst.
//   synchronize: returns when every op issued on the context has finished.
//   convert: dst (n) of dst_dtype = src (n) of src_dtype, rounding to nearest even.
#define DSV3_KERNELS_MEMORY(X)                                                                     \
    X(MEMORY_ALLOC, memory_alloc,                                                                  \
      (const Dsv3KernelContext *ctx, void **out, size_t bytes, const char *what),                  \
      (ctx, out, bytes, what))                                                                     \
    X(MEMORY_FREE, memory_free, (const Dsv3KernelContext *ctx, void *p), (ctx, p))                 \
    X(MEMORY_COPY, memory_copy,                                                                    \
      (const Dsv3KernelContext *ctx, void *dst, const void *src, size_t bytes, Dsv3CopyKind kind), \
      (ctx, dst, src, bytes, kind))                                                                \
    X(MEMORY_ZERO, memory_zero, (const Dsv3KernelContext *ctx, void *dst, size_t bytes),           \
      (ctx, dst, bytes))                                                                           \
    X(SYNCHRONIZE, synchronize, (const Dsv3KernelContext *ctx), (ctx))                             \
    X(CONVERT, convert,                                                                            \
      (const Dsv3KernelContext *ctx, void *dst, Dsv3TensorDtype dst_dtype, const void *src,        \
       Dsv3TensorDtype src_dtype, int64_t n),                                                      \
      (ctx, dst, dst_dtype, src, src_dtype, n))

// Workspace: *bytes = the scratch that op `op` (a DSV3_OP_* of this list) needs for `shape`
// on this context (0 for most ops). Callers size ctx->workspace as the largest of the ops they
// call; the CPU backend's sizes grow with the OpenMP thread count of the calling thread.
#define DSV3_KERNELS_WORKSPACE(X)                                                                  \
    X(WORKSPACE_BYTES, workspace_bytes,                                                            \
      (const Dsv3KernelContext *ctx, int op, const Dsv3OpShape *shape, size_t *bytes),             \
      (ctx, op, shape, bytes))

// Token bookkeeping.
//   tokens_check: every tokens (N) id in [0, V); otherwise DSV3_ERR_USAGE naming the first
//     position outside and its value.
//   document_ids: doc (B, T) as torchtitan's document mask: a position belongs to the document
//     that the last eos before it closed (ids count from 0 per sequence); the eos itself ends
//     its own document. eos < 0: every position 0.
//   labels_count: *count (one int64) = labels (N) that are not DSV3_IGNORE_INDEX.
#define DSV3_KERNELS_TOKENS(X)                                                                     \
    X(TOKENS_CHECK, tokens_check,                                                                  \
      (const Dsv3KernelContext *ctx, const int32_t *tokens, int64_t N, int64_t V),                 \
      (ctx, tokens, N, V))                                                                         \
    X(DOCUMENT_IDS, document_ids,                                                                  \
      (const Dsv3KernelContext *ctx, int32_t *doc, const int32_t *tokens, int64_t B, int64_t T,    \
       int32_t eos),                                                                               \
      (ctx, doc, tokens, B, T, eos))                                                               \
    X(LABELS_COUNT, labels_count,                                                                  \
      (const Dsv3KernelContext *ctx, int64_t *count, const int32_t *labels, int64_t N),            \
      (ctx, count, labels, N))

// Element-wise and copies.
//   add: out (n) = a (n) + b (n); out may alias a or b.
//   copy_columns: for r < rows, dst[r·dst_stride + c] = src[r·src_stride + c], c < cols (a
//     column block of a row-major matrix into another; strides in elements, ≥ cols; no overlap).
#define DSV3_KERNELS_ELEMENTWISE(X)                                                                \
    X(ADD, add,                                                                                    \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out, const void *a,              \
       const void *b, int64_t n),                                                                  \
      (ctx, dtype, out, a, b, n))                                                                  \
    X(COPY_COLUMNS, copy_columns,                                                                  \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dst, int64_t dst_stride,         \
       const void *src, int64_t src_stride, int64_t rows, int64_t cols),                           \
      (ctx, dtype, dst, dst_stride, src, src_stride, rows, cols))

// Embedding, of a table whose rows may be split over ranks (vocabulary-parallel): weight (V, D)
// holds the rows [vocab_start, vocab_start + V) of the table (the whole table: vocab_start 0 and
// V the vocabulary). Token ids must be >= 0; tokens_check checks them against the vocabulary.
//   embedding_forward: out (N, D) row n = weight row tokens[n] − vocab_start when tokens[n] is
//     in the slice, a zero row otherwise (the outputs of all slices sum to the whole lookup).
//   embedding_backward: dweight (V, D) += dout (N, D) rows scattered by tokens[n] − vocab_start;
//     tokens outside the slice add nothing.
#define DSV3_KERNELS_EMBEDDING(X)                                                                  \
    X(EMBEDDING_FORWARD, embedding_forward,                                                        \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out, const int32_t *tokens,      \
       const void *weight, int64_t N, int64_t D, int64_t V, int64_t vocab_start),                  \
      (ctx, dtype, out, tokens, weight, N, D, V, vocab_start))                                     \
    X(EMBEDDING_BACKWARD, embedding_backward,                                                      \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, float *dweight, const void *dout,      \
       const int32_t *tokens, int64_t N, int64_t D, int64_t V, int64_t vocab_start),               \
      (ctx, dtype, dweight, dout, tokens, N, D, V, vocab_start))

// RMSNorm (torch.nn.RMSNorm).
//   rmsnorm_forward: out (N, D) = x · rstd · weight (D), rstd (N) = 1 / sqrt(mean(x²) + eps),
//     saved for backward.
//   rmsnorm_backward: dx (N, D) written; dweight (D) added.
#define DSV3_KERNELS_RMSNORM(X)                                                                    \
    X(RMSNORM_FORWARD, rmsnorm_forward,                                                            \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out, float *rstd, const void *x, \
       const void *weight, int64_t N, int64_t D, float eps),                                       \
      (ctx, dtype, out, rstd, x, weight, N, D, eps))                                               \
    X(RMSNORM_BACKWARD, rmsnorm_backward,                                                          \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dx, float *dweight,              \
       const void *dout, const void *x, const void *weight, const float *rstd, int64_t N,          \
       int64_t D),                                                                                 \
      (ctx, dtype, dx, dweight, dout, x, weight, rstd, N, D))

// Linear (no bias; torch.nn.Linear's weight layout).
//   linear_forward: out (N, Out) = x (N, In) · weight (Out, In)ᵀ.
//   linear_backward: dx (N, In) = dout (N, Out) · weight, written (added when accumulate_dx;
//     skipped when dx is NULL: weight may then be NULL); dweight (Out, In) += doutᵀ · x
//     (skipped when dweight is NULL: x may then be NULL, so that a zero-bubble pipeline's input
//     and weight gradients run apart). One of dx, dweight must be given.
#define DSV3_KERNELS_LINEAR(X)                                                                     \
    X(LINEAR_FORWARD, linear_forward,                                                              \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out, const void *x,              \
       const void *weight, int64_t N, int64_t In, int64_t Out),                                    \
      (ctx, dtype, out, x, weight, N, In, Out))                                                    \
    X(LINEAR_BACKWARD, linear_backward,                                                            \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dx, float *dweight,              \
       const void *dout, const void *x, const void *weight, int64_t N, int64_t In, int64_t Out,    \
       int accumulate_dx),                                                                         \
      (ctx, dtype, dx, dweight, dout, x, weight, N, In, Out, accumulate_dx))

// Rotary embedding on interleaved pairs, with YaRN.
//   rope_tables: cos, sin (T, R/2): angle t · freq_i, freq_i = theta^(−2i/R). When
//     T > original_seq_len the frequencies get YaRN's correction (torchtitan's
//     precompute_freqs_cis): between the correction dims of beta_fast and beta_slow they blend
//     linearly from freq_i to freq_i / factor. T is the training seq_len.
//   rope_forward: in place on x: for token n = b·T + t and head h < H, the R channels starting
//     at x + n·row_stride + h·head_stride hold pairs (x[2i], x[2i+1]) that rotate by angle (t, i).
//   rope_backward: in place on dx (same layout): the gradient through the rotation.
#define DSV3_KERNELS_ROPE(X)                                                                       \
    X(ROPE_TABLES, rope_tables,                                                                    \
      (const Dsv3KernelContext *ctx, float *cos, float *sin, int64_t T, int64_t R, double theta,   \
       double factor, double beta_fast, double beta_slow, int64_t original_seq_len),               \
      (ctx, cos, sin, T, R, theta, factor, beta_fast, beta_slow, original_seq_len))                \
    X(ROPE_FORWARD, rope_forward,                                                                  \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *x, const float *cos,             \
       const float *sin, int64_t B, int64_t T, int64_t H, int64_t R, int64_t row_stride,           \
       int64_t head_stride),                                                                       \
      (ctx, dtype, x, cos, sin, B, T, H, R, row_stride, head_stride))                              \
    X(ROPE_BACKWARD, rope_backward,                                                                \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dx, const float *cos,            \
       const float *sin, int64_t B, int64_t T, int64_t H, int64_t R, int64_t row_stride,           \
       int64_t head_stride),                                                                       \
      (ctx, dtype, dx, cos, sin, B, T, H, R, row_stride, head_stride))

// Multi-head latent attention: assembling keys and values from wkv_b's output.
//   mla_kv_forward: for token n and head h, k[n, h] (Dqk = nope + R) = [kvb[n, h, :nope],
//     kpe[n·kpe_stride : +R]] (the rotary key is shared by the heads) and v[n, h] (Dv) =
//     kvb[n, h, nope:]. kvb (N, H, nope + Dv), k (N, H, nope + R), v (N, H, Dv).
//   mla_kv_backward: dkvb[n, h] = [dk[n, h, :nope], dv[n, h]] written; dkpe[n·dkpe_stride :
//     +R] = Σ_h dk[n, h, nope:] written.
#define DSV3_KERNELS_MLA(X)                                                                        \
    X(MLA_KV_FORWARD, mla_kv_forward,                                                              \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *k, void *v, const void *kvb,     \
       const void *kpe, int64_t kpe_stride, int64_t N, int64_t H, int64_t nope, int64_t R,         \
       int64_t Dv),                                                                                \
      (ctx, dtype, k, v, kvb, kpe, kpe_stride, N, H, nope, R, Dv))                                 \
    X(MLA_KV_BACKWARD, mla_kv_backward,                                                            \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dkvb, void *dkpe,                \
       int64_t dkpe_stride, const void *dk, const void *dv, int64_t N, int64_t H, int64_t nope,    \
       int64_t R, int64_t Dv),                                                                     \
      (ctx, dtype, dkvb, dkpe, dkpe_stride, dk, dv, N, H, nope, R, Dv))

// Attention (scaled dot product, causal or block-causal), of Tq queries over Tk keys per
// sequence.
//   attention_forward: q (B, Tq, H, Dqk), k (B, Tk, H, Dqk), v (B, Tk, H, Dv) → out
//     (B, Tq, H, Dv) and lse (B, H, Tq), the log-sum-exp of each query's scaled scores, saved
//     for backward. Query t of sequence b sits at key position p = q_pos[b, t] (q_pos (B, Tq),
//     every p in [−1, Tk)); q_pos NULL means Tq == Tk and p = t (context parallelism passes its
//     queries' places among the keys it holds). Query t attends to key s when s ≤ p and, if
//     doc (B, Tk) is not NULL, doc[b, s] == doc[b, p] (document ids of a block-causal mask); a
//     query at −1 sees no key: its output is 0 and its lse −∞. Softmax of scale · q·k,
//     computed per head. When scores (B, H, Tq, Tk) is not NULL, the
//     scaled, masked scores of the tiles forward visits are kept there and backward reads them
//     instead of recomputing q·kᵀ: same results, bit for bit, for B·H·Tq·Tk floats of memory.
//     A backend may ignore scores (it must then be NULL in backward too or hold what forward
//     left).
//   attention_backward: dq (B, Tq, H, Dqk), dk (B, Tk, H, Dqk), dv (B, Tk, H, Dv) written:
//     the gradients through these keys of an attention whose output and lse are out and lse.
//     These may be forward's, or those of the attention over more keys (the merge of several
//     key shards, attention_merge): each shard's call then gives its share (a query with an
//     lse of −∞ gets none).
//   attention_merge: (out, lse) ← the attention over the keys of both (out, lse) and (part_out,
//     part_lse), of the same queries over two disjoint sets of keys: lse = log(e^lse +
//     e^part_lse), out = e^(old lse − lse)·out + e^(part_lse − lse)·part_out; out, part_out
//     (B, T, H, Dv), lse, part_lse (B, H, T). A side with an lse of −∞ adds nothing.
#define DSV3_KERNELS_ATTENTION(X)                                                                  \
    X(ATTENTION_FORWARD, attention_forward,                                                        \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out, float *lse, float *scores,  \
       const void *q, const void *k, const void *v, const int32_t *q_pos, const int32_t *doc,      \
       int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dqk, int64_t Dv, float scale),        \
      (ctx, dtype, out, lse, scores, q, k, v, q_pos, doc, B, Tq, Tk, H, Dqk, Dv, scale))           \
    X(ATTENTION_BACKWARD, attention_backward,                                                      \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dq, void *dk, void *dv,          \
       const void *dout, const void *q, const void *k, const void *v, const void *out,             \
       const float *lse, const float *scores, const int32_t *q_pos, const int32_t *doc, int64_t B, \
       int64_t Tq, int64_t Tk, int64_t H, int64_t Dqk, int64_t Dv, float scale),                   \
      (ctx, dtype, dq, dk, dv, dout, q, k, v, out, lse, scores, q_pos, doc, B, Tq, Tk, H, Dqk, Dv, \
       scale))                                                                                     \
    X(ATTENTION_MERGE, attention_merge,                                                            \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out, float *lse,                 \
       const void *part_out, const float *part_lse, int64_t B, int64_t T, int64_t H, int64_t Dv),  \
      (ctx, dtype, out, lse, part_out, part_lse, B, T, H, Dv))

// SwiGLU gate: h = silu(a) · b, with a = w1 x and b = w3 x.
//   swiglu_forward: h (N, F); may not alias a or b.
//   swiglu_backward: da, db (N, F) written; da may alias a and db may alias b.
#define DSV3_KERNELS_SWIGLU(X)                                                                     \
    X(SWIGLU_FORWARD, swiglu_forward,                                                              \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *h, const void *a, const void *b, \
       int64_t N, int64_t F),                                                                      \
      (ctx, dtype, h, a, b, N, F))                                                                 \
    X(SWIGLU_BACKWARD, swiglu_backward,                                                            \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *da, void *db, const void *dh,    \
       const void *a, const void *b, int64_t N, int64_t F),                                        \
      (ctx, dtype, da, db, dh, a, b, N, F))

// MoE router (torchtitan's TokenChoiceTopKRouter), computed in fp32 whatever `dtype` is.
//   router_forward: logits (N, E) = the gate's output. scores (N, E) = softmax or sigmoid of
//     logits, saved. Choice: the K largest scores + expert_bias (E, or NULL) — restricted, when
//     groups are on, to the num_limited_groups groups whose two best biased scores sum highest.
//     topk_idx (N, K) the chosen experts; weights (N, K) their UNbiased scores (over their sum
//     + 1e-20 when route_norm) × route_scale; counts (E) written: tokens per expert.
//   router_backward: dlogits (N, E) written from dweights (N, K).
//   counts_accumulate: total (n) += counts (n).
//   expert_bias_update: the aux-loss-free balancing step, bias (E) += δ − mean(δ) with
//     δ = coeff · sign(mean(counts) − counts), counts (E) the step's tokens per expert.
#define DSV3_KERNELS_ROUTER(X)                                                                     \
    X(ROUTER_FORWARD, router_forward,                                                              \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, float *scores, int32_t *topk_idx,      \
       float *weights, int64_t *counts, const void *logits, const float *expert_bias, int64_t N,   \
       const Dsv3RouterArgs *args),                                                                \
      (ctx, dtype, scores, topk_idx, weights, counts, logits, expert_bias, N, args))               \
    X(ROUTER_BACKWARD, router_backward,                                                            \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dlogits, const float *dweights,  \
       const float *scores, const int32_t *topk_idx, int64_t N, const Dsv3RouterArgs *args),       \
      (ctx, dtype, dlogits, dweights, scores, topk_idx, N, args))                                  \
    X(COUNTS_ACCUMULATE, counts_accumulate,                                                        \
      (const Dsv3KernelContext *ctx, int64_t *total, const int64_t *counts, int64_t n),            \
      (ctx, total, counts, n))                                                                     \
    X(EXPERT_BIAS_UPDATE, expert_bias_update,                                                      \
      (const Dsv3KernelContext *ctx, float *bias, const int64_t *counts, int64_t E, double coeff), \
      (ctx, bias, counts, E, coeff))

// Token permutation to experts and back.
//   moe_plan: sorts the N × K assignments by expert, stably (ties keep token order): order (M)
//     holds n·K + k of each routed row; offsets (E + 1) the first row of each expert
//     (offsets[E] = M).
//   moe_gather: xs (M, D) = x (N, D) rows order[j] / K.
//   moe_gather_backward: dx (N, D) += dxs (M, D) summed back onto their tokens (added).
//   moe_combine_forward: out (N, D) += Σ_k weights[n, k] · ys[row of (n, k)], ys (M, D) in the
//     order of `order`.
//   moe_combine_backward: dys (M, D) written = weight · dout of its token; dweights (N, K)
//     written = dout · ys.
#define DSV3_KERNELS_MOE(X)                                                                        \
    X(MOE_PLAN, moe_plan,                                                                          \
      (const Dsv3KernelContext *ctx, int32_t *order, int64_t *offsets, const int32_t *topk_idx,    \
       int64_t N, int64_t K, int64_t E),                                                           \
      (ctx, order, offsets, topk_idx, N, K, E))                                                    \
    X(MOE_GATHER, moe_gather,                                                                      \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *xs, const void *x,               \
       const int32_t *order, int64_t M, int64_t K, int64_t D),                                     \
      (ctx, dtype, xs, x, order, M, K, D))                                                         \
    X(MOE_GATHER_BACKWARD, moe_gather_backward,                                                    \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dx, const void *dxs,             \
       const int32_t *order, int64_t M, int64_t K, int64_t D),                                     \
      (ctx, dtype, dx, dxs, order, M, K, D))                                                       \
    X(MOE_COMBINE_FORWARD, moe_combine_forward,                                                    \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out, const void *ys,             \
       const float *weights, const int32_t *order, int64_t N, int64_t K, int64_t D),               \
      (ctx, dtype, out, ys, weights, order, N, K, D))                                              \
    X(MOE_COMBINE_BACKWARD, moe_combine_backward,                                                  \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dys, float *dweights,            \
       const void *dout, const void *ys, const float *weights, const int32_t *order, int64_t N,    \
       int64_t K, int64_t D),                                                                      \
      (ctx, dtype, dys, dweights, dout, ys, weights, order, N, K, D))

// Routed experts: grouped SwiGLU FFNs. Expert e < E has the rows [offsets[e], offsets[e+1])
// of xs (M, D); offsets (E + 1) with offsets[0] = 0.
//   experts_forward: h1 = xs · w1[e]ᵀ, h3 = xs · w3[e]ᵀ (M, F) saved; ys (M, D) =
//     (silu(h1) · h3) · w2[e]ᵀ. w1, w3 (E, F, D); w2 (E, D, F).
//   experts_backward: dxs (M, D) written; dw1, dw3 (E, F, D) and dw2 (E, D, F) added.
#define DSV3_KERNELS_EXPERTS(X)                                                                    \
    X(EXPERTS_FORWARD, experts_forward,                                                            \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *ys, void *h1, void *h3,          \
       const void *xs, const void *w1, const void *w2, const void *w3, const int64_t *offsets,     \
       int64_t E, int64_t D, int64_t F),                                                           \
      (ctx, dtype, ys, h1, h3, xs, w1, w2, w3, offsets, E, D, F))                                  \
    X(EXPERTS_BACKWARD, experts_backward,                                                          \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dxs, float *dw1, float *dw2,     \
       float *dw3, const void *dys, const void *xs, const void *h1, const void *h3,                \
       const void *w1, const void *w2, const void *w3, const int64_t *offsets, int64_t E,          \
       int64_t D, int64_t F),                                                                      \
      (ctx, dtype, dxs, dw1, dw2, dw3, dys, xs, h1, h3, w1, w2, w3, offsets, E, D, F))

// Output head fused with cross-entropy.
//   cross_entropy: logits = h (N, D) · weight (V, D)ᵀ, in chunks of at most `chunk` tokens so
//     that no more than chunk × V logits exist at once. *loss_sum (one double) = Σ over n with
//     labels[n] ≠ DSV3_IGNORE_INDEX of logsumexp(logits[n]) − logits[n, labels[n]],
//     accumulated in double. When dh is not NULL: dh (N, D) written and dweight (V, D) added
//     with the gradient of grad_scale × loss_sum. Labels must be DSV3_IGNORE_INDEX or in [0, V).
//   cross_entropy_logits: the same loss of logits (N, V) that exist (the head's output gathered
//     over tensor-parallel ranks when loss parallelism is off): *loss_sum as above; when
//     dlogits is not NULL, dlogits (N, V) = grad_scale · (softmax − onehot(label)) on counted
//     rows, 0 on ignored ones, written (dlogits may be logits itself).
#define DSV3_KERNELS_CROSS_ENTROPY(X)                                                              \
    X(CROSS_ENTROPY, cross_entropy,                                                                \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, double *loss_sum, void *dh,            \
       float *dweight, const void *h, const void *weight, const int32_t *labels, int64_t N,        \
       int64_t D, int64_t V, float grad_scale, int64_t chunk),                                     \
      (ctx, dtype, loss_sum, dh, dweight, h, weight, labels, N, D, V, grad_scale, chunk))          \
    X(CROSS_ENTROPY_LOGITS, cross_entropy_logits,                                                  \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, double *loss_sum, float *dlogits,      \
       const float *logits, const int32_t *labels, int64_t N, int64_t V, float grad_scale),        \
      (ctx, dtype, loss_sum, dlogits, logits, labels, N, V, grad_scale))

// The output head and cross-entropy with the head split over ranks by vocabulary rows
// (vocabulary-parallel, "loss parallel"): a rank holds the V rows [vocab_start, vocab_start + V)
// of the head's weight, so its logits are those columns of the whole vocabulary's. Per chunk of
// n tokens a caller runs vocab_logits; an all-reduce (max) of row_max over the ranks;
// vocab_logits_sums; an all-reduce (sum) of sums; vocab_logits_backward; and, after the
// chunks, sums dh over the ranks. One rank (vocab_start 0, V the vocabulary) computes what
// cross_entropy does. Labels must be DSV3_IGNORE_INDEX or token ids (>= 0) of any rank's slice.
//   vocab_logits: logits (n, V) = h (n, D) · weight (V, D)ᵀ, written; row_max (n) = the max of
//     each row of logits.
//   vocab_logits_sums: with row_max (n) the max over all ranks, sums (2n) written, in double:
//     sums[i] = Σ_j exp(logits[i, j] − row_max[i]); sums[n + i] = logits[i, labels[i] −
//     vocab_start] when labels[i] is in the slice, 0 otherwise (and for ignored rows).
//   vocab_logits_backward: with row_max and sums reduced over all ranks: *loss_sum (one double,
//     written, the same on every rank) = Σ over i with labels[i] ≠ DSV3_IGNORE_INDEX of
//     log(sums[i]) + row_max[i] − sums[n + i], in double. When dh is not NULL: dlogits[i, j] =
//     grad_scale · (exp(logits[i, j] − row_max[i]) / sums[i] − [labels[i] − vocab_start = j])
//     on counted rows, 0 on ignored ones, written over logits; dh (n, D) = dlogits · weight,
//     written (this rank's share); dweight (V, D) += dlogitsᵀ · h. When dh is NULL, logits and
//     dweight are not touched.
#define DSV3_KERNELS_VOCAB_PARALLEL_CROSS_ENTROPY(X)                                               \
    X(VOCAB_LOGITS, vocab_logits,                                                                  \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, float *logits, float *row_max,         \
       const void *h, const void *weight, int64_t n, int64_t D, int64_t V),                        \
      (ctx, dtype, logits, row_max, h, weight, n, D, V))                                           \
    X(VOCAB_LOGITS_SUMS, vocab_logits_sums,                                                        \
      (const Dsv3KernelContext *ctx, double *sums, const float *logits, const float *row_max,      \
       const int32_t *labels, int64_t n, int64_t V, int64_t vocab_start),                          \
      (ctx, sums, logits, row_max, labels, n, V, vocab_start))                                     \
    X(VOCAB_LOGITS_BACKWARD, vocab_logits_backward,                                                \
      (const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, double *loss_sum, void *dh,            \
       float *dweight, float *logits, const float *row_max, const double *sums, const void *h,     \
       const void *weight, const int32_t *labels, int64_t n, int64_t D, int64_t V,                 \
       int64_t vocab_start, float grad_scale),                                                     \
      (ctx, dtype, loss_sum, dh, dweight, logits, row_max, sums, h, weight, labels, n, D, V,       \
       vocab_start, grad_scale))

// Optimizer and clipping, on fp32 master state.
//   adamw_step: torch.optim.AdamW on n elements: param ·= 1 − lr·wd; m, v updated; param −=
//     lr · m̂ / (sqrt(v̂) + eps) with bias-corrected m̂, v̂.
//   sum_squares: *out (one double) = Σ x² over n elements, accumulated in double.
//   scale: x ·= factor over n elements.
#define DSV3_KERNELS_OPTIMIZER(X)                                                                  \
    X(ADAMW_STEP, adamw_step,                                                                      \
      (const Dsv3KernelContext *ctx, float *param, const float *grad, float *m, float *v,          \
       int64_t n, const Dsv3AdamWArgs *args),                                                      \
      (ctx, param, grad, m, v, n, args))                                                           \
    X(SUM_SQUARES, sum_squares,                                                                    \
      (const Dsv3KernelContext *ctx, double *out, const float *x, int64_t n), (ctx, out, x, n))    \
    X(SCALE, scale, (const Dsv3KernelContext *ctx, float *x, int64_t n, float factor),             \
      (ctx, x, n, factor))

#define DSV3_KERNEL_OPS(X)                                                                         \
    DSV3_KERNELS_MEMORY(X)                                                                         \
    DSV3_KERNELS_WORKSPACE(X)                                                                      \
    DSV3_KERNELS_TOKENS(X)                                                                         \
    DSV3_KERNELS_ELEMENTWISE(X)                                                                    \
    DSV3_KERNELS_EMBEDDING(X)                                                                      \
    DSV3_KERNELS_RMSNORM(X)                                                                        \
    DSV3_KERNELS_LINEAR(X)                                                                         \
    DSV3_KERNELS_ROPE(X)                                                                           \
    DSV3_KERNELS_MLA(X)                                                                            \
    DSV3_KERNELS_ATTENTION(X)                                                                      \
    DSV3_KERNELS_SWIGLU(X)                                                                         \
    DSV3_KERNELS_ROUTER(X)                                                                         \
    DSV3_KERNELS_MOE(X)                                                                            \
    DSV3_KERNELS_EXPERTS(X)                                                                        \
    DSV3_KERNELS_CROSS_ENTROPY(X)                                                                  \
    DSV3_KERNELS_VOCAB_PARALLEL_CROSS_ENTROPY(X)                                                   \
    DSV3_KERNELS_OPTIMIZER(X)

// DSV3_OP_<ID>: the op numbers that dsv3_workspace_bytes takes.
#define DSV3_KERNEL_OP_ENUM(ID, name, params, args) DSV3_OP_##ID,
typedef enum { DSV3_KERNEL_OPS(DSV3_KERNEL_OP_ENUM) DSV3_OP_COUNT } Dsv3Op;
#undef DSV3_KERNEL_OP_ENUM

// Dsv3Err dsv3_<name>(<params>): one function per op, dispatching to ctx->ops.
#define DSV3_KERNEL_OP_DECLARE(ID, name, params, args) Dsv3Err dsv3_##name params;
DSV3_KERNEL_OPS(DSV3_KERNEL_OP_DECLARE)
#undef DSV3_KERNEL_OP_DECLARE

// "embedding_forward", … for messages.
const char *dsv3_op_name(Dsv3Op op);

// ---- profiling (profile.c) ----
//
// While profiling is on, every op call through this library is timed by op (wall time), and the
// GEMMs of the CPU backend are counted by shape (time on the thread that ran them: a GEMM inside
// an op's parallel region counts the time of its thread) and by the op that called them (FLOPs).
// For benchmarks (tests/bench/bench_step --profile); off by default, when it costs a branch per
// call. The counters are process-wide: start, stop and read them while no op runs.
typedef struct {
    int64_t calls;
    double seconds;    // wall time in the op
    double gemm_flops; // 2·M·N·K of the GEMMs the op ran
} Dsv3OpProfile;

typedef struct {
    int trans_a, trans_b; // op(A) = Aᵀ, op(B) = Bᵀ
    int64_t M, N, K, calls;
    double seconds;  // summed over the threads that ran them
    int in_parallel; // 1: run inside an op's OpenMP parallel region (one thread each)
} Dsv3GemmProfile;

// Shapes the GEMM table holds; GEMMs of further shapes count in their op only.
enum { DSV3_PROFILE_MAX_GEMM_SHAPES = 1024 };

// Zeroes the counters and turns counting on.
void dsv3_profile_start(void);
// Turns counting off (the counters stay).
void dsv3_profile_stop(void);
// The counters: ops (DSV3_OP_COUNT), and the GEMM shapes seen (*n_gemms of them, at most
// DSV3_PROFILE_MAX_GEMM_SHAPES) in the order they first ran.
void dsv3_profile_read(Dsv3OpProfile *ops, Dsv3GemmProfile *gemms, int64_t *n_gemms);

// Where each op call goes as it ends, while profiling is on and a sink is set: the op, its start
// and end (seconds on CLOCK_MONOTONIC, the clock of dsv3_log_seconds) and the FLOPs of the GEMMs
// it ran. For the training trace's per-op events (common/train/trace.h).
typedef void (*Dsv3OpSink)(void *sink_ctx, Dsv3Op op, double start, double end, double gemm_flops);
// Sets the sink (NULL: none); like start and stop, while no op runs.
void dsv3_profile_set_sink(Dsv3OpSink sink, void *sink_ctx);

#ifdef __cplusplus
}
#endif

#endif
