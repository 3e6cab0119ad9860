// config: the job schema, loaded from a TOML file and `--section.key value` overrides.
//
// The schema mirrors torchtitan's JobConfig sections and keys. Each key is declared once
// below (type, default, bounds, choices, whether it is implemented, help) and that one line
// generates the struct field, the parser entry, the validation and the printed config.
// Unknown sections or keys, wrong types and impossible values are errors naming the file,
// line and key. A key that is declared but not implemented yet names the capability it waits
// for and may only keep its default: a key that is accepted must do something.
//
// This module holds plain values only and knows nothing of the model. The [model]
// architecture keys default to the chosen flavor's values, which live in common/model/:
// common/model/model_config.h fills them, checks what needs model arguments and turns a
// config into Dsv3ModelArgs. Every program resolves a config through it. This module does no
// MPI either; the layout checks that need process counts live in comm/.
#ifndef DSV3_CORE_CONFIG_H
#define DSV3_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"

enum {
    DSV3_CONFIG_STRING_CAPACITY = 4096, // a path of PATH_MAX bytes fits
    DSV3_CONFIG_ORIGIN_CAPACITY = 160,  // "conf/x.toml:12" or "command line"
};

typedef enum { DSV3_CFG_BOOL, DSV3_CFG_INT, DSV3_CFG_FLOAT, DSV3_CFG_STR } Dsv3ConfigType;

typedef enum {
    DSV3_KEY_SUPPORTED,   // any valid value works
    DSV3_KEY_NOT_YET,     // declared for compatibility; only the default is accepted
    DSV3_KEY_FROM_FLAVOR, // a model argument: defaults to the flavor's value
} Dsv3ConfigStatus;

// The status column of a schema line, written as designated initializers of Dsv3ConfigKey.
// DSV3_NOT_YET names the capability the key waits for (a string literal, e.g. "tensor
// parallelism"), which the error for a value other than the default quotes.
#define DSV3_SUPPORTED .status = DSV3_KEY_SUPPORTED
#define DSV3_FROM_FLAVOR .status = DSV3_KEY_FROM_FLAVOR
#define DSV3_NOT_YET(capability) .status = DSV3_KEY_NOT_YET, .needs = "" capability

// NO_CHOICES: a free string. Choices are written "a|b|c".
#define DSV3_NO_CHOICES NULL
// Integer bounds.
#define DSV3_I64_MAX INT64_MAX

// X(S, type, key, default, min, max, choices, status, help) per section S.
// For strings min/max are unused; for numbers choices are unused. status is one of
// DSV3_SUPPORTED, DSV3_FROM_FLAVOR, DSV3_NOT_YET("capability").
#define DSV3_CONFIG_JOB(X, S)                                                                      \
    X(S, STR, config_file, "", 0, 0, DSV3_NO_CHOICES, DSV3_SUPPORTED,                              \
      "TOML job config to load before the command-line overrides")                                 \
    X(S, STR, dump_folder, "./outputs", 0, 0, DSV3_NO_CHOICES, DSV3_SUPPORTED,                     \
      "Folder for checkpoints, metrics, traces")                                                   \
    X(S, STR, description, "default job", 0, 0, DSV3_NO_CHOICES, DSV3_SUPPORTED,                   \
      "Description of the job")                                                                    \
    X(S, BOOL, print_config, 0, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED,                             \
      "Print the effective config as TOML at start-up")                                            \
    X(S, BOOL, dry_run, 0, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED,                                  \
      "Validate config and layout, print every rank's share, allocate nothing, exit")

#define DSV3_CONFIG_PROFILING(X, S)                                                                \
    X(S, BOOL, enable_profiling, 0, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED,                         \
      "Write a Chrome trace of one step every profile_freq steps")                                 \
    X(S, STR, save_traces_folder, "profile_traces", 0, 0, DSV3_NO_CHOICES, DSV3_SUPPORTED,         \
      "Trace folder under dump_folder")                                                            \
    X(S, INT, profile_freq, 10, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,                  \
      "Steps between profiled steps")                                                              \
    X(S, BOOL, enable_memory_snapshot, 0, 0, 1, DSV3_NO_CHOICES,                                   \
      DSV3_NOT_YET("a memory snapshot writer"), "Dump memory snapshots")                           \
    X(S, STR, save_memory_snapshot_folder, "memory_snapshot", 0, 0, DSV3_NO_CHOICES,               \
      DSV3_NOT_YET("a memory snapshot writer"), "Memory snapshot folder under dump_folder")

