#include "sim/sizing.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "sim/exact.hpp"
#include "sim/model.hpp"
#include "sim/stats.hpp"
#include "sim/units.hpp"

namespace poolsim::sim {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();
constexpr int kDefaultReplications = 10;

struct MetricInfo {
  const char* key;
  const char* meaning;
};
const MetricInfo kMetrics[] = {
    {"p_wait", "share of requests that waited"},
    {"timeouts", "share of requests that timed out"},
    {"errors", "share of requests that failed with an error"},
    {"wait_ms.mean", "mean wait"},
    {"wait_ms.p50", "median wait"},
    {"wait_ms.p95", "95th percentile wait"},
    {"wait_ms.p99", "99th percentile wait"},
    {"latency_ms.mean", "mean latency"},
    {"latency_ms.p99", "99th percentile latency"},
    {"connections.peak_server", "most connections at the database"},
    {"connections.mean_open", "mean connections open"},
    {"connections.opened_per_s", "connections opened per second"},
};

std::string metric_list() {
  std::string out;
  for (const MetricInfo& m : kMetrics) out += std::string(out.empty() ? "" : ", ") + m.key;
  return out;
}

double quantile_ms(const Histogram& h, double q) { return h.quantile(q) / 1e6; }

}  // namespace

double replication_metric(const std::string& key, const ReplicationStats& r) {
  const auto n = static_cast<double>(std::max<std::uint64_t>(r.requests, 1));
  if (key == "p_wait") return static_cast<double>(r.waited) / n;
  if (key == "timeouts") return static_cast<double>(r.timeouts) / n;
  if (key == "errors") {
    return static_cast<double>(r.connect_failed + r.too_many_connections + r.disconnect) / n;
  }
  if (key == "wait_ms.mean") return r.wait.mean() / 1e6;
  if (key == "wait_ms.p50") return quantile_ms(r.wait, 0.50);
  if (key == "wait_ms.p95") return quantile_ms(r.wait, 0.95);
  if (key == "wait_ms.p99") return quantile_ms(r.wait, 0.99);
  if (key == "latency_ms.mean") return r.latency.mean() / 1e6;
  if (key == "latency_ms.p99") return quantile_ms(r.latency, 0.99);
  if (key == "connections.peak_server") return r.peak_server;
  if (key == "connections.mean_open") return r.mean_open;
  return static_cast<double>(r.opened) / r.sim_time_s;  // connections.opened_per_s
}

double result_metric(const std::string& key, const Json& r) {
  const double requests = std::max(1.0, r["requests"].get<double>());
  if (key == "p_wait") return r["p_wait"].get<double>();
  if (key == "timeouts") return r["timeouts"].get<double>() / requests;
  if (key == "errors") {
    const Json& e = r["errors"];
    return (e["connect_failed"].get<double>() + e["too_many_connections"].get<double>() +
            e["disconnect"].get<double>()) /
           requests;
  }
  const auto dot = key.find('.');
  return r[key.substr(0, dot)][key.substr(dot + 1)].get<double>();
}

