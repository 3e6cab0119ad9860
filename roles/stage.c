// dsv3-stage: one pipeline-stage rank holding dense parameters (DESIGN.md §2).
#include "common/train/stage_loop.h"
#include "role_main.h"

int main(int argc, char **argv) {
    return dsv3_role_main(DSV3_ROLE_STAGE, dsv3_stage_train, argc, argv);
}
