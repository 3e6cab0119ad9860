// hf_names: the adapter's names from the parameter table, and a small pattern matcher ("{}" =
// a decimal number).
#include "hf_names.h"

#include <stdio.h>
#include <string.h>

// Pattern capacities: the longest HF and FQN patterns with their prefixes.
enum { PATTERN_CAPACITY = 128 };

typedef struct {
    char hf[PATTERN_CAPACITY];    // "{}" per number: layer, then expert
    char titan[PATTERN_CAPACITY]; // "{}" for the layer
} NamePair;

// Layer slots and the expert bias live under these prefixes on either side.
static const char HF_LAYER_PREFIX[] = "model.layers.{}.", TITAN_LAYER_PREFIX[] = "layers.{}.";
// The expert bias is a buffer, not a parameter slot.
static const char HF_EXPERT_BIAS[] = "mlp.gate.e_score_correction_bias";

// Name pair `i`: the parameter table's slot i (model/params.h), or the expert bias after them.
static NamePair name_pair(int i) {
    NamePair n;
    int layered = 1;
    const char *hf = HF_EXPERT_BIAS, *titan = DSV3_EXPERT_BIAS_SUFFIX;
    if (i < DSV3_PARAM_SLOT_COUNT) {
        Dsv3GroupKind kind = dsv3_param_slot_group((Dsv3ParamSlot)i);
        layered = kind == DSV3_GROUP_LAYER || kind == DSV3_GROUP_EXPERTS;
        hf = dsv3_param_slot_hf_name((Dsv3ParamSlot)i);
        titan = dsv3_param_slot_suffix((Dsv3ParamSlot)i);
    }
    snprintf(n.hf, sizeof n.hf, "%s%s", layered ? HF_LAYER_PREFIX : "", hf);
    snprintf(n.titan, sizeof n.titan, "%s%s", layered ? TITAN_LAYER_PREFIX : "", titan);
    return n;
}

enum { NAME_COUNT = DSV3_PARAM_SLOT_COUNT + 1, MAX_NUMBERS = 2 };
// Digits accepted for one number (layer or expert index).
enum { MAX_DIGITS = 9 };

// Matches `text` against `pattern`; fills numbers[] (at most MAX_NUMBERS) and *count.
static int match(const char *pattern, const char *text, int64_t *numbers, int *count) {
    *count = 0;
    while (*pattern) {
        if (pattern[0] == '{' && pattern[1] == '}') {
            int digits = 0;
            int64_t v = 0;
            while (*text >= '0' && *text <= '9' && digits < MAX_DIGITS)
                v = v * 10 + (*text++ - '0'), digits++;
            if (digits == 0 || (*text >= '0' && *text <= '9') || *count == MAX_NUMBERS) return 0;
            numbers[(*count)++] = v;
            pattern += 2;
            continue;
        }
        if (*pattern++ != *text++) return 0;
    }
    return *text == '\0';
}

// Writes `pattern` with its "{}" replaced by numbers[] in order.
static int fill(char *out, size_t capacity, const char *pattern, const int64_t *numbers) {
    size_t n = 0;
    int used = 0;
    for (const char *p = pattern; *p; p++) {
        if (p[0] == '{' && p[1] == '}') {
            int k = snprintf(out + n, capacity - n, "%lld", (long long)numbers[used++]);
            if (k < 0 || (size_t)k >= capacity - n) return 0;
            n += (size_t)k;
            p++;
            continue;
        }
        if (n + 1 >= capacity) return 0;
        out[n++] = *p;
    }
    out[n] = '\0';
    return 1;
}

static int count_holes(const char *pattern) {
    int n = 0;
    for (const char *p = strstr(pattern, "{}"); p; p = strstr(p + 2, "{}"))
        n++;
    return n;
}

void dsv3_hf_name_parse(const char *hf_name, Dsv3HfName *out) {
    memset(out, 0, sizeof *out);
    out->kind = DSV3_HF_UNKNOWN;
    out->layer = out->expert = -1;
    size_t length = strlen(hf_name), suffix = strlen(DSV3_HF_SCALE_SUFFIX);
    if (length > suffix && strcmp(hf_name + length - suffix, DSV3_HF_SCALE_SUFFIX) == 0 &&
        length - suffix < sizeof out->weight) {
        memcpy(out->weight, hf_name, length - suffix);
        out->weight[length - suffix] = '\0';
        out->kind = DSV3_HF_SCALE;
        return;
    }
    for (int i = 0; i < NAME_COUNT; i++) {
        int64_t numbers[MAX_NUMBERS];
        int count = 0;
        NamePair names = name_pair(i);
        if (!match(names.hf, hf_name, numbers, &count)) continue;
        if (!fill(out->fqn, sizeof out->fqn, names.titan, numbers)) return;
        out->kind = DSV3_HF_TENSOR;
        out->layer = count > 0 ? numbers[0] : -1;
        out->expert = count > 1 ? numbers[1] : -1;
        return;
    }
}

Dsv3Err dsv3_hf_name_from_fqn(const char *fqn, int64_t expert, char out[DSV3_HF_NAME_CAPACITY]) {
    for (int i = 0; i < NAME_COUNT; i++) {
        int64_t numbers[MAX_NUMBERS] = {0};
        int count = 0;
        NamePair names = name_pair(i);
        if (!match(names.titan, fqn, numbers, &count)) continue;
        int stacked = count_holes(names.hf) > count;
        DSV3_CHECK(stacked == (expert >= 0), DSV3_ERR_USAGE, "%s %s an expert index", fqn,
                   stacked ? "is a stacked expert weight and needs" : "takes no");
        if (stacked) numbers[count] = expert;
        DSV3_CHECK(fill(out, DSV3_HF_NAME_CAPACITY, names.hf, numbers), DSV3_ERR_USAGE,
                   "the HF name of %s is too long", fqn);
        return DSV3_OK;
    }
    DSV3_RAISE(DSV3_ERR_USAGE, "%s has no Hugging Face name in DeepSeekV3StateDictAdapter", fqn);
}

int dsv3_hf_fqn_is_stacked(const char *fqn) {
    const char *p = strstr(fqn, ".moe.experts.w");
    return p && (strcmp(p, ".moe.experts.w1") == 0 || strcmp(p, ".moe.experts.w2") == 0 ||
                 strcmp(p, ".moe.experts.w3") == 0);
}
