// Distributions of durations, as written in scenario files: const:5ms, exp:10ms,
// uniform:5ms,15ms, lognormal:mean=10ms,cv=1.5, empirical:file.csv.
#pragma once

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pool_model/time.hpp"
#include "sim/random.hpp"
#include "sim/units.hpp"

namespace poolsim::sim {

// A small value type, cheap to copy: copies of an empirical distribution share its samples.
class Distribution {
 public:
  enum class Kind { kConst, kExp, kUniform, kLognormal, kEmpirical };

  Distribution() = default;  // const:0

  // Throws ParseError saying what is allowed. A relative empirical FILE is looked up in
  // base_dir (the scenario file's directory); errors in the file name the file and the line.
  static Distribution parse(std::string_view spec, const std::filesystem::path& base_dir = {});

  // Never negative; no allocation. Samples above kMaxDuration are cut to it.
  Duration sample(Rng& rng) const {
    switch (kind_) {
      case Kind::kConst: return first_;
      case Kind::kExp: return round_ns(rng.exponential(static_cast<double>(first_.count())));
      case Kind::kUniform:
        return first_ + round_ns(rng.uniform() * static_cast<double>((second_ - first_).count()));
      case Kind::kLognormal: return round_ns(std::exp(mu_ + sigma_ * rng.normal()));
      case Kind::kEmpirical: return empirical_->values[rng.below(empirical_->values.size())];
    }
    return Duration(0);
  }

  // The exact mean; for empirical, the mean of the file's values.
  double mean_seconds() const;
  // Canonical text, e.g. "exp:10ms", "lognormal:mean=10ms,cv=1.5", "empirical:data/q.csv"
  // (the file as written). parse(spec(), same base_dir) gives the same distribution.
  std::string spec() const;
  Kind kind() const { return kind_; }
  bool is_zero() const { return kind_ == Kind::kConst && first_ == Duration(0); }
  bool is_constant() const { return kind_ == Kind::kConst; }

 private:
  struct Empirical {
    std::string file;              // as written in the spec
    std::vector<Duration> values;  // at least one
    double mean_seconds;
  };

  static Duration round_ns(double ns) {
    constexpr auto kMax = static_cast<double>(kMaxDuration.count());
    return Duration(round_to_integer(ns < kMax ? ns : kMax));  // ns >= 0
  }

  Kind kind_ = Kind::kConst;
  Duration first_{0};   // const: the value; exp, lognormal: the mean; uniform: low
  Duration second_{0};  // uniform: high
  double cv_ = 0;       // lognormal: coefficient of variation
  double mu_ = 0;       // lognormal: mean and standard deviation of ln(nanoseconds)
  double sigma_ = 0;
  std::shared_ptr<const Empirical> empirical_;
};

}  // namespace poolsim::sim