#define DSV3_CONFIG_METRICS(X, S)                                                                  \
    X(S, INT, log_freq, 10, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,                      \
      "Steps between logged steps")                                                                \
    X(S, BOOL, enable_tensorboard, 0, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED,                       \
      "Write TensorBoard event files")                                                             \
    X(S, BOOL, disable_color_printing, 0, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED,                   \
      "Plain step lines even on a terminal")                                                       \
    X(S, STR, save_tb_folder, "tb", 0, 0, DSV3_NO_CHOICES, DSV3_SUPPORTED,                         \
      "TensorBoard folder under dump_folder")                                                      \
    X(S, BOOL, save_for_all_ranks, 0, 0, 1, DSV3_NO_CHOICES,                                       \
      DSV3_NOT_YET("per-rank metrics output"), "Write metrics from every rank")                    \
    X(S, BOOL, enable_wandb, 0, 0, 1, DSV3_NO_CHOICES, DSV3_NOT_YET("a Weights & Biases client"),  \
      "Log to Weights & Biases")                                                                   \
    X(S, FLOAT, peak_tflops, 0.0, 0.0, 1e9, DSV3_NO_CHOICES, DSV3_SUPPORTED,                       \
      "Peak TFLOP/s of one device for MFU; 0 measures it at start-up")                             \
    X(S, BOOL, dump_expert_counts, 0, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED,                       \
      "Write every MoE layer's tokens per expert to expert_counts.jsonl at each logged step")

#define DSV3_CONFIG_MODEL(X, S)                                                                    \
    X(S, STR, name, "deepseek_v3", 0, 0, "deepseek_v3", DSV3_SUPPORTED, "Model family")            \
    X(S, STR, flavor, "debugmodel", 0, 0, "debugmodel|16B|236B|671B", DSV3_SUPPORTED,              \
      "Named set of model arguments; every argument below overrides it")                           \
    X(S, STR, hf_assets_path, "./assets/hf/DeepSeek-V3", 0, 0, DSV3_NO_CHOICES, DSV3_SUPPORTED,    \
      "Folder with tokenizer.json and tokenizer_config.json")                                      \
    X(S, INT, vocab_size, 0, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                   \
      "Vocabulary size")                                                                           \
    X(S, INT, dim, 0, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR, "Model width")           \
    X(S, INT, inter_dim, 0, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                    \
      "Hidden size of the dense FFN")                                                              \
    X(S, INT, moe_inter_dim, 0, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                \
      "Hidden size of one expert")                                                                 \
    X(S, INT, n_layers, 0, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                     \
      "Transformer layers")                                                                        \
    X(S, INT, n_dense_layers, 0, 0, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,               \
      "Leading layers with a dense FFN instead of MoE")                                            \
    X(S, INT, n_heads, 0, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR, "Attention heads")   \
    X(S, FLOAT, norm_eps, 0.0, 0.0, 1.0, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR, "RMSNorm eps")         \
    X(S, INT, num_experts, 0, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                  \
      "Routed experts per MoE layer")                                                              \
    X(S, INT, num_shared_experts, 0, 0, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,           \
      "Shared experts per MoE layer")                                                              \
    X(S, INT, top_k, 0, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                        \
      "Routed experts per token")                                                                  \
    X(S, STR, score_func, "", 0, 0, "softmax|sigmoid", DSV3_FROM_FLAVOR, "Router score function")  \
    X(S, BOOL, route_norm, 0, 0, 1, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                             \
      "Renormalise the top-k scores to sum to one")                                                \
    X(S, FLOAT, route_scale, 0.0, 0.0, 1e6, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                     \
      "Factor on the routing weights")                                                             \
    X(S, INT, num_expert_groups, 0, 0, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,            \
      "Expert groups for group-limited routing (0: off)")                                          \
    X(S, INT, num_limited_groups, 0, 0, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,           \
      "Groups a token may route to (0: off)")                                                      \
    X(S, FLOAT, load_balance_coeff, 0.0, 0.0, 1e6, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,              \
      "Step of the aux-loss-free expert-bias update (0: off)")                                     \
    X(S, INT, q_lora_rank, 0, 0, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                  \
      "Rank of the query down-projection (0: a single wq)")                                        \
    X(S, INT, kv_lora_rank, 0, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                 \
      "Rank of the compressed key/value latent")                                                   \
    X(S, INT, qk_nope_head_dim, 0, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,             \
      "Query/key channels without RoPE per head")                                                  \
    X(S, INT, qk_rope_head_dim, 0, 2, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,             \
      "Query/key channels with RoPE per head")                                                     \
    X(S, INT, v_head_dim, 0, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                   \
      "Value channels per head")                                                                   \
    X(S, INT, original_seq_len, 0, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,             \
      "Pre-training context; YaRN applies beyond it")                                              \
    X(S, FLOAT, rope_theta, 0.0, 0.0, 1e12, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR, "RoPE base")        \
    X(S, FLOAT, rope_factor, 0.0, 1.0, 1e6, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                     \
      "YaRN context extension factor")                                                             \
    X(S, FLOAT, beta_fast, 0.0, 0.0, 1e6, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                       \
      "YaRN fast correction bound")                                                                \
    X(S, FLOAT, beta_slow, 0.0, 0.0, 1e6, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                       \
      "YaRN slow correction bound")                                                                \
    X(S, FLOAT, mscale, 0.0, 0.0, 1e6, DSV3_NO_CHOICES, DSV3_FROM_FLAVOR,                          \
      "YaRN attention-scale coefficient")                                                          \
    X(S, STR, attn_mask_type, "", 0, 0, "causal|block_causal", DSV3_FROM_FLAVOR,                   \
      "Causal, or causal within documents")

