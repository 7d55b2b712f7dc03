// Which scenarios have an exact answer, and which model gives it.
//
// A QueuePool with instant connects behaves as N = pool.size + max_overflow servers: an idle
// connection or room for a new one serves a request at once, waiters are served oldest first,
// and a waiter's timeout is SQLAlchemy's constant patience. So, with Poisson arrivals and
// exponential holds:
//   pool.timeout = 0     -> Erlang B over N servers (a would-be wait is a TimeoutError)
//   pool.timeout = none  -> Erlang C over N servers (needs load < N)
//   pool.timeout = D     -> M/M/N+D (constant patience D)
// and the connection churn of the overflow (connections closed when they come back to a full
// queue, reopened on the next burst) comes from the overflow CTMC with instant connects. With
// exponential connects the overflow CTMC is the model itself (timeout 0 or none).
// Several processes with random routing split the Poisson stream into independent pools.
#include "sim/exact.hpp"

#include <cmath>
#include <limits>

namespace poolsim::sim {
namespace {

[[noreturn]] void not_exact(const Scenario& s, const char* key, const std::string& why) {
  throw NotExact(std::string(key) + " = " + s.option(key) + ": " + why);
}

bool costs_nothing(const Distribution& d) {
  return d.kind() == Distribution::Kind::kConst && d.mean_seconds() == 0;
}

// Refuses, naming the first feature that makes the scenario non-Markovian.
void require_markovian(const Scenario& s) {
  const std::string no = "no exact model: ";
  if (s.pool.policy == Policy::kNull) {
    not_exact(s, "pool.policy",
              no + "NullPool opens a connection per checkout; simulate it (an infinite-server "
                   "queue, every hold plus a connect)");
  }
  if (s.pool.policy == Policy::kStatic) {
    not_exact(s, "pool.policy",
              no + "StaticPool shares one connection: simulate it (with exponential holds and "
                   "no costs it is an M/M/1 queue)");
  }
  if (s.pool.policy == Policy::kHikari) {
    not_exact(s, "pool.policy",
              no + "HikariCP grows its pool one background connect at a time; simulate it");
  }
  if (s.pool.policy == Policy::kPgbouncer) {
    not_exact(s, "pool.policy",
              no + "pgbouncer puts a second queue (its servers) behind each app pool; "
                   "simulate it");
  }
  if (s.pool.policy == Policy::kPsycopg) {
    not_exact(s, "pool.policy",
              no + "psycopg_pool grows its pool one connect at a time while clients wait; "
                   "simulate it");
  }
  if (s.arrival != Arrival::kPoisson) {
    not_exact(s, "workload.arrival", no + "an exact answer needs Poisson arrivals (poisson)");
  }
  if (s.service.kind() != Distribution::Kind::kExp) {
    not_exact(s, "workload.service", no + "an exact answer needs exponential holds (exp:MEAN)");
  }
  if (s.pool.reset_on_return != ResetOnReturn::kNone && !costs_nothing(s.reset)) {
    not_exact(s, "database.reset",
              no + "a reset cost makes the hold non-exponential (use database.reset=const:0s or "
                   "pool.reset_on_return=none)");
  }
  if (s.pool.pre_ping && !costs_nothing(s.ping)) {
    not_exact(s, "pool.pre_ping",
              no + "pre-ping adds a constant ping to checkouts (database.ping)");
  }
  if (s.pool.recycle) not_exact(s, "pool.recycle", no + "recycling replaces connections by age");
  if (s.idle_drop_after.count() > 0)
    not_exact(s, "network.idle_drop_after", no + "idle drops depend on idle time");
  if (s.drop_rate > 0)
    not_exact(s, "network.drop_rate", no + "dropped connections are found only when used");
  if (s.connect_fail > 0)
    not_exact(s, "network.connect_fail", no + "failed connects are not modeled exactly");
  if (s.idle_session_timeout.count() > 0) {
    not_exact(s, "database.idle_session_timeout",
              no + "server-side idle closes depend on idle time");
  }
  if (!s.outages.empty()) not_exact(s, "database.outages", no + "outages are not a steady state");
  if (s.threads > 0)
    not_exact(s, "app.threads", no + "an exact answer needs app.threads = 0 (no thread cap)");
  if (s.processes > 1 && s.routing != Routing::kRandom) {
    not_exact(s, "app.routing",
              no + "round robin does not split Poisson traffic into Poisson streams (use random)");
  }
  if (s.pool.pool_size == 0 && s.pool.compat == Compat::kSqlalchemy20) {
    not_exact(s, "pool.size", no + "pool.size 0 under SQLAlchemy 2.0 means unlimited connections");
  }
  if (s.pool.max_overflow < 0) {
    not_exact(s, "pool.max_overflow", no + "unlimited overflow (-1) has no finite model here");
  }
  const bool instant = costs_nothing(s.connect);
  if (!instant && s.connect.kind() != Distribution::Kind::kExp) {
    not_exact(s, "database.connect",
              no + "an exact answer needs instant (const:0s) or exponential connects");
  }
  if (!instant && (s.connect_capacity > 0 || !s.connect_curve.empty())) {
    not_exact(s, "database.connect_capacity",
              no + "queued connection set-ups are not modeled exactly");
  }
  if (!instant && s.pool.timeout && s.pool.timeout->count() > 0) {
    not_exact(s, "pool.timeout",
              no + "with exponential connects the exact model has pool.timeout 0 or none only");
  }
  if (!instant && s.pool.pool_size == 0) {
    not_exact(s, "pool.size", no + "the overflow model needs pool.size >= 1");
  }
  const long long most =
      static_cast<long long>(s.processes) * (s.pool.pool_size + s.pool.max_overflow);
  if (most > s.max_connections) {
    not_exact(s, "database.max_connections",
              no + "the pools may hold " + std::to_string(most) +
                  " connections, so refusals would matter; it needs processes x (size + "
                  "max_overflow) <= max_connections");
  }
}

// poolsim reports p_wait as the share of requests whose wait was > 0 (DESIGN.md); the models
// count every request not granted at once, which with pool.timeout 0 includes the ones that
// fail at once, with no wait.
PoolMetrics as_reported(PoolMetrics m, bool block) {
  if (block) m.p_wait = std::max(0.0, m.p_wait - m.p_timeout);
  return m;
}

}  // namespace

PoolMetrics exact_pool_metrics(const Scenario& s, Churn detail) {
  require_markovian(s);
  const double lambda = s.rate / s.processes;
  const double mu = 1.0 / s.service.mean_seconds();
  const int servers = s.pool.pool_size + s.pool.max_overflow;
  const bool instant = costs_nothing(s.connect);
  const bool block = s.pool.timeout && s.pool.timeout->count() == 0;
  if (servers == 0) {
    not_exact(s, "pool.max_overflow",
              "pool.size 0 with max_overflow 0 can never connect (SQLAlchemy 1.4)");
  }
  if (!block && !s.pool.timeout && lambda >= servers * mu) {
    not_exact(s, "workload.rate",
              "the offered load " + std::to_string(lambda / mu) +
                  " erlangs per pool is not below its " + std::to_string(servers) +
                  " connections: with pool.timeout none the wait grows without end");
  }
  // A pool_size-0 pool under 1.4 never closes a connection (its queue is unbounded): after the
  // first busy period it holds all N connections, with no churn.
  const bool fixed = s.pool.max_overflow == 0 || s.pool.pool_size == 0;
  ChurnModel churn{
      s.pool.pool_size,
      s.pool.max_overflow,
      lambda,
      mu,
      instant ? std::numeric_limits<double>::infinity() : 1.0 / s.connect.mean_seconds(),
      block};
  if (!instant) return as_reported(overflow_churn_ctmc(churn), block);

  PoolMetrics m = block             ? as_reported(erlang_b_pool(servers, lambda, mu), block)
                  : !s.pool.timeout ? erlang_c_pool(servers, lambda, mu)
                                    : mmc_plus_d(servers, lambda, mu, to_seconds(*s.pool.timeout));
  if (fixed) {
    m.mean_open = servers;
    m.opened_per_s = 0;
    m.open_distribution.assign(static_cast<std::size_t>(servers) + 1, 0.0);
    m.open_distribution.back() = 1.0;
  } else if ((!s.pool.timeout || block) && detail == Churn::kSolve) {
    const PoolMetrics c =
        overflow_churn_ctmc(churn);  // the same queue, seen through its connections
    m.mean_open = c.mean_open;
    m.opened_per_s = c.opened_per_s;
    m.open_distribution = c.open_distribution;
    m.truncation_error = std::max(m.truncation_error, c.truncation_error);
    m.states = c.states;
  } else {
    m.mean_open = std::numeric_limits<double>::quiet_NaN();  // churn with a finite timeout: unknown
    m.opened_per_s = std::numeric_limits<double>::quiet_NaN();
    m.open_distribution.clear();
  }
  return m;
}

namespace {

Json ms_or_null(std::optional<double> seconds) {
  if (!seconds) return nullptr;
  return *seconds * 1e3;
}

void put_if_known(Json& object, const char* key, double value) {
  if (!std::isnan(value)) object[key] = value;
}

}  // namespace

Json analytic_result(const Scenario& s) {
  const PoolMetrics m = exact_pool_metrics(s);
  Json config = Json::object();
  for (const auto& [key, value] : s.echo) {
    if (!value.empty() && key != "duration" && key != "warmup" && key != "seed" &&
        key != "replications") {
      config[key] = value;
    }
  }
  Json result{{"poolsim", kVersion}, {"mode", "analytic"}, {"model", m.model}, {"config", config}};
  result["p_wait"] = m.p_wait;
  result["p_timeout"] = m.p_timeout;
  Json wait{{"mean", m.mean_wait_s * 1e3}};
  if (m.wait_p50_s) wait["p50"] = ms_or_null(m.wait_p50_s);
  if (m.wait_p95_s) wait["p95"] = ms_or_null(m.wait_p95_s);
  if (m.wait_p99_s) wait["p99"] = ms_or_null(m.wait_p99_s);
  result["wait_ms"] = wait;
  Json connections = Json::object();
  const double p = s.processes;
  put_if_known(connections, "opened_per_s", m.opened_per_s * p);
  put_if_known(connections, "mean_open", m.mean_open * p);
  connections["mean_in_use"] = m.mean_in_use * p;
  if (!m.open_distribution.empty()) {
    // Total connections at the server: the independent pools' open counts added up.
    std::vector<double> total{1.0};
    for (int k = 0; k < s.processes; ++k) {
      std::vector<double> next(total.size() + m.open_distribution.size() - 1, 0.0);
      for (std::size_t a = 0; a < total.size(); ++a) {
        for (std::size_t b = 0; b < m.open_distribution.size(); ++b)
          next[a + b] += total[a] * m.open_distribution[b];
      }
      total = std::move(next);
    }
    double mean = 0, cumulative = 0;
    std::optional<std::size_t> p99;
    for (std::size_t n = 0; n < total.size(); ++n) {
      mean += static_cast<double>(n) * total[n];
      cumulative += total[n];
      if (!p99 && cumulative >= 0.99) p99 = n;
    }
    std::size_t most = 0;
    for (std::size_t n = 0; n < total.size(); ++n) {
      if (total[n] > 1e-12) most = n;
    }
    connections["server"] = Json{{"mean", mean}, {"p99", p99.value_or(most)}, {"max", most}};
  }
  result["connections"] = connections;
  if (s.processes > 1) {
    result["per_process"] =
        Json{{"rate", s.rate / p}, {"p_wait", m.p_wait}, {"mean_in_use", m.mean_in_use}};
    put_if_known(result["per_process"], "mean_open", m.mean_open);
    put_if_known(result["per_process"], "opened_per_s", m.opened_per_s);
  }
  result["truncation_error"] = m.truncation_error;
  if (m.states > 0) result["ctmc_states"] = m.states;
  return result;
}

}  // namespace poolsim::sim
