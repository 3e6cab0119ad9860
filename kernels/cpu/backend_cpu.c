// backend_cpu: the table of the fast CPU backend (DSV3_BACKEND_CPU): every op's dsv3_cpu_<op>.
#include "kernels/backend.h"
#include "kernels/cpu/cpu.h"

#define BACKEND_CPU_ENTRY(ID, name, params, args) dsv3_cpu_##name,
const Dsv3KernelOps dsv3_cpu_ops = {"cpu", DSV3_KERNEL_OPS(BACKEND_CPU_ENTRY)};
#undef BACKEND_CPU_ENTRY
