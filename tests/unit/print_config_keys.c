// print_config_keys: every key of the job config schema (common/core/config.h), one per line,
// for tests/unit/check_config_keys.py:
//
//   section.key <TAB> status <TAB> values
//
// status is supported, from_flavor or not_yet; values is "only_default" when the schema admits
// no value but the default (numeric bounds min == max, or a single choice), else "any".
// Built against dsv3_core alone: it also shows that the core config needs nothing of the model.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/config.h"

static const char *status_name(Dsv3ConfigStatus status) {
    switch (status) {
    case DSV3_KEY_SUPPORTED: return "supported";
    case DSV3_KEY_NOT_YET: return "not_yet";
    case DSV3_KEY_FROM_FLAVOR: return "from_flavor";
    }
    return NULL;
}

// Whether the schema line admits its default and nothing else.
static int admits_only_default(const Dsv3ConfigKey *k) {
    switch (k->type) {
    case DSV3_CFG_BOOL: return 0;
    case DSV3_CFG_INT:
    case DSV3_CFG_FLOAT: return k->min == k->max;
    case DSV3_CFG_STR: return k->choices && strcmp(k->choices, k->default_str) == 0;
    }
    return 0;
}

int main(void) {
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        const char *status = status_name(k->status);
        if (!status) {
            fprintf(stderr, "%s.%s has an unknown status %d\n", k->section, k->key, (int)k->status);
            return EXIT_FAILURE;
        }
        printf("%s.%s\t%s\t%s\n", k->section, k->key, status,
               admits_only_default(k) ? "only_default" : "any");
    }
    return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