#define DSV3_CONFIG_OPTIMIZER(X, S)                                                                \
    X(S, STR, name, "AdamW", 0, 0, "AdamW", DSV3_SUPPORTED, "Optimizer")                           \
    X(S, FLOAT, lr, 8e-4, 0.0, 1e3, DSV3_NO_CHOICES, DSV3_SUPPORTED, "Peak learning rate")         \
    X(S, FLOAT, beta1, 0.9, 0.0, 1.0, DSV3_NO_CHOICES, DSV3_SUPPORTED, "Adam beta1")               \
    X(S, FLOAT, beta2, 0.95, 0.0, 1.0, DSV3_NO_CHOICES, DSV3_SUPPORTED, "Adam beta2")              \
    X(S, FLOAT, eps, 1e-8, 0.0, 1.0, DSV3_NO_CHOICES, DSV3_SUPPORTED, "Adam epsilon")              \
    X(S, FLOAT, weight_decay, 0.1, 0.0, 1e3, DSV3_NO_CHOICES, DSV3_SUPPORTED,                      \
      "Decoupled weight decay")                                                                    \
    X(S, STR, implementation, "fused", 0, 0, "for-loop|foreach|fused",                             \
      DSV3_NOT_YET("a choice of optimizer implementations"),                                       \
      "torchtitan's optimizer implementation switch")                                              \
    X(S, BOOL, early_step_in_backward, 0, 0, 1, DSV3_NO_CHOICES,                                   \
      DSV3_NOT_YET("stepping the optimizer inside backward"),                                      \
      "Step the optimizer inside backward")

#define DSV3_CONFIG_LR_SCHEDULER(X, S)                                                             \
    X(S, INT, warmup_steps, 200, 0, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,                 \
      "Linear warm-up steps")                                                                      \
    X(S, INT, total_steps, 0, 0, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,                    \
      "Steps the schedule spans (0: training.steps)")                                              \
    X(S, FLOAT, decay_ratio, -1.0, -1.0, 1.0, DSV3_NO_CHOICES, DSV3_SUPPORTED,                     \
      "Share of the steps spent decaying (-1: decay right after warm-up)")                         \
    X(S, STR, decay_type, "linear", 0, 0, "linear|sqrt|cosine", DSV3_SUPPORTED,                    \
      "Shape of the decay")                                                                        \
    X(S, FLOAT, min_lr_factor, 0.0, 0.0, 1.0, DSV3_NO_CHOICES, DSV3_SUPPORTED,                     \
      "Final learning rate as a fraction of optimizer.lr")

