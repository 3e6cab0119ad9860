// dsv3-expert: an expert server holding 1/ep of one pipeline stage's routed experts (DESIGN.md §2).
#include "common/train/expert_server.h"
#include "role_main.h"

int main(int argc, char **argv) {
    return dsv3_role_main(DSV3_ROLE_EXPERT, dsv3_expert_server_train, argc, argv);
}
