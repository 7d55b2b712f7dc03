// The `poolsim` command line.
//
//   poolsim simulate [SCENARIO.ini] [--section.key=value ...] [--format table|json|csv] [--output
//   FILE] poolsim sweep SCENARIO.ini --grid KEY=V1,V2,... --grid KEY=START:STOP:STEP [--jobs N] ...
//
// Options come from a scenario file (INI, Boost.Program_options config syntax) and the command
// line, which wins. Bad input gets one line on stderr naming the key, the value and what is
// allowed, exit status 2, and no output file.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sim/exact.hpp"
#include "sim/result.hpp"
#include "sim/scenario.hpp"
#include "sim/scenario_file.hpp"
#include "sim/sizing.hpp"
#include "sim/units.hpp"

#ifdef POOLSIM_WITH_LIBPQ
#include <sys/wait.h>

#include <cstdlib>
#include <memory>

#include "real_pool/live.hpp"
#include "real_pool/test_server.hpp"
#endif

namespace po = boost::program_options;

namespace poolsim::sim {
namespace {

// Error lines may quote bytes from a user's file: never send control characters to a terminal.
std::string printable(const std::string& text) {
  std::string out;
  for (unsigned char ch : text) {
    if (ch < 0x20 || ch == 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", ch);
      out += escaped;
    } else {
      out += static_cast<char>(ch);
    }
  }
  return out;
}

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr const char* kCommands =
    "poolsim: a discrete-event simulator of database connection pools (SQLAlchemy QueuePool)\n\n"
    "usage:\n"
    "  poolsim simulate [SCENARIO.ini] [--KEY=VALUE ...] [--format table|json|csv] [--output "
    "FILE]\n"
    "      run the model; without a scenario file, the default Flask-SQLAlchemy pool\n"
    "      (5 + 10 overflow, 30 s timeout) under the defaults below\n"
    "  poolsim sweep SCENARIO.ini --grid KEY=V1,V2,... [--grid KEY=START:STOP:STEP ...] [--jobs "
    "N]\n"
    "      run every combination of the grid, in parallel, one row per point\n"
    "  poolsim analytic [SCENARIO.ini] [--KEY=VALUE ...]\n"
    "      exact steady-state results (Erlang-type models) where the scenario is Markovian\n"
    "  poolsim size [SCENARIO.ini] --target KEY<=VALUE ...\n"
    "      the smallest pool.size that meets every target\n"
#ifdef POOLSIM_WITH_LIBPQ
    "  poolsim live SCENARIO.ini [--dsn DSN|auto] [--sql SQL]\n"
    "      run the workload in real time through the real pool against PostgreSQL\n"
    "  poolsim calibrate [--dsn DSN|auto]\n"
    "      measure the server's connect, ping, reset and statement costs ([database] section)\n"
    "  poolsim validate SCENARIO.ini [--dsn DSN|auto] [--calibrate] [--against poolsim|sqlalchemy]\n"
    "      run live, then simulate the same workload, and compare them metric by metric\n"
#endif
    "  poolsim COMMAND --help    the options of a command\n";

po::options_description scenario_options() {
  po::options_description options(
      "Scenario options (file: [section] key = value; command line: --section.key=value)", 160, 80);
  for (const OptionInfo& o : kOptions) {
    std::string help = o.help;
    help += std::string(" [default: ") + (*o.default_value ? o.default_value : "none") + "]";
    options.add_options()(o.key, po::value<std::string>()->value_name("V"), help.c_str());
  }
  return options;
}

po::options_description output_options() {
  po::options_description options("Output", 160, 80);
  options.add_options()("help,h", "this help")("format", po::value<std::string>()->value_name("F"),
                                               "table, json or csv [default: table]")(
      "output,o", po::value<std::string>()->value_name("FILE"),
      "write the result to FILE instead of standard output")(
      "no-progress", "no progress bar (there is none anyway unless stderr is a terminal)");
  return options;
}

po::options_description sweep_options() {
  po::options_description options("Sweep", 160, 80);
  options.add_options()("grid", po::value<std::vector<std::string>>()->value_name("KEY=VALUES"),
                        "a scenario option and its values: v1,v2,... or START:STOP:STEP (numbers, "
                        "STOP included); repeat for more dimensions")(
      "jobs,j", po::value<std::string>()->value_name("N"),
      "points run at once [default: the number of cores]");
  return options;
}

std::string format_of(const po::variables_map& vm) {
  const std::string format = vm.count("format") ? vm["format"].as<std::string>() : "table";
  if (format != "table" && format != "json" && format != "csv") {
    throw UsageError("--format = " + format + ": must be table, json or csv");
  }
  return format;
}

// Writes all of `text` to FILE (through a temporary file, so a failed run leaves nothing
// half-written) or to standard output.
void emit(const po::variables_map& vm, const std::string& text) {
  if (!vm.count("output")) {
    std::cout << text << std::flush;
    return;
  }
  const std::filesystem::path path = vm["output"].as<std::string>();
  const std::filesystem::path temp = path.string() + ".part";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) {
      std::error_code ignored;
      std::filesystem::remove(temp, ignored);
      throw UsageError("--output = " + path.string() + ": cannot write the file");
    }
  }
  std::error_code error;
  std::filesystem::rename(temp, path, error);
  if (error) {
    std::filesystem::remove(temp, error);
    throw UsageError("--output = " + path.string() + ": cannot write the file");
  }
}