#define DSV3_CONFIG_TRAINING(X, S)                                                                 \
    X(S, STR, dataset, "synthetic", 0, 0, "synthetic|tokens|text", DSV3_SUPPORTED,                 \
      "Built-in synthetic documents, a uint32 token file, or text files")                          \
    X(S, STR, dataset_path, "", 0, 0, DSV3_NO_CHOICES, DSV3_SUPPORTED,                             \
      "Token file, or text file/folder")                                                           \
    X(S, INT, local_batch_size, 8, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,               \
      "Sequences per micro-batch per data-parallel rank")                                          \
    X(S, INT, global_batch_size, -1, -1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,            \
      "Sequences per step (-1: local_batch_size × data-parallel degree)")                          \
    X(S, INT, seq_len, 2048, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,                     \
      "Tokens per sequence")                                                                       \
    X(S, FLOAT, max_norm, 1.0, 0.0, 1e12, DSV3_NO_CHOICES, DSV3_SUPPORTED,                         \
      "Clip gradients to this global L2 norm")                                                     \
    X(S, INT, steps, 10000, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED, "Training steps")    \
    X(S, INT, skip_nonfinite_steps, 0, 0, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,           \
      "Steps with a NaN or infinite loss or gradient skipped (unchanged state) before the run "    \
      "stops")                                                                                     \
    X(S, BOOL, enable_cpu_offload, 0, 0, 1, DSV3_NO_CHOICES, DSV3_NOT_YET("CPU offloading"),       \
      "Keep parameters and optimizer state in host memory")                                        \
    X(S, STR, mixed_precision_param, "float32", 0, 0, "bfloat16|float32", DSV3_SUPPORTED,          \
      "Dtype the GEMMs compute in: bfloat16 rounds their operands to bf16 and sums in fp32 "       \
      "(CPUs with AVX512-BF16); weights, gradients and optimizer state stay fp32")                 \
    X(S, STR, mixed_precision_reduce, "float32", 0, 0, "float32",                                  \
      DSV3_NOT_YET("bf16 gradient reductions"), "Dtype of gradient reductions")

