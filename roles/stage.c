// dsv3-stage: one pipeline-stage rank holding dense parameters (DESIGN.md §2).
#include <inttypes.h>

#include "common/core/log.h"
#include "role_main.h"

static Dsv3Err stage_run(Dsv3Launch *launch) {
    const Dsv3Topology *t = &launch->topology;
    DSV3_LOG_DEBUG("stage index %" PRId64 ": pp %" PRId64 " dp_replicate %" PRId64 " dp_shard %" PRId64
                   " cp %" PRId64 " tp %" PRId64, t->stage_index, t->coord.pp, t->coord.dp_replicate,
                   t->coord.dp_shard, t->coord.cp, t->coord.tp);
    return DSV3_OK;
}

int main(int argc, char **argv) { return dsv3_role_main(DSV3_ROLE_STAGE, stage_run, argc, argv); }
