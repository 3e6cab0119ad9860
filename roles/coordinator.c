// dsv3-coordinator: owns the config, the data and the step loop (DESIGN.md §2).
#include "common/train/coordinator_loop.h"
#include "role_main.h"

int main(int argc, char **argv) {
    return dsv3_role_main(DSV3_ROLE_COORDINATOR, dsv3_coordinator_train, argc, argv);
}