#define DSV3_CONFIG_PARALLELISM(X, S)                                                              \
    X(S, INT, data_parallel_replicate_degree, 1, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED, \
      "HSDP replicas")                                                                             \
    X(S, INT, data_parallel_shard_degree, -1, -1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,   \
      "FSDP shards (-1: the stage processes left over)")                                           \
    X(S, STR, fsdp_reshard_after_forward, "default", 0, 0, "default|always|never", DSV3_SUPPORTED, \
      "Free gathered parameters after forward (FSDP/HSDP)")                                        \
    X(S, INT, tensor_parallel_degree, 1, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,         \
      "Tensor-parallel ranks")                                                                     \
    X(S, BOOL, disable_loss_parallel, 0, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED,                    \
      "Gather logits before the loss under TP")                                                    \
    X(S, BOOL, enable_async_tensor_parallel, 0, 0, 1, DSV3_NO_CHOICES,                             \
      DSV3_NOT_YET("asynchronous tensor parallelism"), "Overlap TP communication with compute")    \
    X(S, INT, pipeline_parallel_degree, 1, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,       \
      "Pipeline stages")                                                                           \
    X(S, STR, pipeline_parallel_schedule, "1F1B", 0, 0,                                            \
      "GPipe|1F1B|Interleaved1F1B|ZBVZeroBubble|DualPipeV", DSV3_SUPPORTED, "Pipeline schedule")   \
    X(S, INT, pipeline_parallel_microbatch_size, 1, 1, DSV3_I64_MAX, DSV3_NO_CHOICES,              \
      DSV3_SUPPORTED, "Sequences per pipeline micro-batch")                                        \
    X(S, INT, pipeline_parallel_layers_per_stage, -1, -1, DSV3_I64_MAX, DSV3_NO_CHOICES,           \
      DSV3_SUPPORTED,                                                                              \
      "Layers per (virtual) pipeline stage (-1: one stage per rank, two for looped schedules)")    \
    X(S, INT, pipeline_parallel_first_stage_less_layers, 1, 0, DSV3_I64_MAX, DSV3_NO_CHOICES,      \
      DSV3_SUPPORTED, "Layers the embedding counts as when splitting the pipeline")                \
    X(S, INT, pipeline_parallel_last_stage_less_layers, 1, 0, DSV3_I64_MAX, DSV3_NO_CHOICES,       \
      DSV3_SUPPORTED,                                                                              \
      "Layers the final norm and output head count as when splitting the pipeline")                \
    X(S, BOOL, print_schedule, 0, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED,                           \
      "Print every pipeline rank's actions at start-up and in --job.dry_run")                      \
    X(S, INT, context_parallel_degree, 1, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,        \
      "Context-parallel ranks")                                                                    \
    X(S, STR, context_parallel_rotate_method, "allgather", 0, 0, "allgather|alltoall",             \
      DSV3_SUPPORTED,                                                                              \
      "How context parallelism exchanges keys and values: all-gathered, or passed around a ring")  \
    X(S, INT, expert_parallel_degree, 1, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,         \
      "Expert servers per pipeline stage (1: experts computed on stage ranks)")                    \
    X(S, INT, expert_tensor_parallel_degree, 1, 1, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED,             \
      "Tensor parallelism inside experts (only 1)")                                                \
    X(S, STR, expert_parallel_comm_backend, "standard", 0, 0, "standard|deepep",                   \
      DSV3_NOT_YET("the DeepEP token dispatch"), "Token dispatch implementation")                  \
    X(S, STR, expert_server_launch, "mpmd", 0, 0, "mpmd|join", DSV3_SUPPORTED,                     \
      "Expert servers in the same mpiexec, or joining as their own job")                           \
    X(S, STR, expert_server_service, "dsv3-experts", 0, 0, DSV3_NO_CHOICES, DSV3_SUPPORTED,        \
      "Name published through ompi-server for joining expert servers")

#define DSV3_CONFIG_COMM(X, S)                                                                     \
    X(S, INT, init_timeout_seconds, 300, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,         \
      "Seconds to wait for peers at start-up, while checkpoints load or save, and until the "      \
      "first step completes")                                                                      \
    X(S, INT, train_timeout_seconds, 100, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,        \
      "Seconds a rank waits for a peer during training before the job stops with an error "        \
      "naming it")

#define DSV3_CONFIG_CHECKPOINT(X, S)                                                               \
    X(S, BOOL, enable, 0, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED, "Save checkpoints")               \
    X(S, STR, folder, "checkpoint", 0, 0, DSV3_NO_CHOICES, DSV3_SUPPORTED,                         \
      "Checkpoint folder under dump_folder")                                                       \
    X(S, INT, interval, 500, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,                     \
      "Steps between checkpoints")                                                                 \
    X(S, STR, initial_load_path, "", 0, 0, DSV3_NO_CHOICES, DSV3_SUPPORTED,                        \
      "Checkpoint to start from")                                                                  \
    X(S, BOOL, initial_load_model_only, 1, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED,                  \
      "Load only the model from initial_load_path")                                                \
    X(S, BOOL, initial_load_in_hf, 0, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED,                       \
      "initial_load_path holds HF safetensors")                                                    \
    X(S, BOOL, last_save_model_only, 1, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED,                     \
      "The final checkpoint holds only the model")                                                 \
    X(S, STR, export_dtype, "float32", 0, 0, "float16|bfloat16|float32", DSV3_SUPPORTED,           \
      "Dtype of model-only checkpoints")                                                           \
    X(S, STR, async_mode, "disabled", 0, 0, "disabled|async|async_with_pinned_mem",                \
      DSV3_SUPPORTED, "Write checkpoints in the background")                                       \
    X(S, INT, keep_latest_k, 10, 0, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,                 \
      "Checkpoints kept (0: all)")                                                                 \
    X(S, INT, load_step, -1, -1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,                    \
      "Step to resume from (-1: the latest)")                                                      \
    X(S, BOOL, fail_on_error, 1, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED,                            \
      "A checkpoint that cannot be saved stops training (false: report it and train on)")

