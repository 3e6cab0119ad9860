// lr_schedule: warm-up, stable and decay phases, in torchtitan's order of operations so that
// the factors agree to the last bit.
#include "lr_schedule.h"

#include <math.h>
#include <string.h>

#include "common/core/log.h"

static const double LR_PI = 3.141592653589793238462643383279502884;

static const char *const DECAY_TYPE_NAMES[] = {"linear", "sqrt", "cosine"};
enum { NUM_DECAY_TYPES = sizeof DECAY_TYPE_NAMES / sizeof DECAY_TYPE_NAMES[0] };

Dsv3Err dsv3_lr_schedule_init(Dsv3LrSchedule *out, const Dsv3LrScheduleParams *p) {
    DSV3_CHECK(out && p, DSV3_ERR_USAGE, "dsv3_lr_schedule_init: out or params is NULL");
    DSV3_CHECK(p->warmup_steps >= 0, DSV3_ERR_CONFIG,
               "lr_scheduler.warmup_steps = %lld must be >= 0", (long long)p->warmup_steps);
    DSV3_CHECK(p->total_steps >= 0, DSV3_ERR_CONFIG,
               "lr_scheduler.total_steps (or training.steps) = %lld must be >= 0",
               (long long)p->total_steps);
    DSV3_CHECK(!p->has_decay_ratio || (isfinite(p->decay_ratio) && p->decay_ratio >= 0.0),
               DSV3_ERR_CONFIG,
               "lr_scheduler.decay_ratio = %g must be >= 0 (or unset to decay right after warm-up)",
               p->decay_ratio);
    DSV3_CHECK((int)p->decay_type >= 0 && (int)p->decay_type < NUM_DECAY_TYPES, DSV3_ERR_CONFIG,
               "lr_scheduler.decay_type %d is not linear, sqrt or cosine", (int)p->decay_type);
    DSV3_CHECK(p->min_lr_factor >= 0.0 && p->min_lr_factor <= 1.0, DSV3_ERR_CONFIG,
               "lr_scheduler.min_lr_factor = %g must be in [0, 1]", p->min_lr_factor);

    int64_t total = p->total_steps, warmup = p->warmup_steps, decay;
    if (warmup > total) {
        DSV3_LOG_WARN(
            "warmup steps (%lld) exceed total steps (%lld); adjusting warmup steps to %lld",
            (long long)warmup, (long long)total, (long long)total);
        warmup = total;
    }
    if (p->has_decay_ratio) {
        // Python's round() on a float rounds half to even, as rint does in the default mode.
        double rounded = rint((double)total * p->decay_ratio);
        DSV3_CHECK(rounded < (double)INT64_MAX, DSV3_ERR_CONFIG,
                   "lr_scheduler.decay_ratio = %g times %lld total steps overflows", p->decay_ratio,
                   (long long)total);
        decay = (int64_t)rounded;
        if (warmup + decay > total) {
            DSV3_LOG_WARN("warmup (%lld) + decay (%lld) steps exceed total steps (%lld); adjusting "
                          "decay steps to %lld",
                          (long long)warmup, (long long)decay, (long long)total,
                          (long long)(total - warmup));
            decay = total - warmup;
        }
    } else {
        decay = total - warmup;
    }
    out->warmup_steps = warmup;
    out->decay_steps = decay;
    // torchtitan's virtual last step keeps the final rate above min_lr_factor.
    out->stable_steps = total + 1 - warmup - decay;
    out->decay_type = p->decay_type;
    out->min_lr_factor = p->min_lr_factor;
    return DSV3_OK;
}

double dsv3_lr_factor(const Dsv3LrSchedule *s, int64_t step) {
    int64_t i = step - 1; // torchtitan's 0-based scheduler index of this step
    int64_t warmup_stable = s->warmup_steps + s->stable_steps;
    if (i < s->warmup_steps) return (double)(i + 1) / (double)s->warmup_steps;
    if (i < warmup_stable) return 1.0;
    if (s->decay_steps == 0) return s->min_lr_factor; // the decay's end, p = 1 (see the header)
    double progress = (double)(i + 1 - warmup_stable) / (double)s->decay_steps;
    double d;
    switch (s->decay_type) {
    case DSV3_LR_DECAY_SQRT: d = 1.0 - sqrt(progress); break;
    case DSV3_LR_DECAY_COSINE: d = 0.5 * (1.0 + cos(LR_PI * progress)); break;
    case DSV3_LR_DECAY_LINEAR:
    default: d = 1.0 - progress; break;
    }
    return s->min_lr_factor + (1.0 - s->min_lr_factor) * d;
}

Dsv3Err dsv3_lr_decay_type_parse(const char *name, Dsv3LrDecayType *out) {
    DSV3_CHECK(out, DSV3_ERR_USAGE, "dsv3_lr_decay_type_parse: out is NULL");
    for (int t = 0; name && t < NUM_DECAY_TYPES; t++) {
        if (strcmp(name, DECAY_TYPE_NAMES[t]) == 0) {
            *out = (Dsv3LrDecayType)t;
            return DSV3_OK;
        }
    }
    DSV3_RAISE(DSV3_ERR_CONFIG,
               "lr_scheduler.decay_type = \"%s\" is not one of linear, sqrt, cosine",
               name ? name : "(null)");
}

const char *dsv3_lr_decay_type_name(Dsv3LrDecayType type) {
    return (int)type >= 0 && (int)type < NUM_DECAY_TYPES ? DECAY_TYPE_NAMES[type] : "unknown";
}
