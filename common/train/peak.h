// peak: what one device can do, for MFU and the memory share of the step line.
//
// MFU (model FLOPs utilisation, PaLM's definition as torchtitan computes it) is
//   mfu = 100 × flops_per_token × tps / peak_flops
// with flops_per_token from dsv3_model_flops_per_token (6 × active non-embedding parameters
// + the attention term), tps the tokens per second of one stage rank (one device) and
// peak_flops one device's peak. The peak is metrics.peak_tflops when set; when it is 0 every
// stage rank measures it once at start-up, at the same time (so each has the cores and BLAS
// threads it trains with), as the best rate of a few (PEAK_GEMM_DIM)³ GEMMs through the op
// library's linear forward, in the dtype the GEMMs train in (the backend in use: OpenBLAS on
// CPUs in fp32, gemm_bf16.c in bf16), and the coordinator
// takes the best rank's (other load on a machine only ever slows a rank down). A measured peak is
// what the backend reaches on a large GEMM, not the data-sheet number, so MFU against it reads
// higher than against a vendor's peak. Device memory: a CPU rank's device is the node's physical
// memory.
#ifndef DSV3_TRAIN_PEAK_H
#define DSV3_TRAIN_PEAK_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/comm/launch.h"
#include "kernels/kernels.h"

// Side of the square GEMM of the start-up benchmark.
enum { DSV3_PEAK_GEMM_DIM = 1024 };

// Measures this rank's GEMM rate in TFLOP/s, computing in `matmul` (fp32, or bf16 with
// training.mixed_precision_param = "bfloat16"); *seconds is how long the benchmark took. No MPI.
Dsv3Err dsv3_peak_measure_tflops(Dsv3TensorDtype matmul, double *tflops, double *seconds);

// Bytes of memory of this rank's device (CPU: the node's physical memory; 0 if unknown).
int64_t dsv3_peak_device_memory_bytes(void);

// 100 × flops_per_token × tokens_per_second / (peak_tflops × 1e12); 0 when the peak is 0.
double dsv3_peak_mfu_percent(double flops_per_token, double tokens_per_second, double peak_tflops);

// The peak MFU is computed against once a step reached `step_tflops` per device. A measured
// peak (`configured_tflops` 0) below a step's rate was measured while the machine was busier
// than during that step: the step's rate becomes the peak, so MFU never reads above 100%, and
// *raised is set. A configured peak is kept (*raised stays 0); an MFU above 100% then means that
// metrics.peak_tflops is below what the device reaches.
double dsv3_peak_after_step(double peak_tflops, double configured_tflops, double step_tflops,
                            int *raised);

// Start-up, collective over the job unless metrics.peak_tflops is set: a stage rank measures
// its peak (stage rank 0 logs it), the coordinator gets the best in *peak_tflops (or the
// configured value) through dsv3_protocol_share_peak and logs it. Call between building the
// model and the ready point.
Dsv3Err dsv3_peak_start_stage(const Dsv3Launch *launch);
Dsv3Err dsv3_peak_start_coordinator(const Dsv3Launch *launch, double *peak_tflops);

#endif
