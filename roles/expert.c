// dsv3-expert: an expert server holding 1/ep of one pipeline stage's routed experts (DESIGN.md §2).
#include <inttypes.h>

#include "common/core/log.h"
#include "role_main.h"

static Dsv3Err expert_run(Dsv3Launch *launch) {
    const Dsv3Topology *t = &launch->topology;
    DSV3_LOG_DEBUG("expert index %" PRId64 ": pipeline stage %" PRId64 ", ep rank %" PRId64,
                   t->expert_index, t->pp_stage, t->ep_rank);
    return DSV3_OK;
}

int main(int argc, char **argv) { return dsv3_role_main(DSV3_ROLE_EXPERT, expert_run, argc, argv); }
