// dsv3-coordinator: owns the config, the data and the step loop (DESIGN.md §2).
#include "common/core/log.h"
#include "role_main.h"

static Dsv3Err coordinator_run(Dsv3Launch *launch) {
    DSV3_LOG_INFO("the training loop is not part of this build yet: start-up, config and "
                  "layout are verified, nothing was trained (%d ranks)", launch->topology.job_size);
    return DSV3_OK;
}

int main(int argc, char **argv) {
    return dsv3_role_main(DSV3_ROLE_COORDINATOR, coordinator_run, argc, argv);
}