#define DSV3_CONFIG_ACTIVATION_CHECKPOINT(X, S)                                                    \
    X(S, STR, mode, "selective", 0, 0, "none|selective|full", DSV3_SUPPORTED,                      \
      "Recompute activations in backward")                                                         \
    X(S, STR, selective_ac_option, "2", 0, 0, DSV3_NO_CHOICES, DSV3_SUPPORTED,                     \
      "'op', or N to checkpoint every N-th layer")

#define DSV3_CONFIG_VALIDATION(X, S)                                                               \
    X(S, BOOL, enable, 0, 0, 1, DSV3_NO_CHOICES, DSV3_SUPPORTED, "Evaluate held-out loss")         \
    X(S, STR, dataset, "synthetic", 0, 0, "synthetic|tokens|text", DSV3_SUPPORTED,                 \
      "Held-out dataset kind")                                                                     \
    X(S, STR, dataset_path, "", 0, 0, DSV3_NO_CHOICES, DSV3_SUPPORTED, "Held-out data")            \
    X(S, INT, local_batch_size, -1, -1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,             \
      "Sequences per validation batch per data-parallel rank (-1: training's)")                    \
    X(S, INT, seq_len, -1, -1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,                      \
      "Tokens per validation sequence, at most training.seq_len (-1: training's)")                 \
    X(S, INT, freq, 10, 1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,                          \
      "Steps between validations")                                                                 \
    X(S, INT, steps, -1, -1, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,                        \
      "Validation batches (-1: the whole held-out set)")

#define DSV3_CONFIG_DEBUG(X, S)                                                                    \
    X(S, INT, seed, 0, 0, DSV3_I64_MAX, DSV3_NO_CHOICES, DSV3_SUPPORTED,                           \
      "Seed of initialisation and synthetic data")                                                 \
    X(S, BOOL, deterministic, 0, 0, 1, DSV3_NO_CHOICES,                                            \
      DSV3_NOT_YET("the CUDA backend's deterministic mode"),                                       \
      "Deterministic CUDA kernels only (the CPU kernels are always deterministic for a given "     \
      "thread count)")                                                                             \
    X(S, BOOL, moe_force_load_balance, 0, 0, 1, DSV3_NO_CHOICES,                                   \
      DSV3_NOT_YET("forced round-robin routing"), "Route tokens round-robin")

// S(section) for every section, in the order they are printed.
#define DSV3_CONFIG_SECTIONS(S)                                                                    \
    S(job, DSV3_CONFIG_JOB)                                                                        \
    S(profiling, DSV3_CONFIG_PROFILING)                                                            \
    S(metrics, DSV3_CONFIG_METRICS)                                                                \
    S(model, DSV3_CONFIG_MODEL)                                                                    \
    S(optimizer, DSV3_CONFIG_OPTIMIZER)                                                            \
    S(lr_scheduler, DSV3_CONFIG_LR_SCHEDULER)                                                      \
    S(training, DSV3_CONFIG_TRAINING)                                                              \
    S(parallelism, DSV3_CONFIG_PARALLELISM)                                                        \
    S(comm, DSV3_CONFIG_COMM)                                                                      \
    S(checkpoint, DSV3_CONFIG_CHECKPOINT)                                                          \
    S(activation_checkpoint, DSV3_CONFIG_ACTIVATION_CHECKPOINT)                                    \
    S(validation, DSV3_CONFIG_VALIDATION)                                                          \
    S(debug, DSV3_CONFIG_DEBUG)

#define DSV3_CONFIG_FIELD(section, kind, key, ...) DSV3_CONFIG_FIELD_##kind(key)
#define DSV3_CONFIG_FIELD_BOOL(key) int key;
#define DSV3_CONFIG_FIELD_INT(key) int64_t key;
#define DSV3_CONFIG_FIELD_FLOAT(key) double key;
#define DSV3_CONFIG_FIELD_STR(key) char key[DSV3_CONFIG_STRING_CAPACITY];
#define DSV3_CONFIG_COUNT_KEY(...) +1
#define DSV3_CONFIG_SECTION_STRUCT(section, KEYS)                                                  \
    struct {                                                                                       \
        KEYS(DSV3_CONFIG_FIELD, section)                                                           \
    } section;