namespace {

// The exact value of a target metric, or nullopt when the model has no closed form for it.
std::optional<double> exact(const std::string& key, const PoolMetrics& m, const Scenario& s) {
  const double p = s.processes;
  auto ms = [](std::optional<double> seconds) -> std::optional<double> {
    if (!seconds) return std::nullopt;
    return *seconds * 1e3;
  };
  if (key == "p_wait") return m.p_wait;
  if (key == "timeouts") return m.p_timeout;
  if (key == "errors") return 0.0;  // the exact models have no failing connects
  if (key == "wait_ms.mean") return m.mean_wait_s * 1e3;
  if (key == "wait_ms.p50") return ms(m.wait_p50_s);
  if (key == "wait_ms.p95") return ms(m.wait_p95_s);
  if (key == "wait_ms.p99") return ms(m.wait_p99_s);
  if (key == "latency_ms.mean") return (m.mean_wait_s + s.service.mean_seconds()) * 1e3;
  if (key == "connections.peak_server") {
    return p *
           (s.pool.pool_size + s.pool.max_overflow);  // each pool reaches its limit sooner or later
  }
  if (key == "connections.mean_open" && !std::isnan(m.mean_open)) return m.mean_open * p;
  if (key == "connections.opened_per_s" && !std::isnan(m.opened_per_s)) return m.opened_per_s * p;
  return std::nullopt;
}

Scenario with_size(const Scenario& base, int size, int overflow) {
  Scenario s = base;
  s.pool.pool_size = size;
  s.pool.max_overflow = overflow;
  s.set_option("pool.size", std::to_string(size));
  s.set_option("pool.max_overflow", std::to_string(overflow));
  return s;
}

// With no timeout, a pool whose load is not below its connections has no steady state: such a
// point simply does not meet any target.
bool unstable(const Scenario& s) {
  const int servers = s.pool.pool_size + s.pool.max_overflow;
  return !s.pool.timeout && s.rate / s.processes >= servers / s.service.mean_seconds();
}

SizePoint judge(int size, int overflow, std::vector<double> values, std::vector<double> upper,
                const std::vector<Target>& targets) {
  SizePoint p{size, overflow, std::move(values), std::move(upper), true};
  for (std::size_t t = 0; t < targets.size(); ++t)
    p.meets = p.meets && p.upper[t] <= targets[t].limit;
  return p;
}

// Exact scan over every size, or nullopt with the reason when some target has no exact value.
std::optional<std::vector<SizePoint>> exact_curve(const Scenario& base,
                                                  const std::vector<Target>& targets, int max_size,
                                                  int overflow, std::string* why,
                                                  std::string* model) {
  std::vector<SizePoint> curve;
  bool needs_churn = false;
  for (const Target& t : targets) needs_churn = needs_churn || t.key.rfind("connections.", 0) == 0;
  // The server refuses what its max_connections cannot hold: the exact scan stops there.
  const int server_limit = base.max_connections / base.processes - overflow;
  for (int size = 1; size <= std::min(max_size, server_limit); ++size) {
    const Scenario s = with_size(base, size, overflow);
    std::vector<double> values(targets.size(), kInfinity);
    if (!unstable(s)) {
      PoolMetrics m;
      try {
        m = exact_pool_metrics(s, needs_churn ? Churn::kSolve : Churn::kSkip);
      } catch (const NotExact& e) {
        *why = e.what();
        return std::nullopt;
      }
      *model = m.model;
      for (std::size_t t = 0; t < targets.size(); ++t) {
        const std::optional<double> v = exact(targets[t].key, m, s);
        if (!v) {
          *why = targets[t].key + " has no exact form for the " + m.model + " model";
          return std::nullopt;
        }
        values[t] = *v;
      }
    }
    curve.push_back(judge(size, overflow, values, values, targets));
  }
  return curve;
}

SizePoint simulated_point(const Scenario& base, const std::vector<Target>& targets, int size,
                          int overflow) {
  Scenario s = with_size(base, size, overflow);
  s.replications = std::max(base.replications, kDefaultReplications);
  std::vector<std::vector<double>> per_target(targets.size());
  for (int i = 0; i < s.replications; ++i) {
    const ReplicationStats r = run_replication(s, i);
    for (std::size_t t = 0; t < targets.size(); ++t)
      per_target[t].push_back(replication_metric(targets[t].key, r));
  }
  std::vector<double> values, upper;
  for (const auto& samples : per_target) {
    const Estimate e = student_t95(samples);
    values.push_back(e.mean);
    upper.push_back(e.mean + e.half_width);
  }
  return judge(size, overflow, values, upper, targets);
}

}  // namespace

int parse_max_size(const std::string& name, const std::string& text) {
  std::int64_t n = 0;
  try {
    n = parse_integer(text);
  } catch (const ParseError& e) {
    throw ScenarioError(name + " = " + text + ": " + e.what());
  }
  if (n < 1 || n > 100000) throw ScenarioError(name + " = " + text + ": must be 1 to 100000");
  return static_cast<int>(n);
}

