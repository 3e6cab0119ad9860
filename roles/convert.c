// dsv3-convert: Hugging Face safetensors ↔ dsv3 model checkpoints (common/ckpt/convert.h).
//
//   dsv3-convert from-hf HF_DIR OUT_DIR [--model_flavor F] [--section.key V ...]
//   dsv3-convert to-hf CKPT_DIR HF_DIR [--max_shard_bytes N] [--section.key V ...]
//
// from-hf builds the model from the flavor and [model] overrides; to-hf from the checkpoint's
// config.toml (overrides apply on top, e.g. --checkpoint.export_dtype bfloat16). A single
// process, no MPI.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ckpt/convert.h"
#include "common/ckpt/train_state.h"
#include "common/core/config.h"
#include "common/core/log.h"
#include "common/model/model_config.h"

enum { EXIT_USAGE = 2, PATH_CAPACITY = 4096 + 64 };

static const char USAGE[] =
    "usage: dsv3-convert from-hf HF_DIR OUT_DIR [--model_flavor F] [--section.key V ...]\n"
    "       dsv3-convert to-hf CKPT_DIR HF_DIR [--max_shard_bytes N] [--section.key V ...]\n";

// The message (the whole traceback with DSV3_LOG_LEVEL=debug).
static int fail(void) {
    fprintf(stderr, "dsv3-convert: error: %s\n",
            dsv3_log_level() == DSV3_LOG_DEBUG ? dsv3_error_text() : dsv3_error_message());
    return EXIT_FAILURE;
}

int main(int argc, char **argv) {
    dsv3_log_init("convert", 0);
    if (argc < 4 || (strcmp(argv[1], "from-hf") != 0 && strcmp(argv[1], "to-hf") != 0)) {
        fputs(USAGE, stderr);
        return EXIT_USAGE;
    }
    int from_hf = strcmp(argv[1], "from-hf") == 0;
    const char *in = argv[2], *out = argv[3];
    long long max_shard = DSV3_CONVERT_SHARD_BYTES;
    // Our own flags out; the rest are config options. --model_flavor F is --model.flavor F.
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int n = 0;
    if (!rest) return EXIT_FAILURE;
    rest[n++] = argv[0]; // the config parser skips the program name
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--max_shard_bytes") == 0 && i + 1 < argc) {
            max_shard = atoll(argv[++i]);
        } else if (strcmp(argv[i], "--model_flavor") == 0 && i + 1 < argc) {
            rest[n++] = "--model.flavor";
            rest[n++] = argv[++i];
        } else {
            rest[n++] = argv[i];
        }
    }
    static Dsv3Config cfg; // large: off the stack
    dsv3_config_init(&cfg);
    Dsv3Err err = DSV3_OK;
    if (!from_hf) {
        char path[PATH_CAPACITY];
        snprintf(path, sizeof path, "%s/%s", in, DSV3_CONFIG_FILE);
        err = dsv3_config_load_file(&cfg, path);
    }
    if (err == DSV3_OK) err = dsv3_config_parse_args(&cfg, n, rest);
    if (err == DSV3_OK) err = dsv3_model_config_resolve(&cfg);
    if (err == DSV3_OK)
        err = from_hf ? dsv3_convert_from_hf(in, out, &cfg)
                      : dsv3_convert_to_hf(in, out, &cfg, (int64_t)max_shard);
    free(rest);
    return err == DSV3_OK ? EXIT_SUCCESS : fail();
}
