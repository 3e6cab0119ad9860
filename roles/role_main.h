// role_main: the main() every dsv3 executable shares.
//
// Starts MPI, brings the job up (comm/launch.h), runs the role's body, and ends the process:
// exit 0 when done, 1 when start-up failed with a message already printed, and MPI_Abort for
// any other error, so that a failure on one rank never leaves the others waiting.
#ifndef DSV3_ROLES_ROLE_MAIN_H
#define DSV3_ROLES_ROLE_MAIN_H

#include "common/comm/launch.h"

typedef Dsv3Err (*Dsv3RoleBody)(Dsv3Launch *launch);

int dsv3_role_main(Dsv3Role role, Dsv3RoleBody body, int argc, char **argv);

#endif
