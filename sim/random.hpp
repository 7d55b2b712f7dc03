// Random numbers for the simulator: xoshiro256++ with one independent stream per purpose.
//
// Everything here is our own arithmetic on uint64_t and IEEE doubles, so a seed gives the same
// numbers with every compiler and standard library (std:: distributions differ between them).
// The only outside code used is std::log, std::exp and std::sqrt (std::sqrt is exact; glibc's
// std::log and std::exp are correctly rounded in practice, other libms may differ in the last
// bit), which also build the exponential's ziggurat tables.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace poolsim::sim {

// The exponential ziggurat's 256 layers of equal area v (built in random.cpp). Boundaries
// x_0 = r > x_1 > ... > x_255 = 0 under the density exp(-x). Layer 0 is the base:
// [0, r) x [0, exp(-r)) with the tail beyond r, taken as one rectangle of area v. Layer k > 0
// spans [0, x_{k-1}) across and [exp(-x_{k-1}), exp(-x_k)) up; its core [0, x_k) lies wholly
// under the density.
struct ExpZiggurat {
  static constexpr int kLayers = 256;
  double scale[kLayers];         // the layer's width / 2^53: a 53-bit point times it is an x
  std::uint64_t inner[kLayers];  // a 53-bit point below it lies in the core
  double density[kLayers];       // exp(-x_k)
  double r;                      // x_0, where the tail begins
};
extern const ExpZiggurat kExpZiggurat;

// xoshiro256++ 1.0 by David Blackman and Sebastiano Vigna ("Scrambled linear pseudorandom
// number generators", ACM TOMS 2021; https://prng.di.unimi.it/), seeded with Vigna's splitmix64.
class Rng {
 public:
  // Distinct streams of one seed start from distinct points: their sequences do not overlap in
  // practice (period 2^256 - 1) and are statistically independent.
  Rng(std::uint64_t seed, std::uint64_t stream);

  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[0] + s_[3], 23) + s_[0];
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // [0, 1) in steps of 2^-53.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  // (0, 1): never 0 nor 1, safe for log(). Midpoints of 2^52 equal steps.
  double uniform_open() { return (static_cast<double>(next() >> 12) + 0.5) * 0x1.0p-52; }

  // Uniform in [0, n), without modulo bias. Requires n > 0.
  std::uint64_t below(std::uint64_t n);

  // Exponential with the given mean: Marsaglia and Tsang's ziggurat ("The ziggurat method for
  // generating random variables", J. Stat. Softw. 2000) with 256 layers. Exact; 98.9% of the
  // samples take one draw, a multiply and a compare, and no log(): inversion's log() was half
  // the cost of drawing a request.
  double exponential(double mean) { return mean * standard_exponential(); }
  double standard_exponential() {
    for (;;) {
      const std::uint64_t bits = next();
      const std::size_t layer = bits & 0xFF;  // the low 8 bits pick a layer, the top 53 a point
      const std::uint64_t u = bits >> 11;
      const double x = static_cast<double>(u) * kExpZiggurat.scale[layer];
      if (u < kExpZiggurat.inner[layer]) [[likely]] return x;  // inside the layer's core
      const double edge = exponential_edge(layer, x);
      if (edge >= 0) return edge;
    }
  }

  // Standard normal (Marsaglia's polar method; the second value of each pair is kept).
  double normal();

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  // A point x of `layer` outside its core: x itself if it falls under the density (one more
  // uniform), a sample of the tail for the base layer, or -1 to start again.
  double exponential_edge(std::size_t layer, double x);

  std::uint64_t s_[4];
  double spare_normal_ = 0;
  bool has_spare_normal_ = false;
};

// What a stream is for. New purposes go at the end: the numbers are part of the seed's meaning.
enum class Stream : std::uint64_t {
  kArrivals,
  kService,
  kConnect,
  kPing,
  kReset,
  kDrops,
  kConnectFail,
  kRouting,
  kThink,
  kPoolJitter,  // a pool's own randomness (HikariCP's max_lifetime and keepalive jitter)
};

// The stream for one purpose and one process / client index (index < 2^48), so that changing
// one distribution, or adding a client, does not shift the numbers any other part draws.
Rng stream_rng(std::uint64_t seed, Stream stream, std::uint64_t index = 0);

}  // namespace poolsim::sim
