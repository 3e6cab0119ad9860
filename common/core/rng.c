// rng: splitmix64-based counter generator.
#include "rng.h"

#include <math.h>

// Draws per element before a truncated normal gives up resampling; with the bounds used
// (±2σ or wider) the chance of reaching it is below 0.05^64.
enum { TRUNC_NORMAL_MAX_DRAWS = 64 };

static const double TWO_PI = 6.283185307179586476925286766559;

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t dsv3_rng_key(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ULL; // FNV-1a over the name
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    return mix(seed ^ mix(h));
}

uint64_t dsv3_rng_bits(uint64_t key, uint64_t counter) { return mix(key ^ mix(counter)); }

double dsv3_rng_uniform(uint64_t key, uint64_t counter) {
    // 53 random bits, shifted by half a step so that neither 0 nor 1 occurs.
    return ((double)(dsv3_rng_bits(key, counter) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

double dsv3_rng_normal(uint64_t key, uint64_t counter) {
    double u1 = dsv3_rng_uniform(key, 2 * counter), u2 = dsv3_rng_uniform(key, 2 * counter + 1);
    return sqrt(-2.0 * log(u1)) * cos(TWO_PI * u2);
}

double dsv3_rng_trunc_normal(uint64_t key, uint64_t index, double mean, double std, double lo,
                             double hi) {
    double x = mean;
    for (uint64_t draw = 0; draw < TRUNC_NORMAL_MAX_DRAWS; draw++) {
        x = mean + std * dsv3_rng_normal(key, index * TRUNC_NORMAL_MAX_DRAWS + draw);
        if (x >= lo && x <= hi) return x;
    }
    return x < lo ? lo : (x > hi ? hi : x);
}
