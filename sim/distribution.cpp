#include "sim/distribution.hpp"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <optional>

#include "pool_model/pool_config.hpp"

namespace poolsim::sim {

namespace {

constexpr const char* kSpecRule =
    "must be const:D, exp:MEAN, uniform:LOW,HIGH, lognormal:mean=M,cv=C or empirical:FILE.csv "
    "(durations with units, e.g. exp:10ms)";
constexpr const char* kLognormalRule =
    "must be lognormal:mean=M,cv=C with M > 0 and 0 < C <= 1000 (e.g. lognormal:mean=10ms,cv=1.5)";
constexpr double kMaxCv = 1000;  // keeps sigma^2 = ln(1 + cv^2) and every sample finite

// Parses one argument of `form`; errors name the argument: "in exp:MEAN, MEAN must be ...".
Duration parse_argument(std::string_view text, const char* form, const char* name) {
  try {
    return parse_duration(text);
  } catch (const ParseError& e) {
    throw ParseError(std::string("in ") + form + ", " + name + " " + e.what());
  }
}

// A value in an empirical file: seconds as a bare number, or a duration with a unit.
Duration parse_file_value(std::string_view cell) {
  if (!cell.empty() && cell.front() == '-') throw ParseError("must not be negative");
  double seconds = 0;
  try {
    seconds = parse_number(cell);
  } catch (const ParseError&) {
    try {
      return parse_duration(cell);
    } catch (const ParseError& e) {
      throw ParseError(std::string(e.what()) + ", or seconds: 0.012");
    }
  }
  if (seconds > to_seconds(kMaxDuration)) {
    throw ParseError("must be at most " + format_duration(kMaxDuration));
  }
  return Duration(std::llround(seconds * 1e9));
}

bool starts_like_a_number(std::string_view cell) {
  return !cell.empty() && ((cell.front() >= '0' && cell.front() <= '9') || cell.front() == '-' ||
                           cell.front() == '+' || cell.front() == '.');
}

// The first column of `path`: '#' comments and blank lines skipped, and a first line that
// does not start like a number is a header.
std::vector<Duration> read_first_column(const std::filesystem::path& path) {
  const std::string where = "empirical file " + path.string();
  std::ifstream in(path);
  if (!in) throw ParseError(where + ": cannot be read");
  std::vector<Duration> values;
  std::string line;
  bool first_line = true;
  for (std::size_t line_number = 1; std::getline(in, line); ++line_number) {
    std::string_view cell = trim(line);
    if (cell.empty() || cell.front() == '#') continue;
    cell = trim(cell.substr(0, cell.find(',')));
    const bool is_header = first_line && !starts_like_a_number(cell);
    first_line = false;
    if (is_header) continue;
    try {
      values.push_back(parse_file_value(cell));
    } catch (const ParseError& e) {
      throw ParseError(where + " line " + std::to_string(line_number) + ": \"" + std::string(cell) +
                       "\" " + e.what());
    }
  }
  if (in.bad()) throw ParseError(where + ": cannot be read");
  if (values.empty()) {
    throw ParseError(where + ": has no values (one per line, in the first column)");
  }
  return values;
}

}  // namespace

Distribution Distribution::parse(std::string_view spec, const std::filesystem::path& base_dir) {
  const std::string_view text = trim(spec);
  const std::size_t colon = text.find(':');
  if (colon == std::string_view::npos) throw ParseError(kSpecRule);
  const std::string_view name = text.substr(0, colon);
  const std::string_view args = text.substr(colon + 1);

  Distribution d;
  if (name == "const") {
    d.kind_ = Kind::kConst;
    d.first_ = parse_argument(args, "const:D", "D");
  } else if (name == "exp") {
    d.kind_ = Kind::kExp;
    d.first_ = parse_argument(args, "exp:MEAN", "MEAN");
  } else if (name == "uniform") {
    const std::size_t comma = args.find(',');
    if (comma == std::string_view::npos) {
      throw ParseError("must be uniform:LOW,HIGH (e.g. uniform:5ms,15ms)");
    }
    d.kind_ = Kind::kUniform;
    d.first_ = parse_argument(args.substr(0, comma), "uniform:LOW,HIGH", "LOW");
    d.second_ = parse_argument(args.substr(comma + 1), "uniform:LOW,HIGH", "HIGH");
    if (d.first_ > d.second_) throw ParseError("in uniform:LOW,HIGH, LOW must not be above HIGH");
  } else if (name == "lognormal") {
    std::optional<Duration> mean;
    std::optional<double> cv;
    for (std::string_view rest = args; !rest.empty();) {
      const std::string_view part = rest.substr(0, rest.find(','));
      rest.remove_prefix(std::min(rest.size(), part.size() + 1));
      const std::size_t equals = part.find('=');
      const std::string_view key = trim(part.substr(0, equals));
      const std::string_view value =
          equals == std::string_view::npos ? std::string_view() : part.substr(equals + 1);
      if (key == "mean" && !mean) {
        mean = parse_argument(value, "lognormal:mean=M,cv=C", "M");
      } else if (key == "cv" && !cv) {
        try {
          cv = parse_number(value);
        } catch (const ParseError& e) {
          throw ParseError(std::string("in lognormal:mean=M,cv=C, C ") + e.what());
        }
      } else {
        throw ParseError(kLognormalRule);
      }
    }
    if (!mean || !cv || *mean <= Duration(0) || !(*cv > 0 && *cv <= kMaxCv)) {
      throw ParseError(kLognormalRule);
    }
    d.kind_ = Kind::kLognormal;
    d.first_ = *mean;
    d.cv_ = *cv;
    const double sigma2 = std::log1p(d.cv_ * d.cv_);
    d.sigma_ = std::sqrt(sigma2);
    d.mu_ = std::log(static_cast<double>(d.first_.count())) - sigma2 / 2;
  } else if (name == "empirical") {
    const std::string file(trim(args));
    if (file.empty()) throw ParseError("must be empirical:FILE.csv (values in the first column)");
    std::filesystem::path path(file);
    if (path.is_relative() && !base_dir.empty()) path = base_dir / path;
    auto empirical = std::make_shared<Empirical>();
    empirical->file = file;
    empirical->values = read_first_column(path);
    double sum = 0;
    for (const Duration v : empirical->values) sum += to_seconds(v);
    empirical->mean_seconds = sum / static_cast<double>(empirical->values.size());
    d.kind_ = Kind::kEmpirical;
    d.empirical_ = std::move(empirical);
  } else {
    throw ParseError(kSpecRule);
  }
  return d;
}

double Distribution::mean_seconds() const {
  switch (kind_) {
    case Kind::kConst:
    case Kind::kExp:
    case Kind::kLognormal: return to_seconds(first_);
    case Kind::kUniform: return (to_seconds(first_) + to_seconds(second_)) / 2;
    case Kind::kEmpirical: return empirical_->mean_seconds;
  }
  return 0;
}

std::string Distribution::spec() const {
  switch (kind_) {
    case Kind::kConst: return "const:" + format_duration(first_);
    case Kind::kExp: return "exp:" + format_duration(first_);
    case Kind::kUniform:
      return "uniform:" + format_duration(first_) + "," + format_duration(second_);
    case Kind::kLognormal: {
      char cv[32];
      const auto end = std::to_chars(cv, cv + sizeof cv, cv_).ptr;  // shortest exact form
      return "lognormal:mean=" + format_duration(first_) + ",cv=" + std::string(cv, end);
    }
    case Kind::kEmpirical: return "empirical:" + empirical_->file;
  }
  return {};
}

}  // namespace poolsim::sim