// Scenario values: the file's, overridden by the command line's.
std::map<std::string, std::string> command_values(const po::variables_map& vm,
                                                  const std::string& file,
                                                  std::filesystem::path* base_dir) {
  std::map<std::string, std::string> overrides;
  for (const OptionInfo& o : kOptions) {
    if (vm.count(o.key)) overrides[o.key] = vm[o.key].as<std::string>();
  }
  return scenario_values(file.empty() ? std::nullopt : std::optional<std::filesystem::path>(file),
                         overrides, base_dir);
}

// Parses a command's arguments; for --help prints `usage` and the options and returns nullopt.
std::optional<po::variables_map> parse_command(const std::vector<std::string>& args,
                                               const po::options_description& options,
                                               int max_files, std::vector<std::string>* files,
                                               const std::string& usage) {
  po::options_description all;
  all.add(options);
  all.add_options()("scenario-file", po::value<std::vector<std::string>>(), "");
  po::positional_options_description positional;
  positional.add("scenario-file", -1);
  po::variables_map vm;
  try {
    const po::parsed_options parsed =
        po::command_line_parser(args).options(all).positional(positional).run();
    // `--pool.size --format json` would take "--format" as the size: an option's value that is
    // itself one of the options means the value was left out.
    for (const po::option& o : parsed.options) {
      if (o.value.size() != 1 || o.value.front().rfind("--", 0) != 0) continue;
      const std::string next = o.value.front().substr(2, o.value.front().find('=') - 2);
      if (all.find_nothrow(next, false)) {
        throw UsageError("--" + o.string_key + ": no value given (the next argument is --" + next +
                         ")");
      }
    }
    po::store(parsed, vm);
  } catch (const po::unknown_option& e) {
    throw UsageError(e.get_option_name() + ": unknown option (see --help)");
  } catch (const po::multiple_occurrences& e) {
    throw UsageError(e.get_option_name() + " is given twice");
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  if (vm.count("scenario-file")) *files = vm["scenario-file"].as<std::vector<std::string>>();
  if (static_cast<int>(files->size()) > max_files) {
    throw UsageError(max_files == 0 ? files->front() + ": this command takes no scenario file"
                                    : "one scenario file only (got " + files->front() + " and " +
                                          (*files)[1] + ")");
  }
  if (vm.count("help")) {
    std::cout << usage << "\n" << options << "\n";
    return std::nullopt;
  }
  return vm;
}

// The scenario a command runs: its file (if any) overridden by the command line.
Scenario scenario_of(const po::variables_map& vm, const std::vector<std::string>& files) {
  std::filesystem::path base_dir;
  const auto values = command_values(vm, files.empty() ? "" : files.front(), &base_dir);
  return make_scenario(values, base_dir);
}

// A progress bar on stderr, only when stderr is a terminal; at most ten updates a second.
class ProgressBar {
 public:
  explicit ProgressBar(bool wanted) : on_(wanted && isatty(STDERR_FILENO)) {}
  ~ProgressBar() {
    if (on_ && drawn_) std::fprintf(stderr, "\r%60s\r", "");
  }
  void update(double fraction) {
    if (!on_) return;
    std::lock_guard<std::mutex> lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (drawn_ && now - last_ < std::chrono::milliseconds(100) && fraction < 1) return;
    last_ = now;
    drawn_ = true;
    const int width = 40;
    const int filled = static_cast<int>(fraction * width);
    std::fprintf(stderr, "\r[%.*s%*s] %3d%%", filled, "########################################",
                 width - filled, "", static_cast<int>(fraction * 100));
    std::fflush(stderr);
  }

 private:
  bool on_;
  bool drawn_ = false;
  std::mutex mutex_;
  std::chrono::steady_clock::time_point last_{};
};

std::string csv(const std::vector<Json>& rows) {
  std::vector<std::string> keys;
  std::set<std::string> seen;
  std::vector<std::map<std::string, std::string>> flat;
  for (const Json& row : rows) {
    std::map<std::string, std::string> fields;
    for (const auto& [key, value] : flatten(row)) {
      if (seen.insert(key).second) keys.push_back(key);
      fields[key] = value;
    }
    flat.push_back(std::move(fields));
  }
  std::ostringstream out;
  for (std::size_t i = 0; i < keys.size(); ++i) out << (i ? "," : "") << csv_escape(keys[i]);
  out << "\n";
  for (const auto& fields : flat) {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      const auto it = fields.find(keys[i]);
      out << (i ? "," : "") << (it == fields.end() ? "" : csv_escape(it->second));
    }
    out << "\n";
  }
  return out.str();
}

