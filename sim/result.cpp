#include "sim/result.hpp"

#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "sim/units.hpp"

namespace poolsim::sim {
namespace {

double ms(double ns) { return ns / 1e6; }

Json summary_ms(const Histogram& h) {
  return Json{{"mean", ms(h.mean())},
              {"p50", ms(h.quantile(0.50))},
              {"p95", ms(h.quantile(0.95))},
              {"p99", ms(h.quantile(0.99))},
              {"max", ms(static_cast<double>(h.max()))}};
}

// A config value as JSON: numbers and booleans as such, everything else as text.
Json config_value(const std::string& text) {
  if (text == "true" || text == "false") return text == "true";
  try {
    return parse_integer(text);
  } catch (const ParseError&) {
  }
  try {
    return parse_number(text);
  } catch (const ParseError&) {
  }
  return text;
}

double fraction(std::uint64_t part, std::uint64_t whole) {
  return whole == 0 ? 0.0 : static_cast<double>(part) / static_cast<double>(whole);
}

}  // namespace

Json simulation_result(const Scenario& scenario, const std::vector<ReplicationStats>& runs,
                       double wall_seconds) {
  ReplicationStats total;
  double mean_open = 0, mean_in_use = 0;
  for (const ReplicationStats& r : runs) {
    total.requests += r.requests;
    total.completed += r.completed;
    total.timeouts += r.timeouts;
    total.connect_failed += r.connect_failed;
    total.too_many_connections += r.too_many_connections;
    total.disconnect += r.disconnect;
    total.waited += r.waited;
    total.wait.merge(r.wait);
    total.latency.merge(r.latency);
    total.opened += r.opened;
    total.closed += r.closed;
    total.peak_open = std::max(total.peak_open, r.peak_open);
    total.peak_server = std::max(total.peak_server, r.peak_server);
    total.events += r.events;
    total.sim_time_s += r.sim_time_s;
    mean_open += r.mean_open / static_cast<double>(runs.size());
    mean_in_use += r.mean_in_use / static_cast<double>(runs.size());
  }
  const std::uint64_t answered = total.completed + total.timeouts + total.connect_failed +
                                 total.too_many_connections + total.disconnect;

  // The options that shaped this run: those of other arrival kinds are left out.
  auto relevant = [&scenario](const std::string& key) {
    if (key.rfind("workload.burst_", 0) == 0) return scenario.arrival == Arrival::kOnOff;
    if (key == "workload.period" || key == "workload.amplitude")
      return scenario.arrival == Arrival::kDiurnal;
    if (key == "workload.clients" || key == "workload.think")
      return scenario.arrival == Arrival::kClosed;
    if (key == "workload.trace") return scenario.arrival == Arrival::kTrace;
    if (key == "workload.rate")
      return scenario.arrival != Arrival::kTrace && scenario.arrival != Arrival::kClosed;
    return true;
  };
  Json config = Json::object();
  for (const auto& [key, value] : scenario.echo) {
    if (value.empty() || !relevant(key)) continue;
    config[key] = key == "pool.compat" ? Json(value) : config_value(value);
  }
  Json result{{"poolsim", kVersion},
              {"mode", "sim"},
              {"config", config},
              {"replications", runs.size()},
              {"requests", total.requests},
              {"completed", total.completed},
              {"timeouts", total.timeouts},
              {"errors",
               {{"connect_failed", total.connect_failed},
                {"too_many_connections", total.too_many_connections},
                {"disconnect", total.disconnect}}}};
  if (answered != total.requests) result["unfinished"] = total.requests - answered;
  result["p_wait"] = fraction(total.waited, total.requests);
  result["wait_ms"] = summary_ms(total.wait);
  result["latency_ms"] = summary_ms(total.latency);
  result["connections"] =
      Json{{"opened", total.opened},
           {"closed", total.closed},
           {"opened_per_s",
            total.sim_time_s > 0 ? static_cast<double>(total.opened) / total.sim_time_s : 0.0},
           {"peak", total.peak_open},
           {"mean_open", mean_open},
           {"mean_in_use", mean_in_use},
           {"peak_server", total.peak_server}};
  if (runs.size() > 1) {
    struct Metric {
      const char* name;
      double (*of)(const ReplicationStats&);
    };
    static const Metric kMetrics[] = {
        {"p_wait", [](const ReplicationStats& r) { return fraction(r.waited, r.requests); }},
        {"timeouts", [](const ReplicationStats& r) { return static_cast<double>(r.timeouts); }},
        {"wait_ms.mean", [](const ReplicationStats& r) { return ms(r.wait.mean()); }},
        {"wait_ms.p99", [](const ReplicationStats& r) { return ms(r.wait.quantile(0.99)); }},
        {"latency_ms.mean", [](const ReplicationStats& r) { return ms(r.latency.mean()); }},
        {"latency_ms.p99", [](const ReplicationStats& r) { return ms(r.latency.quantile(0.99)); }},
        {"connections.opened_per_s",
         [](const ReplicationStats& r) { return static_cast<double>(r.opened) / r.sim_time_s; }},
        {"connections.mean_open", [](const ReplicationStats& r) { return r.mean_open; }},
        {"connections.mean_in_use", [](const ReplicationStats& r) { return r.mean_in_use; }},
        {"connections.peak_server", [](const ReplicationStats& r) { return r.peak_server; }},
    };
    Json ci = Json::object();
    for (const Metric& m : kMetrics) {
      std::vector<double> values;
      for (const ReplicationStats& r : runs) values.push_back(m.of(r));
      ci[m.name] = student_t95(values).half_width;
    }
    result["ci95"] = ci;
  }
  result["events"] = total.events;
  result["sim_time_s"] = total.sim_time_s;
  result["wall_s"] = wall_seconds;
  return result;
}

Json simulate(const Scenario& scenario, const Progress& progress, Samples* samples) {
  const auto started = std::chrono::steady_clock::now();
  std::vector<ReplicationStats> runs;
  runs.reserve(static_cast<std::size_t>(scenario.replications));
  for (int i = 0; i < scenario.replications; ++i) {
    Progress part;
    if (progress) {
      part = [&, i](double f) { progress((i + f) / scenario.replications); };
    }
    runs.push_back(run_replication(scenario, i, part, samples));
  }
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return simulation_result(scenario, runs, wall);
}

namespace {

void flatten_into(const Json& value, const std::string& prefix,
                  std::vector<std::pair<std::string, std::string>>& out) {
  if (value.is_object()) {
    for (const auto& item : value.items()) {
      flatten_into(item.value(), prefix.empty() ? item.key() : prefix + "." + item.key(), out);
    }
  } else if (value.is_string()) {
    out.emplace_back(prefix, value.get<std::string>());
  } else {
    out.emplace_back(prefix, value.dump());
  }
}

std::string number(double v, int decimals = 3) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string with_ci(const Json& result, const std::string& key, double v, int decimals = 3) {
  std::string text = number(v, decimals);
  if (result.contains("ci95") && result["ci95"].contains(key)) {
    text += " ±" + number(result["ci95"][key].get<double>(), decimals);
  }
  return text;
}

std::string count(std::uint64_t n) {  // 1234567 -> 1,234,567
  const std::string digits = std::to_string(n);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> flatten(const Json& result) {
  std::vector<std::pair<std::string, std::string>> out;
  flatten_into(result, "", out);
  return out;
}

std::string csv_escape(const std::string& field) {
  if (field.find_first_of(",\"\n") == std::string::npos) return field;
  std::string quoted = "\"";
  for (char ch : field) {
    if (ch == '"') quoted += '"';
    quoted += ch;
  }
  return quoted + "\"";
}

std::string render_table(const Json& r) {
  const Json& c = r["config"];
  auto cfg = [&c](const char* key) {
    if (!c.contains(key)) return std::string("-");
    return c[key].is_string() ? c[key].get<std::string>() : c[key].dump();
  };
  std::ostringstream out;
  const auto requests = r["requests"].get<std::uint64_t>();
  out << "poolsim " << r["mode"].get<std::string>() << ": ";
  const std::string policy = cfg("pool.policy");
  if (policy == "hikari") {
    out << "HikariCP maximumPoolSize " << cfg("hikari.maximum_pool_size") << ", minimumIdle "
        << cfg("hikari.minimum_idle") << ", connectionTimeout " << cfg("hikari.connection_timeout")
        << ", maxLifetime " << cfg("hikari.max_lifetime") << ", keepaliveTime "
        << cfg("hikari.keepalive_time") << "\n";
  } else if (policy == "psycopg") {
    const std::string max_size = cfg("psycopg.max_size");
    out << "psycopg_pool min_size " << cfg("psycopg.min_size") << ", max_size "
        << (max_size == "min" ? cfg("psycopg.min_size") : max_size) << ", timeout "
        << cfg("psycopg.timeout") << ", max_idle " << cfg("psycopg.max_idle")
        << ", max_lifetime " << cfg("psycopg.max_lifetime") << ", check "
        << cfg("psycopg.check") << "\n";
  } else {
    if (policy == "null") {
      out << "NullPool (a new connection for every checkout)";
    } else if (policy == "static") {
      out << "StaticPool (one connection shared by every checkout)";
    } else {
      if (policy == "pgbouncer") {
        out << "pgbouncer default_pool_size " << cfg("pgbouncer.default_pool_size")
            << " (reserve " << cfg("pgbouncer.reserve_pool_size") << "), query_wait_timeout "
            << cfg("pgbouncer.query_wait_timeout") << ", in front of each process's ";
      }
      out << "pool " << cfg("pool.size") << " + " << cfg("pool.max_overflow")
          << " overflow, timeout " << cfg("pool.timeout");
    }
    out << ", recycle " << cfg("pool.recycle") << ", pre_ping " << cfg("pool.pre_ping") << "\n";
  }
  out
      << "  " << cfg("app.processes") << " process(es), " << cfg("workload.arrival") << " "
      << cfg("workload.rate") << "/s, hold " << cfg("workload.service") << ", connect "
      << cfg("database.connect") << "\n"
      << "  " << number(r["sim_time_s"].get<double>(), 0)
      << (r.contains("events") ? " s simulated in " : " s measured live in ")
      << r["replications"].get<std::uint64_t>() << " replication(s), " << count(requests)
      << " requests, "
      << (r.contains("events") ? count(r["events"].get<std::uint64_t>()) + " events, " : "")
      << number(r["wall_s"].get<double>(), 2) << " s\n\n";

  const Json& e = r["errors"];
  const std::uint64_t errors = e["connect_failed"].get<std::uint64_t>() +
                               e["too_many_connections"].get<std::uint64_t>() +
                               e["disconnect"].get<std::uint64_t>();
  auto share = [requests](std::uint64_t n) {
    return requests
               ? " (" + number(100.0 * static_cast<double>(n) / static_cast<double>(requests), 2) +
                     "%)"
               : "";
  };
  out << "  completed    " << count(r["completed"].get<std::uint64_t>())
      << share(r["completed"].get<std::uint64_t>()) << "\n"
      << "  timeouts     " << count(r["timeouts"].get<std::uint64_t>())
      << share(r["timeouts"].get<std::uint64_t>()) << "\n"
      << "  errors       " << count(errors) << share(errors) << "   connect_failed "
      << count(e["connect_failed"].get<std::uint64_t>()) << ", too_many_connections "
      << count(e["too_many_connections"].get<std::uint64_t>()) << ", disconnect "
      << count(e["disconnect"].get<std::uint64_t>()) << "\n";
  if (r.contains("unfinished")) {
    out << "  unfinished   " << count(r["unfinished"].get<std::uint64_t>())
        << "   (still waiting when nothing more could happen: a wait without a timeout, or "
           "model time beyond its end, 292 years)\n";
  }
  out << "  p_wait       " << with_ci(r, "p_wait", r["p_wait"].get<double>(), 4)
      << "   (share of requests that waited for a connection)\n\n";

  char line[200];
  std::snprintf(line, sizeof line, "  %-12s %12s %10s %10s %10s %10s\n", "ms", "mean", "p50", "p95",
                "p99", "max");
  out << line;
  for (const char* name : {"wait_ms", "latency_ms"}) {
    const Json& h = r[name];
    std::snprintf(line, sizeof line, "  %-12s %12s %10s %10s %10s %10s\n",
                  name == std::string("wait_ms") ? "wait" : "latency",
                  with_ci(r, std::string(name) + ".mean", h["mean"].get<double>()).c_str(),
                  number(h["p50"].get<double>()).c_str(), number(h["p95"].get<double>()).c_str(),
                  number(h["p99"].get<double>()).c_str(), number(h["max"].get<double>()).c_str());
    out << line;
  }
  const Json& k = r["connections"];
  out << "\n  connections  opened " << count(k["opened"].get<std::uint64_t>()) << " ("
      << with_ci(r, "connections.opened_per_s", k["opened_per_s"].get<double>(), 2)
      << "/s), closed " << count(k["closed"].get<std::uint64_t>()) << ", peak "
      << number(k["peak"].get<double>(), 0) << ", mean open "
      << with_ci(r, "connections.mean_open", k["mean_open"].get<double>(), 2) << ", mean in use "
      << with_ci(r, "connections.mean_in_use", k["mean_in_use"].get<double>(), 2)
      << "\n  at the server peak " << number(k["peak_server"].get<double>(), 0)
      << " of max_connections " << cfg("database.max_connections") << "\n";
  if (r.contains("ci95")) out << "\n  ± = 95% confidence half-width over the replications\n";
  return out.str();
}

}  // namespace poolsim::sim
