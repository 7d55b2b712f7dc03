// `poolsim calibrate`, and what `validate --calibrate` measures before and after its live run.
//
// A server is measured the way the pool will use it: libpq connects one at a time (the lone
// cost, database.connect), SELECT 1 (database.ping), ROLLBACK of an open transaction
// (database.reset), pg_sleep's cost beyond its sleep (validate's after-hold cost), and connect
// storms: 1, 2, 4, 8 and 16 connects started at once, several rounds of each, as a burst
// through the overflow or a restart under a full pool starts them. On a machine with few cores
// their SCRAM handshakes and backend starts compete for the CPU, so each takes longer than one
// alone, and by how much depends on how many run at once.
//
// The storms become database.connect_capacity's curve: for each storm size n, in ascending order,
// the capacity at n is the one under which the simulator's processor sharing (each of k set-ups
// in flight at sim::curve_speed(curve, k), with the lone cost's distribution) finishes a storm
// of n in the measured mean time per connect. The smaller sizes' points are fitted first, so a
// storm of 16 that drains through 8, 4 and 2 in flight is modelled with the measured speeds
// there. That is the mean a waiting request sees; the model's last connect of a storm is shown
// beside the measured one (live, set-ups finish one after another, as the postmaster forks
// backends one at a time, where processor sharing finishes them together).
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <latch>
#include <memory>
#include <numeric>
#include <thread>

#include "real_pool/live.hpp"
#include "real_pool/test_server.hpp"
#include "sim/random.hpp"
#include "sim/units.hpp"