// A result in the asked format: JSON as it is, CSV as one flattened row, or the command's table.
void emit_result(const po::variables_map& vm, const std::string& format, const Json& result,
                 std::string (*table)(const Json&)) {
  if (format == "json") {
    emit(vm, result.dump(1) + "\n");
  } else if (format == "csv") {
    emit(vm, csv({result}));
  } else {
    emit(vm, table(result));
  }
}

int simulate_command(const std::vector<std::string>& args) {
  po::options_description options(160, 80);
  options.add(output_options()).add(scenario_options());
  std::vector<std::string> files;
  const auto parsed = parse_command(
      args, options, 1, &files,
      "usage: poolsim simulate [SCENARIO.ini] [--KEY=VALUE ...] [--format table|json|csv] "
      "[--output FILE]\n\nRuns the model and prints the result. Durations take units "
      "(250us, 30ms, 1.5s, 10min, 2h);\nrates are per second; distributions are const:D, "
      "exp:MEAN, uniform:LOW,HIGH,\nlognormal:mean=M,cv=C or empirical:FILE.csv.\n\n");
  if (!parsed) return 0;
  const po::variables_map& vm = *parsed;
  const std::string format = format_of(vm);
  const Scenario scenario = scenario_of(vm, files);
  Json result;
  {
    ProgressBar bar(!vm.count("no-progress"));
    result = simulate(scenario, [&bar](double f) { bar.update(f); });
  }
  emit_result(vm, format, result, render_table);
  return 0;
}

struct Grid {
  std::string key;
  std::vector<std::string> values;
};