#define DSV3_CONFIG_SECTION_COUNT(section, KEYS) KEYS(DSV3_CONFIG_COUNT_KEY, section)

enum { DSV3_CONFIG_KEY_COUNT = 0 DSV3_CONFIG_SECTIONS(DSV3_CONFIG_SECTION_COUNT) };

// The whole job config: cfg.training.steps, cfg.model.flavor, … Plain data: copyable.
typedef struct {
    DSV3_CONFIG_SECTIONS(DSV3_CONFIG_SECTION_STRUCT)
    // Where each key's value came from ("" = default), indexed like dsv3_config_keys.
    char origin[DSV3_CONFIG_KEY_COUNT][DSV3_CONFIG_ORIGIN_CAPACITY];
    // 1 once the [model] keys the user left unset hold the flavor's values
    // (dsv3_model_config_resolve fills them). Filling is not the user setting a key, so it
    // leaves the origins empty.
    int model_filled;
} Dsv3Config;

// One schema entry.
typedef struct {
    const char *section;
    const char *key;
    Dsv3ConfigType type;
    int64_t default_int; // BOOL and INT
    double default_float;
    const char *default_str;
    double min, max; // inclusive bounds for INT and FLOAT
    const char *choices;
    Dsv3ConfigStatus status;
    const char *needs; // DSV3_KEY_NOT_YET: the capability it waits for; else NULL
    const char *help;
    size_t offset; // of the field in Dsv3Config
} Dsv3ConfigKey;

extern const Dsv3ConfigKey dsv3_config_keys[DSV3_CONFIG_KEY_COUNT];

// Every key at its default.
void dsv3_config_init(Dsv3Config *cfg);

// Applies a TOML document on top of cfg. `source` names it in errors.
Dsv3Err dsv3_config_load_text(Dsv3Config *cfg, const char *text, size_t length, const char *source);

// Reads and applies a TOML file.
Dsv3Err dsv3_config_load_file(Dsv3Config *cfg, const char *path);

// Applies one override: dotted = "training.steps", value = "20" (NULL for a bare boolean).
Dsv3Err dsv3_config_override(Dsv3Config *cfg, const char *dotted, const char *value);

// A command line of config options: `--job.config_file F` (loaded first, wherever it stands)
// and `--section.key value` / `--section.key=value` / bare `--section.key` for true. Anything
// else is an error; callers remove their own flags first.
Dsv3Err dsv3_config_parse_args(Dsv3Config *cfg, int argc, char **argv);

// The schema entry of section.key, or NULL when there is none.
const Dsv3ConfigKey *dsv3_config_key_find(const char *section, const char *key);

// Whether the user set the key (in a file or on the command line), not just its default.
int dsv3_config_key_is_set(const Dsv3Config *cfg, const Dsv3ConfigKey *k);

// Where the key's value came from, for messages: "conf/x.toml:12", "command line --a.b" or
// "default".
const char *dsv3_config_key_where(const Dsv3Config *cfg, const Dsv3ConfigKey *k);

// Checks every value (type bounds, choices, keys not supported yet) and the combinations of
// plain values that need neither the model nor process counts. The [model] keys must hold
// values first: either the user set every one of them, or dsv3_model_config_resolve
// (common/model/model_config.h) filled the rest from the flavor; it calls this function and
// then checks what needs model arguments, so programs call it instead. Calling this alone on
// a config whose [model] keys are not filled is a usage error.
Dsv3Err dsv3_config_resolve(Dsv3Config *cfg);

// The whole config as TOML that dsv3_config_load_text parses back to the same values.
// *out is a counted buffer the caller frees with dsv3_free.
Dsv3Err dsv3_config_to_toml(const Dsv3Config *cfg, char **out);

// Help text for every key, for `--help`; *out as above.
Dsv3Err dsv3_config_help(char **out);

#endif
