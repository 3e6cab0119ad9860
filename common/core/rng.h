// rng: counter-based random numbers, a pure function of (key, counter).
//
// Initialisation and synthetic data must not depend on the order in which ranks or threads
// draw numbers: element i of a tensor gets the same value whichever rank initialises it and
// however the tensor is sharded. So every number is computed from a key (seed and name) and
// a counter (the element index) with the splitmix64 finaliser, a bijective 64-bit mixer.
#ifndef DSV3_CORE_RNG_H
#define DSV3_CORE_RNG_H

#include <stdint.h>

// A key from a seed and a name (e.g. a tensor's FQN).
uint64_t dsv3_rng_key(uint64_t seed, const char *name);

// 64 random bits for (key, counter).
uint64_t dsv3_rng_bits(uint64_t key, uint64_t counter);

// Uniform in (0, 1), never 0 or 1.
double dsv3_rng_uniform(uint64_t key, uint64_t counter);

// Standard normal (Box-Muller on two uniforms of the counter).
double dsv3_rng_normal(uint64_t key, uint64_t counter);

// Normal(mean, std) conditioned on [lo, hi] (resampled from further counters of element
// `index` until it falls inside, as torch.nn.init.trunc_normal_ does by inversion).
double dsv3_rng_trunc_normal(uint64_t key, uint64_t index, double mean, double std, double lo,
                             double hi);

#endif