Grid parse_grid(const std::string& text) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw UsageError("--grid = " + text + ": must be KEY=V1,V2,... or KEY=START:STOP:STEP");
  }
  Grid grid{text.substr(0, eq), {}};
  const bool known = std::any_of(kOptions.begin(), kOptions.end(),
                                 [&](const OptionInfo& o) { return grid.key == o.key; });
  if (!known)
    throw UsageError("--grid = " + text + ": " + grid.key +
                     " is not a scenario option (see poolsim --help)");
  const std::string spec = text.substr(eq + 1);
  if (spec.find(':') != std::string::npos && spec.find(',') == std::string::npos &&
      spec.find("const:") == std::string::npos && spec.find("exp:") == std::string::npos &&
      spec.find("uniform:") == std::string::npos && spec.find("lognormal:") == std::string::npos &&
      spec.find("empirical:") == std::string::npos) {
    std::vector<double> parts;
    std::stringstream in(spec);
    std::string part;
    try {
      while (std::getline(in, part, ':')) parts.push_back(parse_number(part));
    } catch (const ParseError& e) {
      throw UsageError("--grid = " + text + ": START:STOP:STEP " + e.what());
    }
    if (parts.size() != 3 || !(parts[2] > 0) || parts[1] < parts[0]) {
      throw UsageError("--grid = " + text + ": START:STOP:STEP needs STOP >= START and STEP > 0");
    }
    const double n = std::floor((parts[1] - parts[0]) / parts[2] + 1e-9) + 1;
    if (n > 100000) throw UsageError("--grid = " + text + ": more than 100000 values");
    for (int i = 0; i < static_cast<int>(n); ++i) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.12g", parts[0] + i * parts[2]);
      grid.values.emplace_back(buf);
    }
  } else {
    std::stringstream in(spec);
    std::string part;
    while (std::getline(in, part, ',')) {
      if (!grid.values.empty() && grid.values.back().rfind("uniform:", 0) == 0 &&
          grid.values.back().find(',') == std::string::npos) {
        grid.values.back() += "," + part;  // uniform:LOW,HIGH keeps its comma
        continue;
      }
      grid.values.push_back(part);
    }
  }
  if (grid.values.empty() || std::any_of(grid.values.begin(), grid.values.end(),
                                         [](const std::string& v) { return v.empty(); })) {
    throw UsageError("--grid = " + text + ": empty value");
  }
  return grid;
}

int sweep_command(const std::vector<std::string>& args) {
  po::options_description options(160, 80);
  options.add(sweep_options()).add(output_options()).add(scenario_options());
  std::vector<std::string> files;
  const auto parsed =
      parse_command(args, options, 1, &files,
                    "usage: poolsim sweep [SCENARIO.ini] --grid KEY=V1,V2,... [--grid "
                    "KEY=START:STOP:STEP ...] [--jobs N]\n\nRuns every combination of the grid "
                    "values (the first --grid varies slowest), one row per point.\n\n");
  if (!parsed) return 0;
  const po::variables_map& vm = *parsed;
  const std::string format = format_of(vm);
  if (!vm.count("grid")) throw UsageError("--grid: at least one --grid KEY=VALUES is required");
  std::vector<Grid> grids;
  for (const std::string& g : vm["grid"].as<std::vector<std::string>>()) {
    grids.push_back(parse_grid(g));
    for (std::size_t i = 0; i + 1 < grids.size(); ++i) {
      if (grids[i].key == grids.back().key)
        throw UsageError("--grid: " + grids.back().key + " is given twice");
    }
  }
  unsigned jobs = std::max(1u, std::thread::hardware_concurrency());
  if (vm.count("jobs")) {
    std::int64_t n = 0;
    try {
      n = parse_integer(vm["jobs"].as<std::string>());
    } catch (const ParseError& e) {
      throw UsageError("--jobs = " + vm["jobs"].as<std::string>() + ": " + e.what());
    }
    if (n < 1 || n > 1024)
      throw UsageError("--jobs = " + std::to_string(n) + ": must be 1 to 1024");
    jobs = static_cast<unsigned>(n);
  }

  std::filesystem::path base_dir;
  const auto base = command_values(vm, files.empty() ? "" : files.front(), &base_dir);
  std::size_t points = 1;
  for (const Grid& g : grids) {
    points *= g.values.size();
    if (points > 1'000'000) throw UsageError("--grid: more than 1000000 points");
  }
  // Every point is checked before any runs.
  std::vector<Scenario> scenarios;
  std::vector<std::vector<std::string>> coordinates;
  for (std::size_t i = 0; i < points; ++i) {
    auto values = base;
    std::vector<std::string> coordinate;
    std::size_t rest = i;
    for (std::size_t d = grids.size(); d-- > 0;) {
      const std::string& v = grids[d].values[rest % grids[d].values.size()];
      rest /= grids[d].values.size();
      values[grids[d].key] = v;
      coordinate.insert(coordinate.begin(), v);
    }
    scenarios.push_back(make_scenario(values, base_dir));
    coordinates.push_back(coordinate);
  }

  std::vector<Json> results(points);
  std::atomic<std::size_t> next{0}, done{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  {
    ProgressBar bar(!vm.count("no-progress"));
    auto worker = [&] {
      for (std::size_t i; (i = next++) < points;) {
        try {
          results[i] = simulate(scenarios[i]);
        } catch (...) {
          std::lock_guard<std::mutex> lock(failure_mutex);
          if (!failure) failure = std::current_exception();
        }
        bar.update(static_cast<double>(++done) / static_cast<double>(points));
      }
    };
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < std::min<std::size_t>(jobs, points); ++t) threads.emplace_back(worker);
    for (std::thread& t : threads) t.join();
  }
  if (failure) std::rethrow_exception(failure);

  if (format == "json") {
    Json rows = Json::array();
    for (std::size_t i = 0; i < points; ++i) {
      Json point = Json::object();
      for (std::size_t d = 0; d < grids.size(); ++d) point[grids[d].key] = coordinates[i][d];
      rows.push_back(Json{{"point", point}, {"result", results[i]}});
    }
    emit(vm, rows.dump(1) + "\n");
  } else if (format == "csv") {
    emit(vm, csv(results));
  } else {
    std::ostringstream out;
    char buf[256];
    for (const Grid& g : grids) out << std::setw(18) << std::left << g.key;
    std::snprintf(buf, sizeof buf, "%10s %8s %10s %10s %9s %9s %8s %8s\n", "requests", "p_wait",
                  "wait p99", "lat p99", "timeouts", "errors", "opened/s", "peak db");
    out << buf;
    for (std::size_t i = 0; i < points; ++i) {
      const Json& r = results[i];
      for (const std::string& c : coordinates[i]) out << std::setw(18) << std::left << c;
      const Json& e = r["errors"];
      std::snprintf(buf, sizeof buf, "%10llu %8.4f %10.3f %10.3f %9llu %9llu %8.2f %8.0f\n",
                    static_cast<unsigned long long>(r["requests"].get<std::uint64_t>()),
                    r["p_wait"].get<double>(), r["wait_ms"]["p99"].get<double>(),
                    r["latency_ms"]["p99"].get<double>(),
                    static_cast<unsigned long long>(r["timeouts"].get<std::uint64_t>()),
                    static_cast<unsigned long long>(e["connect_failed"].get<std::uint64_t>() +
                                                    e["too_many_connections"].get<std::uint64_t>() +
                                                    e["disconnect"].get<std::uint64_t>()),
                    r["connections"]["opened_per_s"].get<double>(),
                    r["connections"]["peak_server"].get<double>());
      out << buf;
    }
    out << "(wait and latency p99 in ms)\n";
    emit(vm, out.str());
  }
  return 0;
}

