// poolsim._core: the C++ simulator, analytic models, sizing and real pool for the Python
// package. Every function takes the scenario as the command line does (a file, then options that
// override it), runs the same library code as `poolsim`, and returns its JSON result as text
// (the Python side wraps it). The GIL is released while C++ runs, so Python threads run
// simulations in parallel. Bad input raises ValueError with the command line's message.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sim/exact.hpp"
#include "sim/model.hpp"
#include "sim/result.hpp"
#include "sim/scenario.hpp"
#include "sim/scenario_file.hpp"
#include "sim/sizing.hpp"
#include "sim/units.hpp"
#include "sim/workload.hpp"

#ifdef POOLSIM_WITH_LIBPQ
#include "real_pool/live.hpp"
#include "real_pool/test_server.hpp"
#endif

namespace py = pybind11;

namespace poolsim::bindings {
namespace {

using Options = std::map<std::string, std::string>;

// The scenario of a call: the file's options (if any), overridden by `options`.
sim::Scenario scenario_of(const std::optional<std::filesystem::path>& file,
                          const Options& options) {
  for (const auto& [key, value] : options) {
    bool known = false;
    for (const sim::OptionInfo& o : sim::kOptions) known = known || key == o.key;
    if (!known) {
      throw sim::ScenarioError(key + " = " + value +
                               ": unknown option (see poolsim.options() for the keys)");
    }
  }
  std::filesystem::path base_dir;
  const Options values = sim::scenario_values(file, options, &base_dir);
  return sim::make_scenario(values, base_dir);
}

// A vector's data as a numpy array that keeps `owner` (the Samples) alive: no copy.
template <typename T>
py::array_t<T> view(const std::vector<T>& data, const py::capsule& owner) {
  return py::array_t<T>({static_cast<py::ssize_t>(data.size())}, {sizeof(T)}, data.data(), owner);
}

py::dict samples_dict(std::unique_ptr<sim::Samples> samples) {
  const sim::Samples& s = *samples;
  py::capsule owner(samples.release(), [](void* p) { delete static_cast<sim::Samples*>(p); });
  py::dict out;
  out["arrival_s"] = view(s.arrival_s, owner);
  out["wait_ms"] = view(s.wait_ms, owner);
  out["latency_ms"] = view(s.latency_ms, owner);
  out["outcome"] = view(s.outcome, owner);
  out["replication"] = view(s.replication, owner);
  out["process"] = view(s.process, owner);
  return out;
}

py::tuple simulate(const std::optional<std::filesystem::path>& file, const Options& options,
                   bool samples) {
  const sim::Scenario scenario = scenario_of(file, options);
  std::unique_ptr<sim::Samples> kept = samples ? std::make_unique<sim::Samples>() : nullptr;
  std::string json;
  {
    py::gil_scoped_release release;
    json = sim::simulate(scenario, {}, kept.get()).dump();
  }
  if (!kept) return py::make_tuple(json, py::none());
  return py::make_tuple(json, samples_dict(std::move(kept)));
}

std::string analytic(const std::optional<std::filesystem::path>& file, const Options& options) {
  const sim::Scenario scenario = scenario_of(file, options);
  py::gil_scoped_release release;
  return sim::analytic_result(scenario).dump();
}

py::tuple size(const std::optional<std::filesystem::path>& file, const Options& options,
               const std::vector<std::string>& targets, const std::string& max_size,
               const std::optional<std::string>& overflow) {
  if (targets.empty())
    throw sim::ScenarioError("targets: at least one target KEY<=VALUE is required");
  std::vector<sim::Target> parsed;
  for (const std::string& t : targets) parsed.push_back(sim::parse_target(t));
  const int largest = sim::parse_max_size("max_size", max_size);
  const sim::Scenario base = scenario_of(file, options);
  const std::vector<int> overflows = overflow ? sim::parse_overflow_list("overflow", *overflow)
                                              : std::vector<int>{base.pool.max_overflow};
  sim::SizeAnswer answer;
  {
    py::gil_scoped_release release;
    answer = sim::size_pool(base, parsed, largest, overflows);
  }
  return py::make_tuple(sim::size_json(answer, parsed).dump(), sim::size_table(answer, parsed));
}

// The open-loop schedule of one replication: arrival times and hold times in seconds.
py::tuple schedule(const std::optional<std::filesystem::path>& file, const Options& options,
                   int replication) {
  const sim::Scenario scenario = scenario_of(file, options);
  if (scenario.arrival == sim::Arrival::kClosed) {
    throw sim::ScenarioError(
        "workload.arrival = closed: a closed loop has no schedule (its clients react to the "
        "pool); use poisson, constant, onoff, diurnal or trace");
  }
  std::vector<double> at, hold;
  {
    py::gil_scoped_release release;
    sim::Workload workload(scenario, replication);
    while (const auto r = workload.next()) {
      at.push_back(1e-9 * static_cast<double>(r->at.time_since_epoch().count()));
      hold.push_back(1e-9 * static_cast<double>(r->hold.count()));
    }
  }
  return py::make_tuple(py::array_t<double>(static_cast<py::ssize_t>(at.size()), at.data()),
                        py::array_t<double>(static_cast<py::ssize_t>(hold.size()), hold.data()));
}

std::string table(const std::string& json) { return sim::render_table(sim::Json::parse(json)); }

py::list options() {
  py::list out;
  for (const sim::OptionInfo& o : sim::kOptions) {
    out.append(py::make_tuple(o.key, o.default_value, o.help));
  }
  return out;
}

#ifdef POOLSIM_WITH_LIBPQ
// Live-run failures, with the password masked: what the run cannot do or reach (LiveError, such
// as an unreachable server) is ValueError, a database that fails during the run RuntimeError.
template <typename F>
auto masked(F&& run) {
  try {
    return run();
  } catch (const real_pool::LiveError& e) {
    throw py::value_error(real_pool::mask_password(e.what()));
  } catch (const sim::ScenarioError&) {
    throw;
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(real_pool::mask_password(e.what()));
  }
}

std::string live(const std::optional<std::filesystem::path>& file, const Options& options,
                 const std::string& dsn, const std::string& sql) {
  const sim::Scenario scenario = scenario_of(file, options);
  return masked([&] {
    py::gil_scoped_release release;
    return real_pool::run_live(scenario, {dsn, sql}).dump();
  });
}

// live_runner: None for the real pool, or a Python callable taking the scenario's options
// (a dict of key -> text) and returning a live result as JSON text.
py::tuple validate(const std::optional<std::filesystem::path>& file, const Options& options,
                   const std::string& dsn, const std::string& sql, bool calibrate_first,
                   const std::optional<py::function>& live_runner) {
  const sim::Scenario scenario = scenario_of(file, options);
  real_pool::LiveRunner runner;
  if (live_runner) {
    runner = [&live_runner](const sim::Scenario& s, const sim::Progress&) {
      py::gil_scoped_acquire acquire;
      py::dict echo;
      for (const auto& [key, value] : s.rerun_options()) echo[py::str(key)] = value;
      return sim::Json::parse((*live_runner)(echo).cast<std::string>());
    };
  }
  return masked([&] {
    sim::Json report;
    {
      py::gil_scoped_release release;
      report = real_pool::validate(scenario, {dsn, sql}, calibrate_first, {}, runner);
    }
    return py::make_tuple(report.dump(), real_pool::validate_table(report));
  });
}

// The result schema of a live run measured outside C++ (poolsim.sqlalchemy_live): per-request
// outcomes (Samples::Outcome codes), waits and latencies of the requests in the window, and the
// connection levels the caller sampled. The same aggregation as poolsim live.
std::string live_result(const std::optional<std::filesystem::path>& file, const Options& options,
                        const py::array_t<std::int8_t, py::array::c_style>& outcome,
                        const py::array_t<double, py::array::c_style>& wait_ms,
                        const py::array_t<double, py::array::c_style>& latency_ms,
                        const std::map<std::string, double>& levels, double wall_s) {
  const sim::Scenario scenario = scenario_of(file, options);
  const py::ssize_t n = outcome.size();
  if (wait_ms.size() != n || latency_ms.size() != n) {
    throw py::value_error("outcome, wait_ms and latency_ms must have the same length");
  }
  sim::ReplicationStats stats;
  const auto* kind = outcome.data();
  const auto* wait = wait_ms.data();
  const auto* latency = latency_ms.data();
  const double no_wait_ms = 1e-3 * static_cast<double>(real_pool::kLiveNoWait.count());
  for (py::ssize_t i = 0; i < n; ++i) {
    ++stats.requests;
    if (!(wait[i] >= 0)) throw py::value_error("wait_ms: negative or NaN");
    stats.wait.add(static_cast<std::int64_t>(wait[i] * 1e6));
    if (wait[i] > no_wait_ms) ++stats.waited;
    switch (kind[i]) {
      case sim::Samples::kCompleted:
        ++stats.completed;
        stats.latency.add(static_cast<std::int64_t>(latency[i] * 1e6));
        break;
      case sim::Samples::kTimeout: ++stats.timeouts; break;
      case sim::Samples::kConnectFailed: ++stats.connect_failed; break;
      case sim::Samples::kTooManyConnections: ++stats.too_many_connections; break;
      case sim::Samples::kDisconnect: ++stats.disconnect; break;
      default: throw py::value_error("outcome: " + std::to_string(kind[i]) + " is not 0 to 4");
    }
  }
  auto level = [&levels](const char* key) {
    const auto found = levels.find(key);
    if (found == levels.end()) throw py::value_error(std::string("levels: ") + key + " is missing");
    return found->second;
  };
  stats.opened = static_cast<std::uint64_t>(level("opened"));
  stats.closed = static_cast<std::uint64_t>(level("closed"));
  stats.peak_open = level("peak_open");
  stats.mean_open = level("mean_open");
  stats.mean_in_use = level("mean_in_use");
  stats.peak_server = level("peak_server");
  stats.sim_time_s = 1e-9 * static_cast<double>(scenario.duration.count());
  sim::Json result = sim::simulation_result(scenario, {stats}, wall_s);
  result["mode"] = "live";
  result.erase("events");
  return result.dump();
}

py::tuple calibrate(const std::string& dsn, int samples) {
  if (samples < 5 || samples > 100000) {
    throw py::value_error("samples = " + std::to_string(samples) + ": must be 5 to 100000");
  }
  return masked([&] {
    real_pool::Calibration c;
    {
      py::gil_scoped_release release;
      c = real_pool::calibrate(dsn, samples);
    }
    return py::make_tuple(c.json.dump(), c.ini);
  });
}
#endif

}  // namespace
}  // namespace poolsim::bindings