namespace poolsim::real_pool {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

double mean_of(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

double variance_of(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean_of(v);
  double sq = 0;
  for (double x : v) sq += (x - m) * (x - m);
  return sq / static_cast<double>(v.size() - 1);
}

PGconn* connect_or_throw(const std::string& dsn, const std::string& what) {
  PGconn* c = PQconnectdb(dsn.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    const std::string why = PQerrorMessage(c);
    PQfinish(c);
    throw LiveError("cannot " + what + " to " + mask_password(dsn) + ": " +
                    why.substr(0, why.find('\n')));
  }
  return c;
}

// n connects started at once: each one's time from the storm's start to its end, in ms.
std::vector<double> connect_storm(const std::string& dsn, int n) {
  std::vector<PGconn*> conns(static_cast<std::size_t>(n), nullptr);
  std::vector<Clock::time_point> start(conns.size()), end(conns.size());
  std::latch go(n);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < conns.size(); ++i) {
    threads.emplace_back([&, i] {
      go.arrive_and_wait();
      start[i] = Clock::now();
      conns[i] = PQconnectdb(dsn.c_str());
      end[i] = Clock::now();
    });
  }
  for (std::thread& t : threads) t.join();
  std::string why;
  for (PGconn* c : conns) {
    if (PQstatus(c) != CONNECTION_OK && why.empty()) why = PQerrorMessage(c);
    PQfinish(c);
  }
  if (!why.empty()) {
    throw LiveError("cannot open " + std::to_string(n) + " connections at once to " +
                    mask_password(dsn) + ": " + why.substr(0, why.find('\n')));
  }
  const Clock::time_point first = *std::min_element(start.begin(), start.end());
  std::vector<double> out;
  for (const Clock::time_point& e : end) {
    out.push_back(std::chrono::duration<double, std::milli>(e - first).count());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// A storm of set-ups started together, with these works (ns, ascending), under processor
// sharing with the curve: the mean and the last completion time, in the works' unit.
struct StormTimes {
  double mean;
  double last;
};
StormTimes model_storm(const std::vector<sim::CapacityPoint>& curve,
                       const std::vector<double>& works) {
  double t = 0, done = 0, sum = 0;
  const std::size_t n = works.size();
  for (std::size_t k = 0; k < n; ++k) {
    t += (works[k] - done) / sim::curve_speed(curve, static_cast<double>(n - k));
    done = works[k];
    sum += t;
  }
  return {sum / static_cast<double>(n), t};
}

// Storms of n with works drawn from the lone connect's distribution, the same draws for every
// capacity tried (common random numbers: the fit's bisection then sees a monotone function).
constexpr int kModelStorms = 400;
std::vector<std::vector<double>> sample_works(const sim::Distribution& lone, int n) {
  sim::Rng rng(20261207, static_cast<std::uint64_t>(n));
  std::vector<std::vector<double>> storms(kModelStorms);
  for (std::vector<double>& works : storms) {
    for (int i = 0; i < n; ++i) works.push_back(static_cast<double>(lone.sample(rng).count()));
    std::sort(works.begin(), works.end());
  }
  return storms;
}

StormTimes model_storms(const std::vector<sim::CapacityPoint>& curve,
                        const std::vector<std::vector<double>>& storms) {
  StormTimes sum{0, 0};
  for (const std::vector<double>& works : storms) {
    const StormTimes t = model_storm(curve, works);
    sum.mean += t.mean / kModelStorms;
    sum.last += t.last / kModelStorms;
  }
  return {sum.mean * 1e-6, sum.last * 1e-6};  // ns -> ms
}

// The capacity at n, with the smaller sizes' points fitted, under which the model's storm of n
// has the measured mean time per connect: between 1% of n (the server nearly stalled) and n
// (no slowdown at all).
double fit_capacity(std::vector<sim::CapacityPoint> curve, int n, double target_ms,
                    const std::vector<std::vector<double>>& storms) {
  curve.push_back({n, static_cast<double>(n)});
  auto mean_at = [&](double c) {
    curve.back().capacity = c;
    return model_storms(curve, storms).mean;
  };
  double lo = 0.01 * n, hi = n;
  if (mean_at(hi) >= target_ms) return hi;
  if (mean_at(lo) <= target_ms) return lo;
  for (int i = 0; i < 50; ++i) {
    const double mid = 0.5 * (lo + hi);
    (mean_at(mid) > target_ms ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

double cv_of(const std::vector<double>& v) {
  const double mean = mean_of(v);
  return mean > 0 ? std::sqrt(variance_of(v)) / mean : 0;
}

// A measured cost as the lognormal with its mean and coefficient of variation.
std::string lognormal_spec(const std::vector<double>& ms) {
  char spec[128];
  std::snprintf(spec, sizeof spec, "lognormal:mean=%.0fus,cv=%.2f", mean_of(ms) * 1e3,
                std::max(cv_of(ms), 0.01));
  return spec;
}

// The mean of each storm round: the round's connects' mean time from the storm's start.
std::vector<double> round_means(const std::vector<std::vector<double>>& rounds) {
  std::vector<double> out;
  for (const std::vector<double>& r : rounds) out.push_back(mean_of(r));
  return out;
}

// Per round, the storms of every size together: the sum of their mean times per connect.
std::vector<double> round_totals(const Measurements& m) {
  std::vector<double> totals(m.storms.front().size(), 0.0);
  for (const auto& size : m.storms) {
    const std::vector<double> means = round_means(size);
    for (std::size_t r = 0; r < totals.size(); ++r) totals[r] += means[r];
  }
  return totals;
}

}  // namespace

Measurements measure(const std::string& dsn, int samples) {
  Measurements m;
  sim::Rng rng(20261125, 0);
  PQfinish(connect_or_throw(dsn, "connect"));  // the server's first connect warms its caches
  for (int i = 0; i < samples; ++i) {
    const auto t = Clock::now();
    PGconn* c = connect_or_throw(dsn, "connect");
    m.connect.push_back(ms_since(t));
    for (int k = 0; k < 5; ++k) {
      auto t0 = Clock::now();
      PQclear(PQexec(c, "SELECT 1"));
      m.ping.push_back(ms_since(t0));
      PQclear(PQexec(c, "BEGIN"));
      PQclear(PQexec(c, "SELECT 1"));
      t0 = Clock::now();
      PQclear(PQexec(c, "ROLLBACK"));
      m.reset.push_back(ms_since(t0));
      // What `SELECT pg_sleep(h)` costs beyond h: PostgreSQL sleeps in whole milliseconds
      // (rounding up) and the statement needs its round trip.
      const double h = 0.001 + 0.005 * rng.uniform();
      const std::string sql = "SELECT pg_sleep(" + std::to_string(h) + ")";
      t0 = Clock::now();
      PQclear(PQexec(c, sql.c_str()));
      m.statement.push_back(std::max(0.0, ms_since(t0) - h * 1e3));
    }
    PQfinish(c);
  }
  // Every round runs every size, ascending and descending by turns, so a machine that slows
  // down during the measurement slows every size alike.
  m.storms.assign(std::size(kStormSizes), {});
  for (int round = 0; round < kStormRounds; ++round) {
    for (std::size_t i = 0; i < std::size(kStormSizes); ++i) {
      const std::size_t k = round % 2 == 0 ? i : std::size(kStormSizes) - 1 - i;
      m.storms[k].push_back(connect_storm(dsn, kStormSizes[k]));
    }
  }
  m.dsn = mask_password(dsn);
  return m;
}

Measurements merge(const Measurements& a, const Measurements& b) {
  Measurements m = a;
  auto append = [](std::vector<double>& to, const std::vector<double>& from) {
    to.insert(to.end(), from.begin(), from.end());
  };
  append(m.connect, b.connect);
  append(m.ping, b.ping);
  append(m.reset, b.reset);
  append(m.statement, b.statement);
  for (std::size_t i = 0; i < m.storms.size(); ++i) {
    m.storms[i].insert(m.storms[i].end(), b.storms[i].begin(), b.storms[i].end());
  }
  return m;
}

Calibration summarize(const Measurements& m) {
  Calibration out;
  out.json = sim::Json::object();
  sim::Json options = sim::Json::object();
  out.ini = "[database]\n";
  for (auto [name, values] : std::vector<std::pair<std::string, std::vector<double>>>{
           {"connect", m.connect}, {"ping", m.ping}, {"reset", m.reset},
           {"statement", m.statement}}) {
    std::vector<double>& v = values;
    std::sort(v.begin(), v.end());
    const double mean = mean_of(v);
    auto pct = [&v](double q) {
      return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
    };
    const std::string spec = lognormal_spec(v);
    out.json[name] = sim::Json{{"samples", v.size()},
                               {"mean_ms", mean},
                               {"cv", cv_of(v)},
                               {"p50_ms", pct(0.5)},
                               {"p95_ms", pct(0.95)},
                               {"max_ms", v.back()},
                               {"distribution", spec}};
    if (name == "statement") {  // not a scenario option: validate uses it (see there)
      char line[200];
      std::snprintf(line, sizeof line,
                    "# a statement's round trip beyond its pg_sleep: %.3f ms mean, p95 %.3f ms "
                    "(validate --calibrate simulates it as reset)\n",
                    mean, pct(0.95));
      out.ini += line;
      continue;
    }
    options["database." + name] = spec;
    out.ini += name + " = " + spec + "\n";
  }

  // The capacity curve, size by size (see the top of this file), with each size's spread: the
  // capacities that its slowest and its fastest round would give.
  const sim::Distribution lone =
      sim::Distribution::parse(options["database.connect"].get<std::string>());
  std::vector<sim::CapacityPoint> curve;
  sim::Json storms = sim::Json::array();
  std::string curve_text;
  char line[200];
  std::string ini_sizes = "#   connects at once      ", ini_mean = "#   mean per connect (ms) ",
              ini_spread = "#   rounds' range (ms)    ", ini_last = "#   last of a storm (ms)  ",
              ini_model = "#   model's last (ms)     ";
  for (std::size_t i = 0; i < m.storms.size(); ++i) {
    const int n = kStormSizes[i];
    const std::vector<double> means = round_means(m.storms[i]);
    std::vector<double> lasts;
    for (const std::vector<double>& r : m.storms[i]) lasts.push_back(r.back());
    const double target = mean_of(means);
    const auto works = sample_works(lone, n);
    const double capacity = fit_capacity(curve, n, target, works);
    const auto [fastest, slowest] = std::minmax_element(means.begin(), means.end());
    const double high = fit_capacity(curve, n, *fastest, works);
    const double low = fit_capacity(curve, n, *slowest, works);
    curve.push_back({n, capacity});
    const StormTimes model = model_storms(curve, works);
    storms.push_back(sim::Json{{"connects_at_once", n},
                               {"rounds", means.size()},
                               {"mean_ms", target},
                               {"round_min_ms", *fastest},
                               {"round_max_ms", *slowest},
                               {"last_ms", mean_of(lasts)},
                               {"per_s", n / mean_of(lasts) * 1e3},
                               {"capacity", capacity},
                               {"capacity_range", {low, high}},
                               {"model_mean_ms", model.mean},
                               {"model_last_ms", model.last}});
    char point[48];
    std::snprintf(point, sizeof point, "%s%d:%.2f", curve_text.empty() ? "" : ",", n,
                  std::max(capacity, 0.01));
    curve_text += point;
    auto cell = [&line](std::string& row, double v) {
      std::snprintf(line, sizeof line, "%8.1f", v);
      row += line;
    };
    std::snprintf(line, sizeof line, "%8d", n);
    ini_sizes += line;
    cell(ini_mean, target);
    char range[48];
    std::snprintf(range, sizeof range, "%.0f-%.0f", *fastest, *slowest);
    std::snprintf(line, sizeof line, "%8s", range);
    ini_spread += line;
    cell(ini_last, mean_of(lasts));
    cell(ini_model, model.last);
  }
  out.json["connect_storms"] = storms;
  options["database.connect_capacity"] = curve_text;
  options["database.connect_sharing"] = "shared";
  std::snprintf(line, sizeof line,
                "# connect storms, %zu rounds each, against one connect alone (%.1f ms):\n",
                m.storms.front().size(), mean_of(m.connect));
  out.ini += line;
  for (const std::string* row : {&ini_sizes, &ini_mean, &ini_spread, &ini_last, &ini_model}) {
    out.ini += *row + "\n";
  }
  out.ini += "# capacity at n: set-ups' worth of work the server does with n in flight, fitted\n"
             "# so the model's storms take the measured mean per connect\n";
  out.ini += "connect_capacity = " + curve_text + "\nconnect_sharing = shared\n";
  out.json["options"] = options;
  out.json["dsn"] = m.dsn;
  return out;
}

sim::Json compare_drift(const Measurements& before, const Measurements& after) {
  auto judge = [](const std::vector<double>& b, const std::vector<double>& a) {
    const double mb = mean_of(b), ma = mean_of(a);
    const double se = std::sqrt(variance_of(b) / static_cast<double>(b.size()) +
                                variance_of(a) / static_cast<double>(a.size()));
    const double change = ma / mb - 1;
    const double noise = kDriftNoiseSe * se / mb;
    return sim::Json{{"before_ms", mb},
                     {"after_ms", ma},
                     {"change", change},
                     {"noise", noise},
                     {"drifted", std::abs(change) > std::max(noise, kDriftMinChange)}};
  };
  sim::Json lone = judge(before.connect, after.connect);
  sim::Json storms = judge(round_totals(before), round_totals(after));
  const bool drifted = lone["drifted"].get<bool>() || storms["drifted"].get<bool>();
  char rule[400];
  std::snprintf(rule, sizeof rule,
                "drifted when a lone connect's mean time, or a round of storms' (1 to 16 connects "
                "at once, their mean times per connect added up), changed between before and "
                "after the live run by more than %.0f%% and by more than %.0f standard errors of "
                "the difference",
                kDriftMinChange * 100, kDriftNoiseSe);
  return sim::Json{
      {"drifted", drifted}, {"rule", rule}, {"lone_connect", lone}, {"storm_round", storms}};
}

std::string drift_text(const sim::Json& drift) {
  std::string out;
  for (const char* key : {"lone_connect", "storm_round"}) {
    const sim::Json& d = drift[key];
    if (!d["drifted"].get<bool>()) continue;
    char line[240];
    std::snprintf(line, sizeof line,
                  "%s%s %.1f ms before the live run, %.1f ms after (%+.0f%%, noise ±%.0f%%)",
                  out.empty() ? "" : "; ",
                  std::string(key) == "lone_connect" ? "a lone connect took"
                                                     : "a round of connect storms took",
                  d["before_ms"].get<double>(), d["after_ms"].get<double>(),
                  d["change"].get<double>() * 100, d["noise"].get<double>() * 100);
    out += line;
  }
  return out;
}

Calibration calibrate(const std::string& dsn_in, int samples) {
  check_dsn(dsn_in);
  std::unique_ptr<TestServer> server;
  const std::string dsn =
      dsn_in == "auto" ? (server = std::make_unique<TestServer>())->dsn() : dsn_in;
  return summarize(measure(dsn, samples));
}

}  // namespace poolsim::real_pool