std::string analytic_table(const Json& r) {
  std::ostringstream out;
  const Json& c = r["config"];
  auto cfg = [&c](const char* key) {
    return c.contains(key) ? c[key].get<std::string>() : std::string("-");
  };
  out << "poolsim analytic: " << r["model"].get<std::string>() << ", exact\n"
      << "  pool " << cfg("pool.size") << " + " << cfg("pool.max_overflow") << " overflow, timeout "
      << cfg("pool.timeout") << ", " << cfg("app.processes") << " process(es), poisson "
      << cfg("workload.rate") << "/s, hold " << cfg("workload.service") << ", connect "
      << cfg("database.connect") << "\n\n";
  char line[160];
  std::snprintf(line, sizeof line, "  p_wait       %.6f   (share of requests that wait)\n",
                r["p_wait"].get<double>());
  out << line;
  std::snprintf(line, sizeof line,
                "  p_timeout    %.6f   (share that fail: timeout 0, or the wait ran out)\n",
                r["p_timeout"].get<double>());
  out << line;
  out << "  wait (ms)   ";
  for (const auto& item : r["wait_ms"].items()) {
    std::snprintf(line, sizeof line, " %s %.4f", item.key().c_str(), item.value().get<double>());
    out << line;
  }
  out << "\n  connections ";
  for (const auto& item : r["connections"].items()) {
    if (item.value().is_object()) continue;
    std::snprintf(line, sizeof line, " %s %.4f", item.key().c_str(), item.value().get<double>());
    out << line;
  }
  out << "\n";
  if (r["connections"].contains("server")) {
    const Json& sv = r["connections"]["server"];
    std::snprintf(
        line, sizeof line,
        "  at the server: mean %.3f, p99 %d, max %d connections (of max_connections %s)\n",
        sv["mean"].get<double>(), sv["p99"].get<int>(), sv["max"].get<int>(),
        cfg("database.max_connections").c_str());
    out << line;
  }
  std::snprintf(line, sizeof line, "  truncation error %.3g", r["truncation_error"].get<double>());
  out << line << (r.contains("ctmc_states") ? ", " + r["ctmc_states"].dump() + " CTMC states" : "")
      << "\n";
  return out.str();
}

