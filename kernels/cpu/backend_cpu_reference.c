// backend_cpu_reference: the table of the reference backend (DSV3_BACKEND_CPU_REFERENCE):
// every op's dsv3_cpu_reference_<op>.
#include "kernels/backend.h"
#include "kernels/cpu/cpu.h"

#define BACKEND_CPU_REFERENCE_ENTRY(ID, name, params, args) dsv3_cpu_reference_##name,
const Dsv3KernelOps dsv3_cpu_reference_ops = {"cpu-reference",
                                              DSV3_KERNEL_OPS(BACKEND_CPU_REFERENCE_ENTRY)};
#undef BACKEND_CPU_REFERENCE_ENTRY