PYBIND11_MODULE(_core, m) {
  using namespace poolsim;
  using namespace poolsim::bindings;
  m.doc() = "poolsim's C++ core; use the poolsim package, not this module.";
  m.attr("__version__") = sim::kVersion;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const sim::ScenarioError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const sim::NotExact& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  const auto file = py::arg("file") = py::none();
  m.def("options", &options, "(key, default, help) of every scenario option, in table order");
  m.def(
      "check",
      [](const std::optional<std::filesystem::path>& f, const Options& o) { scenario_of(f, o); },
      file, py::arg("options"), "raises ValueError unless the scenario is valid");
  m.def(
      "config",
      [](const std::optional<std::filesystem::path>& f, const Options& o) {
        std::map<std::string, std::string> echo;
        for (const auto& [key, value] : scenario_of(f, o).echo) echo[key] = value;
        return echo;
      },
      file, py::arg("options"), "every option's text after defaults (a result's config block)");
  m.def(
      "parse_seconds",
      [](const std::string& text) {
        try {
          return 1e-9 * static_cast<double>(sim::parse_duration(text).count());
        } catch (const sim::ParseError& e) {
          throw py::value_error(text + ": " + e.what());
        }
      },
      py::arg("text"), "a duration with its unit (250ms, 1.5s) in seconds");
  m.def("simulate", &simulate, file, py::arg("options"), py::arg("samples") = false);
  m.def("analytic", &analytic, file, py::arg("options"));
  m.def("size", &size, file, py::arg("options"), py::arg("targets"), py::arg("max_size"),
        py::arg("overflow") = py::none());
  m.def("schedule", &schedule, file, py::arg("options"), py::arg("replication") = 0);
  m.def("table", &table, py::arg("json"), "the human table of a sim or live result");
#ifdef POOLSIM_WITH_LIBPQ
  m.attr("with_libpq") = true;
  m.def("check_dsn", [](const std::string& dsn) { masked([&] { real_pool::check_dsn(dsn); }); },
        py::arg("dsn"), "raises ValueError unless dsn can name a database");
  m.def("live", &live, file, py::arg("options"), py::arg("dsn"), py::arg("sql"));
  m.def("validate", &bindings::validate, file, py::arg("options"), py::arg("dsn"), py::arg("sql"),
        py::arg("calibrate"), py::arg("live_runner") = py::none());
  m.def("live_result", &live_result, file, py::arg("options"), py::arg("outcome"),
        py::arg("wait_ms"), py::arg("latency_ms"), py::arg("levels"), py::arg("wall_s"));
  m.def("calibrate", &calibrate, py::arg("dsn"), py::arg("samples") = 50);
  m.def("mask_password", &real_pool::mask_password, py::arg("conninfo"));
  py::class_<real_pool::TestServer>(m, "TestServer")
      .def(py::init([] {
        py::gil_scoped_release release;
        return std::make_unique<real_pool::TestServer>();
      }))
      .def_property_readonly("dsn", &real_pool::TestServer::dsn)
      .def_property_readonly("port", &real_pool::TestServer::port)
      .def_property_readonly("directory",
                             [](const real_pool::TestServer& s) { return s.directory().string(); })
      .def("stop", &real_pool::TestServer::stop, py::call_guard<py::gil_scoped_release>())
      .def("start", &real_pool::TestServer::start, py::call_guard<py::gil_scoped_release>())
      .def("restart", &real_pool::TestServer::restart, py::call_guard<py::gil_scoped_release>())
      .def("set_parameter", &real_pool::TestServer::set_parameter,
           py::call_guard<py::gil_scoped_release>())
      .def("connections", &real_pool::TestServer::connections)
      .def("terminate_backends", &real_pool::TestServer::terminate_backends,
           py::call_guard<py::gil_scoped_release>());
#else
  m.attr("with_libpq") = false;
#endif
}