int analytic_command(const std::vector<std::string>& args) {
  po::options_description options(160, 80);
  options.add(output_options()).add(scenario_options());
  std::vector<std::string> files;
  const auto parsed = parse_command(
      args, options, 1, &files,
      "usage: poolsim analytic [SCENARIO.ini] [--KEY=VALUE ...] [--format table|json|csv] "
      "[--output FILE]\n\nExact steady-state results where the scenario is Markovian: "
      "Poisson arrivals, exponential\nholds, instant or exponential connects, no reset or "
      "ping cost, no drops, recycle or outages.\nOtherwise it names the option that "
      "prevents an exact answer and exits 2.\n\n");
  if (!parsed) return 0;
  const po::variables_map& vm = *parsed;
  const std::string format = format_of(vm);
  Json result;
  try {
    result = analytic_result(scenario_of(vm, files));
  } catch (const NotExact& e) {
    throw UsageError(e.what());
  }
  emit_result(vm, format, result, analytic_table);
  return 0;
}

int size_command(const std::vector<std::string>& args) {
  po::options_description sizing("Sizing", 160, 80);
  sizing.add_options()("target,t", po::value<std::vector<std::string>>()->value_name("KEY<=VALUE"),
                       "a goal, e.g. p_wait<=0.05, wait_ms.p99<=50, timeouts<=0.001 (a fraction), "
                       "connections.peak_server<=90; repeat for more")(
      "max-size", po::value<std::string>()->value_name("N"),
      "largest pool.size to try [default: 200]")(
      "overflow", po::value<std::string>()->value_name("LIST"),
      "max_overflow values to size for, e.g. 0,5,10 [default: the scenario's]");
  po::options_description options(160, 80);
  options.add(sizing).add(output_options()).add(scenario_options());
  std::vector<std::string> files;
  const auto parsed = parse_command(
      args, options, 1, &files,
      "usage: poolsim size [SCENARIO.ini] --target KEY<=VALUE ... [--max-size N] "
      "[--overflow LIST]\n\nThe smallest pool.size that meets every target, and the "
      "curve it came from. Exact where\npoolsim analytic is; otherwise a search over "
      "simulations (10 replications per point, or\nthe scenario's replications if more), "
      "a point meeting a target when its 95% upper\nconfidence bound does.\n\n");
  if (!parsed) return 0;
  const po::variables_map& vm = *parsed;
  const std::string format = format_of(vm);
  if (!vm.count("target"))
    throw UsageError("--target: at least one --target KEY<=VALUE is required");
  std::vector<Target> targets;
  for (const std::string& t : vm["target"].as<std::vector<std::string>>())
    targets.push_back(parse_target(t));
  const int max_size =
      vm.count("max-size") ? parse_max_size("--max-size", vm["max-size"].as<std::string>()) : 200;
  const Scenario base = scenario_of(vm, files);
  const std::vector<int> overflows =
      vm.count("overflow") ? parse_overflow_list("--overflow", vm["overflow"].as<std::string>())
                           : std::vector<int>{base.pool.max_overflow};
  SizeAnswer answer;
  {
    ProgressBar bar(!vm.count("no-progress"));
    answer = size_pool(base, targets, max_size, overflows, [&bar](double f) { bar.update(f); });
  }
  if (format == "json") {
    emit(vm, size_json(answer, targets).dump(1) + "\n");
  } else if (format == "csv") {
    emit(vm, size_csv(answer, targets));
  } else {
    emit(vm, size_table(answer, targets));
  }
  return 0;
}