std::vector<int> parse_overflow_list(const std::string& name, const std::string& text) {
  std::vector<int> overflows;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::int64_t n = -2;
    try {
      n = parse_integer(item);
    } catch (const ParseError&) {
    }
    if (n < -1 || n > 1'000'000) {
      throw ScenarioError(name + " = " + text +
                          ": must be a list of max_overflow values (-1 or whole numbers >= 0)");
    }
    overflows.push_back(static_cast<int>(n));
  }
  if (overflows.empty()) throw ScenarioError(name + ": empty list");
  return overflows;
}

Target parse_target(const std::string& text) {
  const auto at = text.find("<=");
  const std::string allowed = "must be KEY<=VALUE with KEY one of " + metric_list() +
                              " (shares as fractions, e.g. timeouts<=0.001)";
  if (at == std::string::npos) throw ScenarioError("--target = " + text + ": " + allowed);
  Target t{std::string(trim(text.substr(0, at))), 0};
  bool known = false;
  for (const MetricInfo& m : kMetrics) known = known || t.key == m.key;
  if (!known) throw ScenarioError("--target = " + text + ": " + allowed);
  try {
    t.limit = parse_number(text.substr(at + 2));
  } catch (const ParseError& e) {
    throw ScenarioError("--target = " + text + ": the limit " + e.what());
  }
  if (t.limit < 0) throw ScenarioError("--target = " + text + ": the limit must not be negative");
  return t;
}

SizeAnswer size_pool(const Scenario& base, const std::vector<Target>& targets, int max_size,
                     const std::vector<int>& overflow_choices, const SizeProgress& progress) {
  if (base.pool.policy == Policy::kNull) {
    throw ScenarioError("pool.policy = null: NullPool has no pool.size to size (size a "
                        "queuepool instead)");
  }
  if (base.pool.policy == Policy::kStatic) {
    throw ScenarioError("pool.policy = static: StaticPool always has one connection (size a "
                        "queuepool instead)");
  }
  if (base.pool.policy == Policy::kHikari) {
    throw ScenarioError("pool.policy = hikari: size searches pool.size of a queuepool; for "
                        "HikariCP sweep hikari.maximum_pool_size");
  }
  if (base.pool.policy == Policy::kPgbouncer) {
    throw ScenarioError("pool.policy = pgbouncer: size searches pool.size of a queuepool "
                        "connected to the server; for pgbouncer sweep "
                        "pgbouncer.default_pool_size");
  }
  if (base.pool.policy == Policy::kPsycopg) {
    throw ScenarioError("pool.policy = psycopg: size searches pool.size of a queuepool; for "
                        "psycopg_pool sweep psycopg.max_size");
  }
  SizeAnswer answer;
  answer.overflow_choices = overflow_choices;
  std::string why, model;
  std::vector<std::vector<SizePoint>> curves;
  for (int overflow : overflow_choices) {
    auto curve = exact_curve(base, targets, max_size, overflow, &why, &model);
    if (!curve) break;
    curves.push_back(std::move(*curve));
  }
  if (curves.size() == overflow_choices.size()) {
    answer.method = "exact (" + model + ")";
    const int server_limit = base.max_connections / base.processes;
    if (max_size + *std::max_element(overflow_choices.begin(), overflow_choices.end()) >
        server_limit) {
      answer.method += "; sizes whose pools could exceed database.max_connections = " +
                       std::to_string(base.max_connections) + " are not tried";
    }
  } else {
    curves.clear();
    answer.method =
        "simulation: " + std::to_string(std::max(base.replications, kDefaultReplications)) +
        " replications per point, each target met by its 95% upper confidence bound (" + why + ")";
    // Doubling, then bisection between the last size that failed and the first that met.
    std::size_t done = 0;
    for (int overflow : overflow_choices) {
      std::vector<SizePoint> curve;
      auto evaluate = [&](int size) {
        curve.push_back(simulated_point(base, targets, size, overflow));
        if (progress)
          progress(std::min(0.99, static_cast<double>(++done) /
                                      (16.0 * static_cast<double>(overflow_choices.size()))));
        return curve.back().meets;
      };
      int failed = 0, met = 0;
      for (int size = 1; size <= max_size; size = std::min(max_size, size * 2)) {
        if (evaluate(size)) {
          met = size;
          break;
        }
        failed = size;
        if (size == max_size) break;
      }
      while (met > 0 && met - failed > 1) {
        const int mid = failed + (met - failed) / 2;
        (evaluate(mid) ? met : failed) = mid;
      }
      std::sort(curve.begin(), curve.end(),
                [](const SizePoint& a, const SizePoint& b) { return a.pool_size < b.pool_size; });
      curves.push_back(std::move(curve));
    }
  }
  for (auto& curve : curves) {
    std::optional<SizePoint> first;
    for (const SizePoint& p : curve) {
      if (p.meets) {
        first = p;
        break;
      }
    }
    answer.answers.push_back(first);
    for (SizePoint& p : curve) answer.curve.push_back(std::move(p));
  }
  return answer;
}