#ifdef POOLSIM_WITH_LIBPQ
po::options_description live_options() {
  po::options_description options("Live run", 160, 80);
  options.add_options()("dsn", po::value<std::string>()->value_name("DSN"),
                        "libpq connection string or URI; auto = start a throw-away PostgreSQL "
                        "for the run [default: auto]")(
      "sql", po::value<std::string>()->value_name("SQL"),
      "what each request runs, $1 = its hold in seconds [default: SELECT pg_sleep($1)]")(
      "calibrate",
      "validate: measure the server's connect, ping and reset costs first and "
      "simulate with them")(
      "against", po::value<std::string>()->value_name("POOL"),
      "validate: the live pool, poolsim (the real pool on libpq) or sqlalchemy (a real "
      "SQLAlchemy engine, QueuePool + psycopg2, through poolsim's Python package) "
      "[default: poolsim]");
  return options;
}

// The live side of `validate --against sqlalchemy`: poolsim's Python package, built next to
// this binary (build/python), drives the workload through a real SQLAlchemy engine. The DSN
// and SQL go through the environment, not the command line (ps would show the password).
Json sqlalchemy_live(const Scenario& s, const std::string& dsn, const std::string& sql,
                     bool calibrate) {
  std::error_code error;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", error);
  const std::filesystem::path python_dir = exe.parent_path().parent_path() / "python";
  if (error || !std::filesystem::exists(python_dir / "poolsim" / "_validate_sqlalchemy.py")) {
    throw UsageError(
        "--against = sqlalchemy: poolsim's Python package is not built next to "
        "this binary (" +
        python_dir.string() + "); configure with -DPOOLSIM_BUILD_PYTHON=ON");
  }
  Json options = Json::object();
  for (const auto& [key, value] : s.rerun_options()) options[key] = value;
  char in_path[] = "/tmp/poolsim-sqlalchemy-XXXXXX";
  const int fd = mkstemp(in_path);
  if (fd < 0) throw std::runtime_error("cannot create a temporary file in /tmp");
  close(fd);
  const std::string err_path = std::string(in_path) + ".err";
  std::ofstream(in_path) << options.dump();
  const char* old_path = std::getenv("PYTHONPATH");
  setenv("PYTHONPATH",
         (python_dir.string() + (old_path && *old_path ? ":" + std::string(old_path) : "")).c_str(),
         1);
  setenv("POOLSIM_DSN", dsn.c_str(), 1);
  setenv("POOLSIM_SQL", sql.c_str(), 1);
  setenv("POOLSIM_CALIBRATE", calibrate ? "1" : "0", 1);
  const char* python = std::getenv("POOLSIM_PYTHON");
  const std::string command = std::string("'") + (python && *python ? python : "/usr/bin/python3") +
                              "' -m poolsim._validate_sqlalchemy < '" + in_path + "' 2> '" +
                              err_path + "'";
  std::string output;
  int status = -1;
  if (FILE* pipe = popen(command.c_str(), "r")) {
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) output.append(buf, n);
    status = pclose(pipe);
  }
  unsetenv("POOLSIM_DSN");
  std::string message;
  {
    std::ifstream err(err_path);
    std::getline(err, message);
  }
  std::filesystem::remove(in_path, error);
  std::filesystem::remove(err_path, error);
  if (message.rfind("poolsim: ", 0) == 0) message.erase(0, 9);
  if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) return Json::parse(output);
  if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 2) {
    throw real_pool::LiveError(message);
  }
  throw std::runtime_error("the SQLAlchemy live run failed: " +
                           (message.empty() ? "exit status " + std::to_string(status) : message));
}

real_pool::LiveOptions live_settings(const po::variables_map& vm) {
  real_pool::LiveOptions o;
  if (vm.count("dsn")) o.dsn = vm["dsn"].as<std::string>();
  if (vm.count("sql")) o.sql = vm["sql"].as<std::string>();
  try {
    real_pool::check_dsn(o.dsn);
  } catch (const real_pool::LiveError& e) {
    throw UsageError(e.what());
  }
  return o;
}