Json size_json(const SizeAnswer& a, const std::vector<Target>& targets) {
  Json curve = Json::array();
  for (const SizePoint& p : a.curve) {
    Json row{{"pool.size", p.pool_size}, {"pool.max_overflow", p.max_overflow}};
    for (std::size_t t = 0; t < targets.size(); ++t) row[targets[t].key] = p.values[t];
    row["meets"] = p.meets;
    curve.push_back(row);
  }
  Json answers = Json::array();
  for (std::size_t i = 0; i < a.answers.size(); ++i) {
    answers.push_back(
        Json{{"pool.max_overflow", a.overflow_choices[i]},
             {"pool.size", a.answers[i] ? Json(a.answers[i]->pool_size) : Json(nullptr)}});
  }
  Json target_list = Json::object();
  for (const Target& t : targets) target_list[t.key] = t.limit;
  return Json{{"poolsim", kVersion},    {"mode", "size"},     {"method", a.method},
              {"targets", target_list}, {"answers", answers}, {"curve", curve}};
}

std::string size_csv(const SizeAnswer& a, const std::vector<Target>& targets) {
  std::ostringstream out;
  out << "pool.size,pool.max_overflow";
  for (const Target& t : targets) out << "," << t.key;
  out << ",meets\n";
  for (const SizePoint& p : a.curve) {
    out << p.pool_size << "," << p.max_overflow;
    for (double v : p.values) out << "," << (std::isinf(v) ? std::string("inf") : Json(v).dump());
    out << "," << (p.meets ? "true" : "false") << "\n";
  }
  return out.str();
}

std::string size_table(const SizeAnswer& a, const std::vector<Target>& targets) {
  std::ostringstream out;
  out << "poolsim size: the smallest pool.size with";
  for (std::size_t t = 0; t < targets.size(); ++t) {
    out << (t ? " and " : " ") << targets[t].key << " <= " << Json(targets[t].limit).dump();
  }
  out << "\n  method: " << a.method << "\n\n";
  char buf[64];
  for (std::size_t i = 0; i < a.overflow_choices.size(); ++i) {
    const int overflow = a.overflow_choices[i];
    out << "  max_overflow " << overflow << ": ";
    if (a.answers[i]) {
      out << "pool.size = " << a.answers[i]->pool_size << "\n";
    } else {
      out << "no pool.size up to the search limit meets the targets\n";
    }
    out << "    pool.size";
    for (const Target& t : targets) {
      std::snprintf(buf, sizeof buf, " %14s", t.key.c_str());
      out << buf;
    }
    out << "  meets\n";
    // The curve around the answer: every point of a simulated search, a window of an exact scan.
    const int answer = a.answers[i] ? a.answers[i]->pool_size : 0;
    for (const SizePoint& p : a.curve) {
      if (p.max_overflow != overflow) continue;
      const bool exact = a.method.rfind("exact", 0) == 0;
      if (exact && answer > 0 && (p.pool_size < answer - 8 || p.pool_size > answer + 3)) continue;
      std::snprintf(buf, sizeof buf, "    %9d", p.pool_size);
      out << buf;
      for (double v : p.values) {
        std::snprintf(buf, sizeof buf, " %14.5g", v);
        out << buf;
      }
      out << (p.meets ? "  yes" : "  no") << "\n";
    }
  }
  out << "\n  (shares are fractions; times in ms; --format csv gives the whole curve)\n";
  return out.str();
}

}  // namespace poolsim::sim