int live_command(const std::string& command, const std::vector<std::string>& args) {
  real_pool::TestServer::clean_up_on_signals();  // a Ctrl-C must not leave a --dsn auto server
  po::options_description options(160, 80);
  options.add(live_options()).add(output_options());
  if (command != "calibrate") options.add(scenario_options());
  std::vector<std::string> files;
  const auto parsed =
      parse_command(args, options, command == "calibrate" ? 0 : 1, &files, kCommands);
  if (!parsed) return 0;
  const po::variables_map& vm = *parsed;
  const std::string format = format_of(vm);
  const real_pool::LiveOptions settings = live_settings(vm);
  const std::string against = vm.count("against") ? vm["against"].as<std::string>() : "poolsim";
  if (against != "poolsim" && against != "sqlalchemy") {
    throw UsageError("--against = " + against + ": must be poolsim or sqlalchemy");
  }
  if (command != "validate" && vm.count("against")) {
    throw UsageError("--against: only poolsim validate takes it");
  }
  try {
    if (command == "calibrate") {
      const real_pool::Calibration c = real_pool::calibrate(settings.dsn);
      emit(vm, format == "json" ? c.json.dump(1) + "\n" : c.ini);
      return 0;
    }
    const Scenario scenario = scenario_of(vm, files);
    Json result;
    {
      ProgressBar bar(!vm.count("no-progress"));
      auto progress = [&bar](double f) { bar.update(f); };
      if (command == "live") {
        result = real_pool::run_live(scenario, settings, progress);
      } else if (against == "poolsim") {
        result = real_pool::validate(scenario, settings, vm.count("calibrate") > 0, progress);
      } else {
        std::unique_ptr<real_pool::TestServer> server;
        real_pool::LiveOptions on = settings;
        if (on.dsn == "auto") {
          server = std::make_unique<real_pool::TestServer>();
          on.dsn = server->dsn();
        }
        const bool calibrate = vm.count("calibrate") > 0;
        result = real_pool::validate(scenario, on, calibrate, progress,
                                     [&on, calibrate](const Scenario& s, const Progress&) {
                                       return sqlalchemy_live(s, on.dsn, on.sql, calibrate);
                                     });
      }
    }
    if (command == "live") {
      emit_result(vm, format, result, render_table);
    } else if (format == "csv") {
      emit(vm, csv({result["agreement"]}));
    } else {
      emit_result(vm, format, result, real_pool::validate_table);
    }
  } catch (const real_pool::LiveError& e) {
    throw UsageError(real_pool::mask_password(e.what()));
  } catch (const ScenarioError&) {
    throw;  // bad input, exit 2 as in every command
  } catch (const std::runtime_error& e) {
    // A database that fails under a live run is a result, but one that cannot be reached or
    // started is an error: report it without the password.
    std::cerr << "poolsim: " << printable(real_pool::mask_password(e.what())) << "\n";
    return 1;
  }
  return 0;
}
#endif


int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << kCommands;
    return 2;
  }
  const std::string command = args.front();
  args.erase(args.begin());
  try {
    if (command == "-h" || command == "--help" || command == "help") {
      po::options_description options(160, 80);
      options.add(scenario_options());
      std::cout << kCommands << "\n" << options << "\n";
      return 0;
    }
    if (command == "--version") {
      std::cout << "poolsim " << kVersion << "\n";
      return 0;
    }
    if (command == "simulate") return simulate_command(args);
    if (command == "sweep") return sweep_command(args);
    if (command == "analytic") return analytic_command(args);
    if (command == "size") return size_command(args);
#ifdef POOLSIM_WITH_LIBPQ
    if (command == "live" || command == "calibrate" || command == "validate") {
      return live_command(command, args);
    }
#endif
    throw UsageError("unknown command " + command +
                     " (commands: simulate, sweep, analytic, size, live, calibrate, validate; see "
                     "poolsim --help)");
  } catch (const UsageError& e) {
    std::cerr << "poolsim: " << printable(e.what()) << "\n";
  } catch (const ScenarioError& e) {
    std::cerr << "poolsim: " << printable(e.what()) << "\n";
  }
  return 2;
}

}  // namespace
}  // namespace poolsim::sim

int main(int argc, char** argv) { return poolsim::sim::run(argc, argv); }
