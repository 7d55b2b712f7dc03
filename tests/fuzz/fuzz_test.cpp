// Fuzz tests: 10^5 random inputs from a printed seed, run in-process (a process per input would
// be far too slow). None may crash, hang, break an invariant or fail other than in the way its
// contract documents.
//
//   fuzz.scenarios          random INI scenario files: valid keys with plausible and implausible
//                           values, unknown keys, sections, garbage bytes, trace and empirical
//                           CSV files. Each is refused with one ScenarioError line or gives a
//                           Scenario; a valid one then runs one replication, bounded to a few
//                           thousand requests, whose counts must add up.
//   fuzz.op_scripts         random driver scripts against PoolCore with edge-value configs: valid
//                           scripts (the driver checks what the core asks of it) and hostile ones
//                           (random ids, wrong states, time going backwards), where misuse must be
//                           refused with PoolCore's std::logic_error and change nothing.
//                           check_invariants() holds after every input.
//   fuzz.conformance_replay random and mutated JSON op scripts through the conformance replay
//                           (tests/pool_model/queuepool_conformance.cpp, linked in with its main()
//                           renamed): exit status 0 with a trace document, or 2 with one line.
//
// Environment:
//   POOLSIM_FUZZ_SEED   master seed (default: a fresh one each run, printed at the start)
//   POOLSIM_FUZZ_COUNT  inputs of the three tests together (default 100000; 50% scenarios,
//                       35% op scripts, 15% conformance replays)
//   POOLSIM_FUZZ_INPUT  run only this input number of each test (with the seed of a failure),
//                       printing op scripts as they run
//   POOLSIM_FUZZ_KEEP_GOING  report up to 20 failing inputs instead of stopping at the first
//
// A failure, a crash, a sanitizer report or an input running longer than kInputBudget prints
// the seed, the input number and the input (escaped). Every input derives its own random stream
// from (seed, test, input number), so POOLSIM_FUZZ_SEED + POOLSIM_FUZZ_INPUT rerun it alone.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <typeinfo>
#include <vector>

#include "pool_model/pool_core.hpp"
#include "sim/model.hpp"
#include "sim/result.hpp"
#include "sim/scenario.hpp"
#include "sim/scenario_file.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define POOLSIM_FUZZ_SANITIZED 1
#endif

// tests/fuzz/conformance_replay.cpp: the replay's main().
int queuepool_conformance_main(int argc, char** argv);

namespace poolsim {
namespace {

using namespace std::chrono_literals;

// Longer than any input takes, even under the sanitizers on a busy machine.
constexpr auto kInputBudget = 60s;
// The most of an input a report prints.
constexpr std::size_t kShownBytes = 64 * 1024;

// ---- settings and seeds ----------------------------------------------------------------------

enum class Part : std::uint64_t { kScenarios = 1, kOpScripts = 2, kConformance = 3 };

std::optional<std::uint64_t> env_number(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return std::nullopt;
  std::uint64_t value = 0;
  const char* end = text + std::strlen(text);
  const auto [ptr, ec] = std::from_chars(text, end, value);
  if (ec != std::errc() || ptr != end) {
    std::cerr << name << " = " << text << ": must be a whole number >= 0; ignored\n";
    return std::nullopt;
  }
  return value;
}

struct Settings {
  std::uint64_t seed = 0;
  std::uint64_t total = 100000;
  std::optional<std::uint64_t> only;
  bool keep_going = false;
};

const Settings& settings() {
  static const Settings s = [] {
    Settings out;
    // A fixed seed, so CI runs the same inputs every time and a failure reproduces; set
    // POOLSIM_FUZZ_SEED to explore other inputs.
    out.seed = env_number("POOLSIM_FUZZ_SEED").value_or(20261125);
    out.total = env_number("POOLSIM_FUZZ_COUNT").value_or(out.total);
    out.only = env_number("POOLSIM_FUZZ_INPUT");
    out.keep_going = env_number("POOLSIM_FUZZ_KEEP_GOING").value_or(0) != 0;
    return out;
  }();
  return s;
}

// This part's share of POOLSIM_FUZZ_COUNT; the three add up to it.
std::uint64_t count_of(Part part) {
  const std::uint64_t total = settings().total;
  const std::uint64_t scenarios = total / 2;
  const std::uint64_t op_scripts = total * 35 / 100;
  switch (part) {
    case Part::kScenarios: return scenarios;
    case Part::kOpScripts: return op_scripts;
    case Part::kConformance: return total - scenarios - op_scripts;
  }
  return 0;
}

std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::uint64_t input_seed(Part part, std::uint64_t index) {
  return splitmix(splitmix(settings().seed ^ splitmix(static_cast<std::uint64_t>(part))) ^ index);
}

class Rand {
 public:
  explicit Rand(std::uint64_t seed) : engine_(seed) {}
  std::uint64_t bits() { return engine_(); }
  std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(engine_() % n); }
  std::int64_t between(std::int64_t low, std::int64_t high) {
    return std::uniform_int_distribution<std::int64_t>(low, high)(engine_);
  }
  double unit() { return std::uniform_real_distribution<double>(0.0, 1.0)(engine_); }
  bool chance(double p) { return unit() < p; }
  const char* one_of(std::initializer_list<const char*> items) {
    return items.begin()[below(items.size())];
  }
  template <typename T>
  T one_of(std::initializer_list<T> items) {
    return items.begin()[below(items.size())];
  }
  template <std::size_t N>
  const char* one_of(const char* const (&items)[N]) {
    return items[below(N)];
  }
  std::mt19937_64& engine() { return engine_; }

 private:
  std::mt19937_64 engine_;
};

// ---- reports: failures, crashes, sanitizer errors, hangs ---------------------------------------

// Escapes bytes for a report: printable ASCII as is, "\n" followed by a real line break,
// everything else as \t, \r, \\ or \xNN. Calls out(data, size) in chunks, allocating nothing, so
// the crash handlers can use it.
template <typename Out>
void escape(std::string_view text, Out&& out) {
  char buf[512];
  std::size_t n = 0;
  const std::size_t shown = std::min(text.size(), kShownBytes);
  for (std::size_t i = 0; i < shown; ++i) {
    if (n + 8 > sizeof buf) {
      out(buf, n);
      n = 0;
    }
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      buf[n++] = '\\';
      buf[n++] = 'n';
      buf[n++] = '\n';
    } else if (c == '\t' || c == '\r' || c == '\\') {
      buf[n++] = '\\';
      buf[n++] = c == '\t' ? 't' : c == '\r' ? 'r' : '\\';
    } else if (c >= 0x20 && c < 0x7F) {
      buf[n++] = static_cast<char>(c);
    } else {
      constexpr const char* kHex = "0123456789abcdef";
      buf[n++] = '\\';
      buf[n++] = 'x';
      buf[n++] = kHex[c >> 4];
      buf[n++] = kHex[c & 0xF];
    }
  }
  if (text.size() > shown) {
    constexpr std::string_view kCut = " [... cut]";
    std::memcpy(buf + n, kCut.data(), std::min(kCut.size(), sizeof buf - n));
    n += std::min(kCut.size(), sizeof buf - n);
  }
  out(buf, n);
}

std::string escaped(std::string_view text) {
  std::string out;
  escape(text, [&out](const char* data, std::size_t size) { out.append(data, size); });
  return out;
}

// What runs now, for the reports of crashes, sanitizer errors and hangs.
struct Current {
  std::mutex mutex;
  const char* part = "";
  std::uint64_t index = 0;
  std::string input;
  const std::string* script = nullptr;  // an op script as it grows, when there is one
  std::atomic<std::uint64_t> started{0};
  std::atomic<bool> reported{false};
};

Current& current() {
  static Current c;
  return c;
}

void begin_input(const char* part, std::uint64_t index, std::string input) {
  Current& c = current();
  {
    const std::lock_guard<std::mutex> lock(c.mutex);
    c.part = part;
    c.index = index;
    c.input = std::move(input);
    c.script = nullptr;
  }
  c.started.fetch_add(1);
}

// Shows an op script, as it grows, in the reports while it lives.
class ShowScript {
 public:
  explicit ShowScript(const std::string& script) { show(&script); }
  ~ShowScript() { show(nullptr); }
  ShowScript(const ShowScript&) = delete;
  ShowScript& operator=(const ShowScript&) = delete;

 private:
  static void show(const std::string* script) {
    const std::lock_guard<std::mutex> lock(current().mutex);
    current().script = script;
  }
};

void write_all(const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(STDERR_FILENO, data, size);
    if (n <= 0) return;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}
void write_text(const char* text) { write_all(text, std::strlen(text)); }
void write_number(std::uint64_t value) {
  char buf[24];
  std::size_t i = sizeof buf;
  do {
    buf[--i] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  write_all(buf + i, sizeof buf - i);
}

// Async-signal-safe enough for a dying process: write(2) only, no allocation.
void report_current(const char* what) {
  Current& c = current();
  if (c.reported.exchange(true)) return;
  write_text("\n*** poolsim fuzz: ");
  write_text(what);
  write_text(" in ");
  write_text(c.part);
  write_text(", input ");
  write_number(c.index);
  write_text(", seed ");
  write_number(settings().seed);
  write_text("\n*** rerun it alone: POOLSIM_FUZZ_SEED=");
  write_number(settings().seed);
  write_text(" POOLSIM_FUZZ_INPUT=");
  write_number(c.index);
  write_text("\n*** the input (escaped):\n");
  escape(c.input, [](const char* data, std::size_t size) { write_all(data, size); });
  if (c.script != nullptr) {
    write_text("\n*** the op script so far:\n");
    write_all(c.script->data(), std::min(c.script->size(), kShownBytes));
  }
  write_text("\n*** end of the input\n");
}

extern "C" void on_fatal_signal(int signal_number) {
  report_current("fatal signal");
  std::raise(signal_number);  // default action again (SA_RESETHAND), once the handler returns
}

#ifdef POOLSIM_FUZZ_SANITIZED
extern "C" void on_sanitizer_death() { report_current("sanitizer error"); }
#endif

void install_reporters() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::set_terminate([] {
      report_current("uncaught exception");
      std::abort();
    });
    struct sigaction action {};
    action.sa_handler = on_fatal_signal;
    action.sa_flags = SA_RESETHAND;
    sigemptyset(&action.sa_mask);
#ifdef POOLSIM_FUZZ_SANITIZED
    // AddressSanitizer reports its own signals and calls this when it dies; UndefinedBehavior-
    // Sanitizer (its own runtime under GCC) aborts instead, see __ubsan_default_options below.
    __sanitizer_set_death_callback(on_sanitizer_death);
    sigaction(SIGABRT, &action, nullptr);
#else
    for (int signal_number : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) {
      sigaction(signal_number, &action, nullptr);
    }
#endif
  });
}

// Ends the process with a report when one input runs longer than kInputBudget.
class Watchdog {
 public:
  Watchdog() : thread_([this] { watch(); }) {}
  ~Watchdog() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    std::uint64_t seen = current().started.load();
    auto since = std::chrono::steady_clock::now();
    while (!wake_.wait_for(lock, 1s, [this] { return stop_; })) {
      const std::uint64_t started = current().started.load();
      const auto now = std::chrono::steady_clock::now();
      if (started != seen) {
        seen = started;
        since = now;
      } else if (now - since > kInputBudget) {
        const std::lock_guard<std::mutex> input_lock(current().mutex);
        report_current("hang (one input ran longer than the budget)");
        std::_Exit(3);
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

// The inputs of one test: all of them, or the one POOLSIM_FUZZ_INPUT names.
std::pair<std::uint64_t, std::uint64_t> input_range(Part part, const char* name) {
  const std::uint64_t count = count_of(part);
  std::cout << "[ fuzz     ] " << name << ": seed " << settings().seed
            << " (POOLSIM_FUZZ_SEED=" << settings().seed << " reruns this run), " << count
            << " inputs" << std::endl;
  if (settings().only) return {*settings().only, *settings().only + 1};
  return {0, count};
}

// Whether a test goes on after `failures` failing inputs.
bool go_on(std::uint64_t failures) {
  return failures == 0 || (settings().keep_going && failures < 20);
}

std::string failure_header(const char* part, std::uint64_t index) {
  return std::string(part) + " input " + std::to_string(index) + " of seed " +
         std::to_string(settings().seed) +
         " (rerun it alone: POOLSIM_FUZZ_SEED=" + std::to_string(settings().seed) +
         " POOLSIM_FUZZ_INPUT=" + std::to_string(index) + ")";
}

std::string exception_text(const std::exception& e) {
  return std::string(typeid(e).name()) + ": " + e.what();
}

// A temporary directory for the files of the inputs, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "poolsim-fuzz-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::string number_text(double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", value);
  return buf;
}

// =============================================================================================
// 1. Scenario files
// =============================================================================================

enum class ValueKind {
  kDuration,
  kTimeout,
  kRecycle,
  kInteger,
  kRate,
  kFraction,
  kProbability,
  kBool,
  kWord,
  kDistribution,
  kTrace,
  kOutages,
};

struct OptionKind {
  const char* key;
  ValueKind kind;
  std::int64_t low = 0;  // kInteger: the plausible range
  std::int64_t high = 0;
  std::vector<const char*> words = {};  // kWord
};

// Every option of sim::kOptions, with what its values look like (checked against kOptions, so a
// new option must be added here).
const std::vector<OptionKind>& option_kinds() {
  using K = ValueKind;
  static const std::vector<OptionKind> kinds = {
      {"duration", K::kDuration},
      {"warmup", K::kDuration},
      {"seed", K::kInteger, 0, 1'000'000},
      {"replications", K::kInteger, 1, 4},
      {"pool.policy", K::kWord, 0, 0, {"queuepool", "null", "hikari"}},  // see generate()
      {"pool.size", K::kInteger, 0, 20},
      {"pool.max_overflow", K::kInteger, -1, 20},
      {"pool.timeout", K::kTimeout},
      {"pool.recycle", K::kRecycle},
      {"pool.pre_ping", K::kBool},
      {"pool.use_lifo", K::kBool},
      {"pool.reset_on_return", K::kWord, 0, 0, {"rollback", "commit", "none"}},
      {"pool.compat", K::kWord, 0, 0, {"1.4", "2.0"}},
      {"hikari.maximum_pool_size", K::kInteger, 1, 20},
      {"hikari.minimum_idle", K::kInteger, 0, 20},
      {"hikari.connection_timeout", K::kTimeout},
      {"hikari.idle_timeout", K::kDuration},
      {"hikari.max_lifetime", K::kDuration},
      {"hikari.keepalive_time", K::kDuration},
      {"psycopg.min_size", K::kInteger, 0, 10},
      {"psycopg.max_size", K::kInteger, 0, 20},
      {"psycopg.timeout", K::kDuration},
      {"psycopg.max_idle", K::kDuration},
      {"psycopg.max_lifetime", K::kDuration},
      {"psycopg.reconnect_timeout", K::kDuration},
      {"psycopg.num_workers", K::kInteger, 1, 4},
      {"psycopg.check", K::kBool},
      {"pgbouncer.default_pool_size", K::kInteger, 1, 20},
      {"pgbouncer.min_pool_size", K::kInteger, 0, 10},
      {"pgbouncer.reserve_pool_size", K::kInteger, 0, 5},
      {"pgbouncer.reserve_pool_timeout", K::kDuration},
      {"pgbouncer.server_idle_timeout", K::kDuration},
      {"pgbouncer.server_lifetime", K::kDuration},
      {"pgbouncer.query_wait_timeout", K::kDuration},
      {"pgbouncer.server_login_retry", K::kDuration},
      {"pgbouncer.server_check_delay", K::kDuration},
      {"pgbouncer.max_db_connections", K::kInteger, 0, 30},
      {"pgbouncer.connect", K::kDistribution},
      {"workload.arrival",
       K::kWord,
       0,
       0,
       {"poisson", "constant", "onoff", "diurnal", "trace", "closed"}},
      {"workload.rate", K::kRate},
      {"workload.burst_rate", K::kRate},
      {"workload.burst_on", K::kDuration},
      {"workload.burst_off", K::kDuration},
      {"workload.period", K::kDuration},
      {"workload.amplitude", K::kFraction},
      {"workload.service", K::kDistribution},
      {"workload.clients", K::kInteger, 1, 100},
      {"workload.think", K::kDistribution},
      {"workload.trace", K::kTrace},
      {"app.processes", K::kInteger, 1, 6},
      {"app.threads", K::kInteger, 0, 8},
      {"app.routing", K::kWord, 0, 0, {"round_robin", "random"}},
      {"database.max_connections", K::kInteger, 1, 100},
      {"database.connect", K::kDistribution},
      {"database.ping", K::kDistribution},
      {"database.reset", K::kDistribution},
      {"database.idle_session_timeout", K::kDuration},
      {"database.connect_capacity", K::kInteger, 0, 8},
      {"database.connect_sharing", K::kWord, 0, 0, {"queue", "shared"}},
      {"database.outages", K::kOutages},
      {"network.idle_drop_after", K::kDuration},
      {"network.drop_rate", K::kRate},
      {"network.connect_fail", K::kProbability},
  };
  return kinds;
}

// One generated scenario: the INI text and the CSV files it names (relative to the temp dir).
struct ScenarioInput {
  std::string text;
  std::vector<std::pair<std::string, std::string>> files;

  std::string describe() const {
    std::string out = text;
    for (const auto& [name, content] : files) {
      out += "\n--- file " + name + " ---\n" + content;
    }
    return out;
  }
};

// Values that are wrong in one way each, for any option.
// clang-format off
constexpr const char* kOddNumbers[] = {
    "nan", "NaN", "inf", "-inf", "infinity", "1e300", "-1e300", "-1", "-0", "1e-300", "4.9e-324",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
    "18446744073709551616", "0x1f", "1_000", "  ", "\t5\t", "+5", "1e", "e5", ".5", "5.", "1,5",
    "1.5", "1e3", "05", "--1", "1e309"};
constexpr const char* kOddDurations[] = {
    "5sec", "5 s", "5S", "5ms5", "1.5.5s", ".5s", "5.s", "-5s", "+5s", "1e3ms", "5\xc2\xb5s",
    "\xef\xbc\x95s", "5m", "5hours", "1000001h", "1000000.0000000001h",
    "99999999999999999999999999ns", "0s0", "s", "00000000000000000000000000000000001s", "0.",
    "5 ms", "5\tms"};
constexpr const char* kOddDistributions[] = {
    "exp:", "exp", ":", "const:-1s", "uniform:5ms", "uniform:15ms,5ms", "uniform:,",
    "lognormal:mean=10ms", "lognormal:cv=1", "lognormal:mean=10ms,cv=0",
    "lognormal:mean=10ms,cv=1001", "lognormal:mean=0s,cv=1", "lognormal:mean=10ms,cv=nan",
    "lognormal:mean=10ms,cv=1,cv=2", "lognormal:mean=10ms,,cv=1", "lognormal:",
    "lognormal:mean=10ms,cv=inf", "lognormal:mean=,cv=", "empirical:", "empirical:.", "empirical:/",
    "empirical:missing.csv", "EXP:10ms", "exp:10ms,20ms", "poisson:5", "const:5ms:5ms", "exp:nan",
    "uniform:1000000h,1000001h", "const:1000000h1"};
constexpr const char* kOddCsvLines[] = {
    "-1", "1e300", "nan", "inf", "abc", "", "#c", "1,2,3", "5ms", "-5ms", "1e10", "9.3e9", "\xff",
    " ", "1e300,1", "1,1e300", "1,-1", "0,9.3e9", "9223372036854775807", "1000000h", ",", "0.5,",
    "1000001h", "3.6e9", "3600000000.000001"};
// clang-format on

class ScenarioGenerator {
 public:
  ScenarioGenerator(Rand& rand, const std::filesystem::path& dir) : r_(rand), dir_(dir) {}

  ScenarioInput generate() {
    wild_ = r_.one_of({0.0, 0.0, 0.0, 0.02, 0.05, 0.1, 0.3, 0.7});
    std::vector<std::pair<std::string, std::string>> entries;
    const double include = 0.05 + 0.45 * r_.unit();
    // The pool design first: the keys of the others are refused with it, so they come only
    // as often as other wild input does.
    const auto policy = r_.one_of({Policy::kQueuePool, Policy::kQueuePool, Policy::kNull,
                                   Policy::kHikari, Policy::kStatic, Policy::kPsycopg,
                                   Policy::kPgbouncer});
    if (policy != Policy::kQueuePool || r_.chance(include)) {
      entries.emplace_back("pool.policy", policy == Policy::kNull        ? "null"
                                          : policy == Policy::kHikari    ? "hikari"
                                          : policy == Policy::kStatic    ? "static"
                                          : policy == Policy::kPsycopg   ? "psycopg"
                                          : policy == Policy::kPgbouncer ? "pgbouncer"
                                                                         : "queuepool");
    }
    for (const OptionKind& o : option_kinds()) {
      const std::string_view key = o.key;
      if (key == "pool.policy") continue;
      if (!sim::option_applies(policy, key) && !r_.chance(wild_)) continue;
      // Every arrival kind often, not only the default.
      const bool arrival = key == "workload.arrival" && r_.chance(0.6);
      if (arrival || r_.chance(include)) entries.emplace_back(o.key, value(o));
    }
    // The companions an arrival kind requires, most of the time.
    for (const auto& [key, text] : std::vector<std::pair<std::string, std::string>>(entries)) {
      if (key != "workload.arrival") continue;
      const char* needs = text == "onoff"    ? "workload.burst_rate"
                          : text == "closed" ? "workload.clients"
                          : text == "trace"  ? "workload.trace"
                                             : nullptr;
      if (needs != nullptr && r_.chance(0.9)) {
        const auto has = [&](const auto& e) { return e.first == needs; };
        if (std::none_of(entries.begin(), entries.end(), has)) {
          entries.emplace_back(needs, value(kind_of(needs)));
        }
      }
    }
    // The keys of the other arrival kinds are refused like the other pools' keys: they come
    // only as often as other wild input does.
    sim::Arrival arrival = sim::Arrival::kPoisson;
    for (const auto& [key, text] : entries) {
      if (key != "workload.arrival") continue;
      arrival = text == "constant"  ? sim::Arrival::kConstant
                : text == "onoff"   ? sim::Arrival::kOnOff
                : text == "diurnal" ? sim::Arrival::kDiurnal
                : text == "trace"   ? sim::Arrival::kTrace
                : text == "closed"  ? sim::Arrival::kClosed
                                    : sim::Arrival::kPoisson;
    }
    std::erase_if(entries, [&](const auto& e) {
      return !sim::option_applies(arrival, e.first) && !r_.chance(wild_);
    });
    std::shuffle(entries.begin(), entries.end(), r_.engine());
    if (r_.chance(wild_)) {  // a key given twice
      if (!entries.empty()) entries.push_back(entries[r_.below(entries.size())]);
    }
    std::string text = render(entries);
    if (r_.chance(wild_ * 0.3)) mutate(text);
    return ScenarioInput{std::move(text), std::move(files_)};
  }

 private:
  static const OptionKind& kind_of(const std::string& key) {
    for (const OptionKind& o : option_kinds()) {
      if (key == o.key) return o;
    }
    throw std::logic_error("no option kind for " + key);
  }

  std::string value(const OptionKind& o) { return r_.chance(wild_) ? wild(o) : plausible(o); }

  // ---- plausible values: mostly valid, with the valid extremes ----

  std::string digits(std::size_t n) {
    std::string out;
    for (std::size_t i = 0; i < n; ++i) out += static_cast<char>('0' + r_.below(10));
    return out;
  }

  std::string duration(bool small = false) {
    switch (r_.below(small ? 14 : 10)) {
      case 0: return "0";
      case 1:
        return r_.one_of({"1ns", "250us", "30ms", "1.5s", "10min", "2h", "0.5h", "1000000h",
                          "999999.999999999h", "0.0000000001s", "1.0000000005s", "0.5ns",
                          "3600000000000000000ns", "59999999999.9999999999min"});
      case 2:
        return std::to_string(r_.between(0, 999)) + "." + digits(1 + r_.below(12)) +
               r_.one_of({"ns", "us", "ms", "s", "min", "h"});
      default:
        return std::to_string(r_.between(0, small ? 99 : 999)) +
               (small ? r_.one_of({"us", "ms", "ms", "ms"})
                      : r_.one_of({"ns", "us", "ms", "ms", "s", "s", "min", "h"}));
    }
  }

  std::string rate() {
    switch (r_.below(10)) {
      case 0:
        return r_.one_of({"1e-12", "1e-300", "4.9e-324", "1e9", "999999999.9", "0.001", "1e-7",
                          "2.5e-5", "1e-9"});
      case 1: return number_text(r_.unit() * 10);
      default: return std::to_string(r_.between(1, 3000));
    }
  }

  std::string distribution() {
    switch (r_.below(6)) {
      case 0: return "const:" + duration(true);
      case 1: return "exp:" + duration(true);
      case 2: {
        std::string low = duration(true), high = duration(true);
        return "uniform:" + low + "," + high;
      }
      case 3: {
        const std::string mean = "mean=" + duration(true);
        const std::string cv =
            std::string("cv=") + r_.one_of({"0.5", "1.5", "1000", "1e-300", "0.001", "3", "1"});
        return r_.chance(0.8) ? "lognormal:" + mean + "," + cv : "lognormal:" + cv + "," + mean;
      }
      case 4: return "empirical:" + csv_file(false);
      default:
        return r_.one_of({"const:0", "exp:10ms", "const:30ms", "uniform:5ms,15ms",
                          "lognormal:mean=10ms,cv=1.5", "const:1000000h", "exp:1000000h",
                          "uniform:0ns,1000000h", "lognormal:mean=1000000h,cv=1000",
                          "lognormal:mean=1ns,cv=1000"});
    }
  }

  std::string outages() {
    std::string out;
    std::int64_t at = 0;
    const std::size_t n = r_.below(5);
    for (std::size_t i = 0; i < n; ++i) {
      at += r_.between(0, 30);
      const std::int64_t length = r_.between(1, 10);
      if (!out.empty()) out += ",";
      out += std::to_string(at) + "s+" + std::to_string(length) + r_.one_of({"s", "ms", "s"});
      at += length;
    }
    if (r_.chance(0.1)) out = r_.one_of({"1000000h+1000000h", "0s+1ns", "999999h+1h,1000000h+1ns"});
    return out;
  }

  std::string plausible(const OptionKind& o) {
    switch (o.kind) {
      case ValueKind::kDuration: return duration();
      case ValueKind::kTimeout:
        return r_.chance(0.2) ? r_.one_of({"none", "0"}) : duration(r_.chance(0.5));
      case ValueKind::kRecycle: return r_.chance(0.3) ? "-1" : duration(r_.chance(0.5));
      case ValueKind::kInteger:
        if (r_.chance(0.05)) {
          return r_.one_of({"0", "-1", "1", "1000000", "10000", "10000000", "9223372036854775807"});
        }
        return std::to_string(r_.between(o.low, o.high));
      case ValueKind::kRate: return rate();
      case ValueKind::kFraction:
        return r_.chance(0.3) ? r_.one_of({"0", "1", "0.5", "-0", "1e-300"})
                              : number_text(r_.unit());
      case ValueKind::kProbability:
        return r_.chance(0.5) ? "0"
                              : (r_.chance(0.3) ? r_.one_of({"1", "0.01", "1e-300", "0.999999"})
                                                : number_text(r_.unit() * 0.5));
      case ValueKind::kBool:
        return r_.one_of({"true", "false", "yes", "no", "on", "off", "1", "0", "TRUE", "False"});
      case ValueKind::kWord:
        return r_.chance(0.05) ? std::string(" ") + o.words[r_.below(o.words.size())] + "\t"
                               : std::string(o.words[r_.below(o.words.size())]);
      case ValueKind::kDistribution: return distribution();
      case ValueKind::kTrace:
        return r_.chance(0.9) ? csv_file(true)
                              : r_.one_of({"missing.csv", "", ".", "/", "sub/../missing.csv"});
      case ValueKind::kOutages: return outages();
    }
    return "";
  }

  // ---- implausible values ----

  std::string garbage(std::size_t n, bool newlines) {
    std::string out;
    for (std::size_t i = 0; i < n; ++i) {
      char c = static_cast<char>(r_.bits() & 0xFF);
      if (!newlines && c == '\n') c = '\0';
      out += c;
    }
    return out;
  }

  std::string wild(const OptionKind& o) {
    switch (r_.below(14)) {
      case 0: return "";
      case 1: return r_.one_of(kOddNumbers);
      case 2: return digits(20 + r_.below(400)) + r_.one_of({"", "s", "ns", "h", ".5s"});
      case 3: return garbage(1 + r_.below(40), false);
      case 4:
        return std::string(r_.one_of({"\xff\xfe", "\xc3\x28", "\xe2\x82", "\xf0\x9f\x98",
                                      "\xed\xa0\x80", "\xc0\xaf"})) +
               plausible(o);
      case 5: return std::string(1000 + r_.below(100000), r_.one_of({'1', 'x', ' ', '9'}));
      case 6: return r_.one_of(kOddDurations);
      case 7: return r_.one_of(kOddDistributions);
      case 8:
        return r_.one_of({"20s", "20s+", "+5s", "20s+0s", "20s+5s,10s+1s", "20s+5s,,30s+1s", ",",
                          "20s+5s,", "1000000h+1000000h", "20s+5s+5s", "-1s+1s", "20s+-1s",
                          "20s + 5s", "+", "0+0"});
      case 9: return plausible(option_kinds()[r_.below(option_kinds().size())]);
      case 10:
        return r_.one_of({"true", "none", "queuepool", "closed", "-1", "yes", "random", "never",
                          "null", "None", "rollback", "1.4", "2.0", "0"});
      case 11:
        return plausible(o) + r_.one_of({" # a comment", "=5", "[x]", " ; x", "\r", "\x01", "\0"});
      case 12: return std::string(r_.one_of({"#", ";", "=", "[", "]"})) + plausible(o);
      default: {
        std::string text = plausible(o);
        mutate(text);
        return text;
      }
    }
  }

  // ---- CSV files: traces (seconds,hold) and empirical distributions ----

  std::string csv_file(bool trace) {
    if (r_.chance(0.05)) return r_.one_of({"missing.csv", ".", "nothere/x.csv"});
    const std::string name =
        std::string(trace ? "trace" : "empirical") + std::to_string(files_.size()) + ".csv";
    std::string content;
    const char* eol = r_.chance(0.1) ? "\r\n" : "\n";
    if (r_.chance(0.3)) content += std::string(r_.one_of({"at,hold", "seconds", "#x", ""})) + eol;
    double at = 0;
    const std::size_t lines = r_.below(r_.chance(0.1) ? 300 : 30);
    const double file_wild = wild_ > 0 ? 0.05 : 0.0;
    for (std::size_t i = 0; i < lines; ++i) {
      if (r_.chance(file_wild)) {
        content += r_.one_of(kOddCsvLines);
      } else {
        at += r_.unit() * r_.one_of({0.001, 0.1, 1.0, 1000.0});
        content += number_text(at);
        if (trace && r_.chance(0.5)) {
          content += "," + number_text(r_.unit() * r_.one_of({0.001, 0.05, 10.0}));
        } else if (!trace && r_.chance(0.2)) {
          content += r_.one_of({",x", ",1", "ms"});
        }
      }
      content += eol;
    }
    files_.emplace_back(name, content);
    return r_.chance(0.1) ? (dir_ / name).string() : name;
  }

  // ---- the file ----

  std::string line(const std::string& key, const std::string& value) {
    switch (r_.below(8)) {
      case 0: return key + "=" + value;
      case 1: return "  " + key + "\t=  " + value + "  ";
      case 2: return key + " = " + value + " # note";
      default: return key + " = " + value;
    }
  }

  std::string noise_line() {
    switch (r_.below(13)) {
      case 0: return r_.one_of({"# a comment", "; not a comment"});
      case 1: return "";
      case 2: return "   \t ";
      case 3: return "pool.sizee = 1";
      case 4: return "no_equals_sign";
      case 5: return r_.one_of({"[pool", "[]", "[ pool ]", "[pool.sub]", "[pool]]", "[[pool]]"});
      case 6: return "= 5";
      case 7: return std::string(10000 + r_.below(100000), 'k') + " = 1";
      case 8: return "unknown.key = " + std::to_string(r_.below(100));
      case 9: return garbage(1 + r_.below(80), r_.chance(0.3));
      case 10: return "[unknown]\nkey = 1";
      case 11: return "pool.size = 5\npool.size = 6";
      default: return "pool. size = 5";
    }
  }

  std::string render(const std::vector<std::pair<std::string, std::string>>& entries) {
    const std::string eol = r_.chance(0.1) ? "\r\n" : "\n";
    std::vector<std::string> lines;
    const auto noise = [&] {
      if (r_.chance(wild_ * 0.5)) lines.push_back(noise_line());
      if (r_.chance(0.05)) lines.push_back(r_.one_of({"# comment", "", "  # indented"}));
    };
    if (r_.chance(0.5)) {  // flat: pool.size = 5
      for (const auto& [key, text] : entries) {
        noise();
        lines.push_back(line(key, text));
      }
    } else {  // top-level keys, then [section] with its keys
      std::map<std::string, std::vector<std::pair<std::string, std::string>>> sections;
      for (const auto& [key, text] : entries) {
        const auto dot = key.find('.');
        if (dot == std::string::npos) {
          noise();
          lines.push_back(line(key, text));
        } else {
          sections[key.substr(0, dot)].emplace_back(key.substr(dot + 1), text);
        }
      }
      for (const auto& [section, items] : sections) {
        lines.push_back("[" + section + "]");
        for (const auto& [key, text] : items) {
          noise();
          lines.push_back(line(key, text));
        }
      }
    }
    noise();
    std::string out = r_.chance(0.05) ? "\xEF\xBB\xBF" : "";
    for (const std::string& l : lines) out += l + eol;
    if (!out.empty() && r_.chance(0.1)) out.pop_back();  // no final line break
    return out;
  }

  void mutate(std::string& text) {
    const std::size_t edits = 1 + r_.below(8);
    for (std::size_t i = 0; i < edits; ++i) {
      const std::size_t at = r_.below(text.size() + 1);
      switch (r_.below(6)) {
        case 0:
          if (at < text.size()) text[at] = static_cast<char>(r_.bits() & 0xFF);
          break;
        case 1: text.insert(at, 1, static_cast<char>(r_.bits() & 0xFF)); break;
        case 2:
          if (at < text.size()) text.erase(at, 1 + r_.below(8));
          break;
        case 3: text.insert(at, 1, '\0'); break;
        case 4: text.insert(at, text.substr(at, r_.below(40))); break;
        default: text.resize(at); break;
      }
    }
  }

  Rand& r_;
  std::filesystem::path dir_;
  double wild_ = 0;
  std::vector<std::pair<std::string, std::string>> files_;
};

// The run of a valid scenario, bounded: about `requests` arrivals at most (warm-up included),
// an on/off workload at most kMaxCycles bursts, few processes and clients. Durations shrink in
// proportion, so extreme times stay extreme where the rate is low.
constexpr double kMaxCycles = 20000;

sim::Scenario bounded(sim::Scenario s, double requests) {
  s.processes = std::min(s.processes, 32);
  s.clients = std::min(s.clients, 100);
  const double seconds = to_seconds(s.duration + s.warmup);
  double per_second = 0;
  double cycles_per_second = 0;
  switch (s.arrival) {
    case sim::Arrival::kPoisson:
    case sim::Arrival::kConstant: per_second = s.rate; break;
    case sim::Arrival::kOnOff:
      per_second = std::max(s.rate, s.burst_rate);
      cycles_per_second = 1 / to_seconds(s.burst_on + s.burst_off);
      break;
    case sim::Arrival::kDiurnal: per_second = s.rate * (1 + s.amplitude); break;
    case sim::Arrival::kClosed:  // requests that fail at once take only the think time
      per_second = s.clients / s.think.mean_seconds();
      break;
    case sim::Arrival::kTrace: break;  // the generated traces are short
  }
  // psycopg_pool's ShrinkPool runs every max_idle in every process, whatever the load.
  if (s.pool.policy == Policy::kPsycopg) {
    cycles_per_second += s.processes / to_seconds(s.psycopg.max_idle);
  }
  // pgbouncer's janitor may tick three times a second (refilling min_pool_size, say).
  if (s.pool.policy == Policy::kPgbouncer) cycles_per_second += 3;
  // HikariCP's housekeeper (every 30 s) and, while connects fail, its adder's retries (at
  // least every 5 s) run in every process, whatever the load: a year of a low rate was 10^8
  // events (10 s; a hang under the sanitizers).
  if (s.pool.policy == Policy::kHikari) cycles_per_second += s.processes * (1.0 / 30 + 1.0 / 5);
  double factor = 1;
  if (per_second * seconds > requests) factor = requests / (per_second * seconds);
  if (cycles_per_second * seconds * factor > kMaxCycles) {
    factor = kMaxCycles / (cycles_per_second * seconds);
  }
  if (factor < 1) {
    const auto scale = [factor](Duration d) {
      return Duration(static_cast<std::int64_t>(static_cast<double>(d.count()) * factor));
    };
    s.duration = std::max(scale(s.duration), Duration(1));
    s.warmup = scale(s.warmup);
  }
  return s;
}

// What a replication's counts must satisfy; empty when they do.
std::string check_replication(const sim::Scenario& s, const sim::ReplicationStats& st,
                              double request_budget) {
  std::ostringstream problems;
  const std::uint64_t answered =
      st.completed + st.timeouts + st.connect_failed + st.too_many_connections + st.disconnect;
  if (answered > st.requests) problems << "more answers (" << answered << ") than requests; ";
  // Only a checkout that may wait forever can be left unanswered at the end of a run.
  if (answered != st.requests && s.pool.timeout) {
    problems << st.requests - answered << " requests unanswered although pool.timeout is set; ";
  }
  if (st.wait.count() != answered) {
    problems << "wait histogram has " << st.wait.count() << " values for " << answered
             << " answered requests; ";
  }
  if (st.latency.count() != st.completed) {
    problems << "latency histogram has " << st.latency.count() << " values for " << st.completed
             << " completed requests; ";
  }
  if (st.waited > st.wait.count()) problems << "waited > requests with a wait; ";
  for (const double level : {st.peak_open, st.mean_open, st.mean_in_use, st.peak_server}) {
    if (!std::isfinite(level) || level < 0) problems << "a level is " << level << "; ";
  }
  if (st.peak_server > s.max_connections) {
    problems << "peak_server " << st.peak_server << " above database.max_connections; ";
  }
  if (st.mean_in_use > st.mean_open * (1 + 1e-9) + 1e-9) {
    problems << "mean_in_use " << st.mean_in_use << " above mean_open " << st.mean_open << "; ";
  }
  if (st.mean_open > st.peak_open * (1 + 1e-9) + 1e-9) {
    problems << "mean_open " << st.mean_open << " above peak_open " << st.peak_open << "; ";
  }
  if (st.sim_time_s != to_seconds(s.duration)) problems << "sim_time_s is not the duration; ";
  // Generous: a request takes a handful of events; outages, drops and idle closes add some.
  double events_bound =
      100 * (4 * request_budget + 1000) + 4 * static_cast<double>(s.outages.size());
  if (s.pool.policy == Policy::kHikari) {
    // HikariCP also works on its own, as long as its process's run lasts: housekeeping every
    // 30 s, a connect retried at least every 5 s while it fails, each connection replaced
    // every max_lifetime and checked every keepalive_time (minus its jitter). A run lasts past
    // the end for as long as its waiters may wait (connection_timeout; 0 is 24.8 days), one
    // after another where app.threads lets only so many requests wait at once.
    const Duration patience = s.hikari.connection_timeout.count() == 0
                                  ? std::chrono::milliseconds(2147483647)
                                  : s.hikari.connection_timeout;
    const double waits = s.threads > 0 ? std::ceil(request_budget / s.threads) + s.processes
                                       : s.processes;
    // While nobody can fail a connect, a waiting pool's housekeeper sleeps (nothing to do).
    const bool connects_fail = s.connect_fail > 0 || !s.outages.empty() ||
                               s.max_connections < s.processes * s.hikari.maximum_pool_size;
    const double run_seconds = s.processes * to_seconds(s.duration + s.warmup);
    const double seconds = run_seconds + waits * to_seconds(patience);
    double turns = (connects_fail ? seconds : run_seconds) * (1.0 / 30 + 1.0 / 5);
    const double size = s.hikari.maximum_pool_size;
    if (s.hikari.max_lifetime.count() > 0) turns += size * seconds / to_seconds(s.hikari.max_lifetime) * 1.1;
    if (s.hikari.keepalive_time.count() > 0) turns += size * seconds / to_seconds(s.hikari.keepalive_time) * 1.2;
    events_bound += 20 * turns;
  }
  if (s.pool.policy == Policy::kPsycopg) {
    // psycopg_pool works on its own too: ShrinkPool every max_idle in every process for the
    // whole run, and past the end while a client waits (psycopg.timeout at most, one after
    // another where app.threads lets only so many wait at once). A failed connect is retried
    // after 1 s (+-10%), doubling, until reconnect_timeout: about log2(reconnect_timeout / 0.9
    // s) + 2 tries for each connect asked for (every process's max_size, a growth or a
    // replacement per request at most).
    const double waits = s.threads > 0 ? std::ceil(request_budget / s.threads) + s.processes
                                       : s.processes;
    const double seconds = s.processes * to_seconds(s.duration + s.warmup) +
                           waits * to_seconds(s.psycopg.timeout);
    double turns = seconds / to_seconds(s.psycopg.max_idle);
    const bool connects_fail = s.connect_fail > 0 || !s.outages.empty() ||
                               s.max_connections < s.processes * s.psycopg.max_size.value_or(
                                                                     s.psycopg.min_size);
    if (connects_fail) {
      const double tries =
          std::log2(std::max(1.0, to_seconds(s.psycopg.reconnect_timeout) / 0.9)) + 3;
      turns += tries * (s.processes * s.psycopg.max_size.value_or(s.psycopg.min_size) +
                        2 * request_budget);
    }
    events_bound += 20 * turns;
  }
  if (static_cast<double>(st.events) > events_bound) {
    problems << st.events << " events for a run bounded to ~" << request_budget << " requests; ";
  }
  return problems.str();
}

struct ScenarioTally {
  std::uint64_t refused = 0;
  std::uint64_t run = 0;
  std::uint64_t requests = 0;
  std::uint64_t events = 0;
};

// One input: true when it passed.
bool fuzz_one_scenario(std::uint64_t index, const TempDir& dir, ScenarioTally& tally) {
  constexpr const char* kPart = "fuzz.scenarios";
  begin_input(kPart, index, "(not generated yet)");
  Rand r(input_seed(Part::kScenarios, index));
  ScenarioGenerator generator(r, dir.path());
  const ScenarioInput input = generator.generate();
  const bool through_file = r.below(32) == 0;
  const double request_budget = r.chance(0.1) ? 3000 : 300;
  const int replication = static_cast<int>(r.below(3));
  begin_input(kPart, index, input.describe());
  const auto fail = [&](const std::string& what) {
    ADD_FAILURE() << failure_header(kPart, index) << ":\n"
                  << what << "\ninput (escaped):\n"
                  << escaped(input.describe());
    return false;
  };

  std::optional<sim::Scenario> scenario;
  try {
    for (const auto& [name, content] : input.files) write_file(dir.path() / name, content);
    std::map<std::string, std::string> values;
    if (through_file) {
      // read_scenario_file reads the file and does exactly what read_scenario_text does.
      const std::filesystem::path file = dir.path() / "scenario.ini";
      write_file(file, input.text);
      std::string from_text;
      try {
        sim::read_scenario_text(input.text, file.string());
      } catch (const sim::ScenarioError& e) {
        from_text = e.what();
      }
      try {
        values = sim::read_scenario_file(file);
      } catch (const sim::ScenarioError& e) {
        if (from_text != e.what()) {
          return fail("read_scenario_file and read_scenario_text disagree: \"" + escaped(e.what()) +
                      "\" vs \"" + escaped(from_text) + "\"");
        }
        throw;
      }
      if (!from_text.empty()) return fail("only read_scenario_text refused it: " + from_text);
    } else {
      values = sim::read_scenario_text(input.text, "fuzz.ini");
    }
    scenario = sim::make_scenario(values, dir.path());
  } catch (const sim::ScenarioError& e) {
    const std::string message = e.what();
    if (message.empty() || message.find('\n') != std::string::npos) {
      return fail("ScenarioError is not one non-empty line: \"" + escaped(message) + "\"");
    }
    ++tally.refused;
    return true;
  } catch (const std::exception& e) {
    return fail("parsing threw something else than sim::ScenarioError: " + exception_text(e));
  }

  const sim::Scenario run = bounded(*scenario, request_budget);
  try {
    const sim::ReplicationStats stats = sim::run_replication(run, replication);
    if (const std::string problems = check_replication(run, stats, request_budget);
        !problems.empty()) {
      return fail("replication " + std::to_string(replication) + " of the bounded scenario " +
                  "(duration " + format_duration(run.duration) + ", warmup " +
                  format_duration(run.warmup) + "): " + problems);
    }
    const sim::Json result = sim::simulation_result(run, {stats}, 0.0);
    (void)sim::render_table(result);
    (void)result.dump();
    ++tally.run;
    tally.requests += stats.requests;
    tally.events += stats.events;
  } catch (const std::exception& e) {
    return fail("the bounded run (duration " + format_duration(run.duration) + ", warmup " +
                format_duration(run.warmup) + ") threw " + exception_text(e));
  }
  return true;
}

TEST(Fuzz, Scenarios) {
  install_reporters();
  // The generator knows every option, and nothing else.
  std::set<std::string> table, known;
  for (const sim::OptionInfo& o : sim::kOptions) table.insert(o.key);
  for (const OptionKind& o : option_kinds()) known.insert(o.key);
  ASSERT_EQ(table, known) << "fuzz_test.cpp's option_kinds() must list every option of kOptions";

  const auto [first, end] = input_range(Part::kScenarios, "fuzz.scenarios");
  const TempDir dir;
  const Watchdog watchdog;
  ScenarioTally tally;
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t failures = 0;
  for (std::uint64_t i = first; i < end && go_on(failures); ++i) {
    if (!fuzz_one_scenario(i, dir, tally)) ++failures;
  }
  if (failures > 0) return;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[ fuzz     ] " << end - first << " scenario files in " << seconds
            << " s: " << tally.refused << " refused, " << tally.run << " valid and run ("
            << tally.requests << " requests, " << tally.events << " events)" << std::endl;
  if (end - first >= 1000) {
    // Both ways must be well exercised, or the generator has drifted from the parser.
    EXPECT_GT(tally.run, (end - first) / 5) << "too few valid scenarios";
    EXPECT_GT(tally.refused, (end - first) / 5) << "too few refused scenarios";
  }
}

// =============================================================================================
// 2. Op scripts against PoolCore
// =============================================================================================

// The latest instant the scripts use: every difference of two instants stays in range, and so
// does now + any duration up to 2^62 (longer timeouts rely on the core saturating its deadline).
constexpr Instant kLatest = Instant(Duration(std::int64_t{1} << 62));

// A failed check of what the core asked of the driver (or a valid input the core refused).
struct ScriptFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string describe(const PoolConfig& c) {
  std::ostringstream out;
  const auto duration_text = [](std::optional<Duration> d, const char* off) {
    return d ? format_duration(*d) + " (" + std::to_string(d->count()) + "ns)" : std::string(off);
  };
  out << "config pool_size=" << c.pool_size << " max_overflow=" << c.max_overflow
      << " timeout=" << duration_text(c.timeout, "none")
      << " recycle=" << duration_text(c.recycle, "never") << " pre_ping=" << c.pre_ping
      << " lifo=" << (c.order == QueueOrder::kLifo)
      << " reset=" << static_cast<int>(c.reset_on_return)
      << " compat=" << (c.compat == Compat::kSqlalchemy14 ? "1.4" : "2.0")
      << " events=" << (c.events == PoolEvents::kOn);
  return out.str();
}

// Random pool settings with their edge values, including some that validate() refuses.
PoolConfig random_config(Rand& r) {
  constexpr int kMaxInt = std::numeric_limits<int>::max();
  constexpr int kMinInt = std::numeric_limits<int>::min();
  PoolConfig c;
  c.pool_size = r.chance(0.9) ? static_cast<int>(r.between(0, 5))
                              : r.one_of<int>({0, 1'000'000, kMaxInt, kMaxInt, -1, kMinInt});
  c.max_overflow = r.chance(0.9) ? static_cast<int>(r.between(-1, 4))
                                 : r.one_of<int>({-1, 1'000'000, kMaxInt, kMaxInt, -2, kMinInt});
  const auto some_duration = [&r]() -> Duration {
    switch (r.below(10)) {
      case 0: return Duration(0);
      case 1: return Duration(1);
      case 2: return Duration::max();
      case 3: return std::chrono::hours(1'000'000);
      case 4: return Duration(r.between(1, 1'000'000));
      default: return std::chrono::milliseconds(r.between(1, 10'000));
    }
  };
  switch (r.below(8)) {
    case 0: c.timeout = std::nullopt; break;
    case 1:
      c.timeout = r.one_of<Duration>({Duration(-1), -std::chrono::seconds(1), Duration::min()});
      break;
    default: c.timeout = some_duration();
  }
  switch (r.below(20)) {
    case 0: c.recycle = r.one_of<Duration>({Duration(-1), Duration::min()}); break;
    case 1:
    case 2:
    case 3:
    case 4:
    case 5: c.recycle = std::nullopt; break;
    default: c.recycle = some_duration();
  }
  c.pre_ping = r.chance(0.5);
  c.order = r.chance(0.5) ? QueueOrder::kLifo : QueueOrder::kFifo;
  c.reset_on_return = static_cast<ResetOnReturn>(r.below(3));
  c.compat = r.chance(0.5) ? Compat::kSqlalchemy14 : Compat::kSqlalchemy20;
  c.events = r.chance(0.5) ? PoolEvents::kOn : PoolEvents::kOff;
  return c;
}

// What both kinds of script share: the core, its clock, the script as it grows.
class Script {
 public:
  Script(Rand& rand, const PoolConfig& config, bool verbose)
      : r_(rand), core_(config), verbose_(verbose) {
    now_ = r_.one_of<Instant>(
        {Instant{}, Instant(std::chrono::seconds(1)), Instant(Duration(std::int64_t{1} << 40)),
         Instant(Duration(-(std::int64_t{1} << 40))), Instant(Duration(std::int64_t{1} << 61))});
  }

  const std::string& text() const { return script_; }

 protected:
  void log(const std::string& line) {
    script_ += line;
    script_ += '\n';
    if (verbose_) std::cerr << line << std::endl;
  }

  std::string at() const { return std::to_string(now_.time_since_epoch().count()) + "ns "; }

  void advance() {
    Duration step{0};
    switch (r_.below(10)) {
      case 0:
      case 1:
      case 2:
      case 3: return;
      case 4: step = Duration(r_.between(1, 1'000'000)); break;
      case 5:
      case 6: step = Duration(r_.between(1, 3'000'000'000)); break;
      case 7: step = Duration(r_.between(1, std::int64_t{1} << 50)); break;
      default:
        if (auto deadline = core_.poll_timeout(); deadline && *deadline <= kLatest) {
          step = std::max(*deadline - now_, Duration(0)) + Duration(r_.between(0, 1));
        }
    }
    now_ = std::min(now_ + step, kLatest);
  }

  // After every input: the invariants hold, and the actions are carried out in order.
  template <typename Carry>
  void after_input(Carry&& carry) {
    try {
      core_.check_invariants();
    } catch (const std::logic_error& e) {
      throw ScriptFailure(std::string("invariant broken: ") + e.what());
    }
    while (auto action = core_.poll_action()) {
      std::ostringstream line;
      line << "    " << *action;
      log(line.str());
      std::visit(carry, *action);
    }
  }

  Rand& r_;
  PoolCore core_;
  Instant now_{};
  bool verbose_;
  std::string script_;
};

// A driver that plays by the rules (the property test's, with edge configs and wider time
// jumps) and checks what the core asks of it: a connection has one holder at a time, only open
// connections are used or closed, and every request is answered exactly once, which the final
// drain makes total.
class ValidScript : public Script {
 public:
  using Script::Script;

  void run(std::size_t steps) {
    for (std::size_t i = 0; i < steps; ++i) step();
    drain_everything();
  }

 private:
  struct Held {
    SlotId slot;
    ConnId conn;
  };

  void expect(bool condition, const std::string& what) {
    if (!condition) throw ScriptFailure(what);
  }

  void feed(const Event& event) {
    std::ostringstream line;
    line << at() << event;
    log(line.str());
    try {
      core_.handle(now_, event);
    } catch (const std::logic_error& e) {
      throw ScriptFailure(std::string("a valid input was refused: ") + e.what());
    }
    after();
  }

  void timeout() {
    log(at() + "handle_timeout");
    core_.handle_timeout(now_);
    after();
  }

  void after() {
    after_input([this](const auto& a) { carry_out(a); });
    expect(core_.status().waiting == static_cast<std::int64_t>(waiting().size()),
           "the core's waiters and the requests unanswered with nothing in flight differ");
  }

  // QueuePool connects and pings only for a request: one with none is counted as in flight
  // for request 2^64-1, which no fuzz script names.
  static std::uint64_t for_request(const std::optional<RequestId>& id) {
    return static_cast<std::uint64_t>(id.value_or(RequestId{~0ULL}));
  }

  void carry_out(const OpenConnection& a) {
    expect(a.request.has_value(), "a connect for no request");
    expect(in_flight_.insert(for_request(a.request)).second,
           "two things in flight for one request");
    connects_.push_back(a);
  }
  void carry_out(const CloseConnection& a) {
    expect(open_.erase(static_cast<std::uint64_t>(a.conn)) == 1,
           "closing a connection that is not open");
  }
  void carry_out(const Ping& a) {
    expect(open_.count(static_cast<std::uint64_t>(a.conn)) == 1, "pinging a closed connection");
    expect(a.request.has_value(), "a ping for no request");
    expect(in_flight_.insert(for_request(a.request)).second,
           "two things in flight for one request");
    pings_.push_back(a);
  }
  void carry_out(const Reset& a) {
    expect(open_.count(static_cast<std::uint64_t>(a.conn)) == 1, "resetting a closed connection");
    resets_.push_back(a);
  }
  void carry_out(const Grant& a) {
    answer(a.request);
    expect(open_.count(static_cast<std::uint64_t>(a.conn)) == 1, "granting a closed connection");
    for (const Held& h : held_) {
      expect(h.conn != a.conn, "one connection granted to two holders");
      expect(h.slot != a.slot, "one slot granted to two holders");
    }
    held_.push_back(Held{a.slot, a.conn});
  }
  void carry_out(const Fail& a) { answer(a.request); }
  void carry_out(const Notify&) {}

  void answer(RequestId request) {
    const auto id = static_cast<std::uint64_t>(request);
    expect(unanswered_.erase(id) == 1,
           "request " + std::to_string(id) + " answered twice or never asked");
    in_flight_.erase(id);
  }

  std::vector<std::uint64_t> waiting() const {
    std::vector<std::uint64_t> out;
    for (std::uint64_t id : unanswered_) {
      if (in_flight_.count(id) == 0) out.push_back(id);
    }
    return out;
  }

  template <typename T>
  T take(std::vector<T>& items) {
    const std::size_t i = r_.below(items.size());
    T item = items[i];
    items.erase(items.begin() + static_cast<std::ptrdiff_t>(i));
    return item;
  }

  void finish_connect(bool ok) {
    const OpenConnection c = take(connects_);
    in_flight_.erase(for_request(c.request));
    if (ok) {
      const std::uint64_t conn = next_conn_++;
      open_.insert(conn);
      feed(ConnectSucceeded{c.slot, ConnId{conn}});
    } else {
      feed(ConnectFailed{c.slot, 1});
    }
  }

  void finish_ping(PingOutcome outcome) {
    const Ping p = take(pings_);
    in_flight_.erase(for_request(p.request));
    feed(PingResult{p.slot, outcome, 2});
  }

  void finish_reset(bool ok) {
    const Reset reset = take(resets_);
    feed(ResetDone{reset.slot, reset.conn, ok ? ResetOutcome::kOk : ResetOutcome::kFailed});
  }

  void step() {
    advance();
    switch (r_.below(13)) {
      case 0:
      case 1: {
        const std::uint64_t id = next_request_++;
        unanswered_.insert(id);
        feed(CheckoutRequested{RequestId{id}});
        return;
      }
      case 2:
        if (!connects_.empty()) finish_connect(!r_.chance(0.2));
        return;
      case 3:
        if (!pings_.empty()) {
          finish_ping(r_.chance(0.7) ? PingOutcome::kOk : static_cast<PingOutcome>(r_.below(3)));
        }
        return;
      case 4:
        if (!resets_.empty()) finish_reset(!r_.chance(0.15));
        return;
      case 5:
      case 6:
        if (!held_.empty()) feed(Returned{take(held_).slot});
        return;
      case 7:
        if (!held_.empty()) {
          if (r_.chance(0.5)) {
            feed(Invalidated{held_[r_.below(held_.size())].slot, Invalidation::kSoft});
          } else {
            const Held h = take(held_);
            feed(r_.chance(0.5) ? Event(Invalidated{h.slot, Invalidation::kHard})
                                : Event(DisconnectDetected{h.slot}));
          }
        }
        return;
      case 8:
        if (!held_.empty() && r_.chance(0.5)) {
          const Held h = take(held_);
          detached_.push_back(h.conn);
          feed(Detached{h.slot});
        } else if (!detached_.empty()) {
          feed(DetachedReturned{take(detached_)});
        }
        return;
      case 9:
        if (r_.chance(0.2)) feed(r_.chance(0.5) ? Event(Disposed{}) : Event(PoolInvalidated{}));
        return;
      case 10: {
        const auto waits = waiting();
        if (!waits.empty() && r_.chance(0.3)) {
          feed(WaitExpired{RequestId{waits[r_.below(waits.size())]}});
        }
        return;
      }
      default: timeout();
    }
  }

  void drain_everything() {
    log("-- drain");
    for (int round = 0; round < 100000; ++round) {
      if (!connects_.empty()) {
        finish_connect(true);
      } else if (!pings_.empty()) {
        finish_ping(PingOutcome::kOk);
      } else if (!resets_.empty()) {
        finish_reset(true);
      } else if (!held_.empty()) {
        feed(Returned{take(held_).slot});
      } else if (!detached_.empty()) {
        feed(DetachedReturned{take(detached_)});
      } else if (auto deadline = core_.poll_timeout()) {
        // A deadline beyond kLatest (a timeout of ~292 years) is answered by WaitExpired.
        if (*deadline <= kLatest) {
          now_ = std::max(now_, *deadline);
          timeout();
        } else {
          const auto waits = waiting();
          expect(!waits.empty(), "a deadline with no waiter");
          feed(WaitExpired{RequestId{waits.front()}});
        }
      } else {
        break;
      }
    }
    // Waiters without a timeout can only be woken by a return; none is left to come.
    if (core_.config().timeout) {
      expect(unanswered_.empty(), std::to_string(unanswered_.size()) + " requests never answered");
    }
    expect(connects_.empty() && pings_.empty() && resets_.empty(), "actions left after the drain");
  }

  std::uint64_t next_request_ = 1;
  std::uint64_t next_conn_ = 100;
  std::set<std::uint64_t> unanswered_;
  std::set<std::uint64_t> in_flight_;  // requests with a connect or ping under way
  std::set<std::uint64_t> open_;
  std::vector<OpenConnection> connects_;
  std::vector<Ping> pings_;
  std::vector<Reset> resets_;
  std::vector<Held> held_;
  std::vector<ConnId> detached_;
};

// A driver that breaks the rules: events for random slots, connections and requests, in any
// state, and time going backwards. Whatever the core accepts must keep its invariants; what it
// refuses (caller misuse) must be refused with PoolCore's std::logic_error ("PoolCore: ...")
// and change nothing. Only request ids stay unique: a second checkout under the id of one
// still in flight is misuse that the core does not detect (its invariants then say so).
class HostileScript : public Script {
 public:
  using Script::Script;

  std::uint64_t refused = 0;
  std::uint64_t accepted = 0;

  void run(std::size_t steps) {
    for (std::size_t i = 0; i < steps; ++i) step();
  }

 private:
  SlotId slot() {
    switch (r_.below(10)) {
      case 0: return SlotId{r_.one_of<std::uint32_t>({0xFFFFFFFF, 0x80000000, 1000})};
      case 1: return SlotId{static_cast<std::uint32_t>(r_.below(64))};
      default: return SlotId{static_cast<std::uint32_t>(r_.below(slots_ + 2))};
    }
  }
  ConnId conn() {
    if (conns_.empty() || r_.chance(0.1)) return ConnId{r_.bits() % 1000};
    return conns_[r_.below(conns_.size())];
  }
  RequestId request() {
    if (next_request_ == 1 || r_.chance(0.1)) return RequestId{r_.bits()};
    return RequestId{1 + r_.bits() % (next_request_ - 1)};
  }

  void seen(SlotId s) { slots_ = std::max<std::size_t>(slots_, static_cast<std::size_t>(s) + 1); }
  void seen(ConnId c) {
    if (std::find(conns_.begin(), conns_.end(), c) == conns_.end()) conns_.push_back(c);
  }

  void after() {
    after_input([this](const auto& a) { carry_out(a); });
  }
  void carry_out(const OpenConnection& a) { seen(a.slot); }
  void carry_out(const CloseConnection& a) { seen(a.conn); }
  void carry_out(const Ping& a) {
    seen(a.slot);
    seen(a.conn);
  }
  void carry_out(const Reset& a) {
    if (a.slot) seen(*a.slot);
    seen(a.conn);
  }
  void carry_out(const Grant& a) {
    seen(a.slot);
    seen(a.conn);
  }
  void carry_out(const Fail&) {}
  void carry_out(const Notify&) {}

  // Feeds one input (an event, or handle_timeout when `event` is empty) at `when`.
  void input(Instant when, const std::optional<Event>& event) {
    std::ostringstream line;
    line << std::to_string(when.time_since_epoch().count()) << "ns ";
    if (event) {
      line << *event;
    } else {
      line << "handle_timeout";
    }
    log(line.str());
    const PoolStatus before = core_.status();
    const std::optional<Instant> deadline_before = core_.poll_timeout();
    try {
      if (event) {
        core_.handle(when, *event);
      } else {
        core_.handle_timeout(when);
      }
      ++accepted;
    } catch (const std::logic_error& e) {
      ++refused;
      log(std::string("    refused: ") + e.what());
      if (std::string_view(e.what()).rfind("PoolCore: ", 0) != 0) {
        throw ScriptFailure(std::string("refused without PoolCore's message: ") + e.what());
      }
      if (!(core_.status() == before) || core_.poll_timeout() != deadline_before) {
        std::ostringstream what;
        what << "a refused input changed the pool: " << before << " -> " << core_.status();
        throw ScriptFailure(what.str());
      }
      if (auto action = core_.poll_action()) {
        std::ostringstream what;
        what << "a refused input asked for an action: " << *action;
        throw ScriptFailure(what.str());
      }
    }
    after();
  }

  void step() {
    advance();
    std::optional<Event> event;
    switch (r_.below(17)) {
      case 0:
      case 1: event = CheckoutRequested{RequestId{next_request_++}}; break;
      case 2: {
        const ConnId c = r_.chance(0.8) ? ConnId{next_conn_++} : conn();
        seen(c);
        event = ConnectSucceeded{slot(), c};
        break;
      }
      case 3: event = ConnectFailed{slot(), static_cast<int>(r_.between(-5, 5))}; break;
      case 4:
        event = PingResult{slot(), static_cast<PingOutcome>(r_.below(3)),
                           static_cast<int>(r_.between(-5, 5))};
        break;
      case 5: event = Returned{slot()}; break;
      case 6:
        event = ResetDone{r_.chance(0.8) ? std::optional<SlotId>(slot()) : std::nullopt, conn(),
                          r_.chance(0.8) ? ResetOutcome::kOk : ResetOutcome::kFailed};
        break;
      case 7:
        event = Invalidated{slot(), r_.chance(0.5) ? Invalidation::kSoft : Invalidation::kHard};
        break;
      case 8: event = DisconnectDetected{slot()}; break;
      case 9: event = Detached{slot()}; break;
      case 10: event = DetachedReturned{conn()}; break;
      case 11: event = r_.chance(0.5) ? Event(Disposed{}) : Event(PoolInvalidated{}); break;
      case 12: event = WaitExpired{request()}; break;
      case 13: break;  // handle_timeout
      case 14: {
        const SlotId s = slot();
        try {
          (void)core_.record_of(s);
        } catch (const std::logic_error& e) {
          if (std::string_view(e.what()).rfind("PoolCore: ", 0) != 0) {
            throw ScriptFailure(std::string("record_of refused without PoolCore's message: ") +
                                e.what());
          }
        }
        return;
      }
      case 15: {  // time going backwards: refused, whatever the event
        const Instant earlier = now_ - Duration(r_.between(1, 1'000'000'000));
        input(earlier, r_.chance(0.5) ? std::optional<Event>(Disposed{}) : std::nullopt);
        return;
      }
      default: {  // a fair step now and then, so the pool gets somewhere
        const std::uint64_t id = next_request_++;
        input(now_, CheckoutRequested{RequestId{id}});
        return;
      }
    }
    input(now_, event);
  }

  std::size_t slots_ = 0;
  std::vector<ConnId> conns_;
  std::uint64_t next_request_ = 1;
  std::uint64_t next_conn_ = 1;
};

struct ScriptTally {
  std::uint64_t valid = 0;
  std::uint64_t hostile = 0;
  std::uint64_t bad_configs = 0;
  std::uint64_t inputs = 0;
  std::uint64_t refused = 0;
};

bool fuzz_one_script(std::uint64_t index, ScriptTally& tally) {
  constexpr const char* kPart = "fuzz.op_scripts";
  Rand r(input_seed(Part::kOpScripts, index));
  const PoolConfig config = random_config(r);
  const bool hostile = r.chance(0.4);
  const std::size_t steps = 1 + r.below(r.chance(0.1) ? 1000 : 150);
  const bool verbose = settings().only.has_value();
  const std::string header = std::string(hostile ? "hostile" : "valid") + " script of " +
                             std::to_string(steps) + " steps, " + describe(config);
  const auto fail = [&](const std::string& what, const std::string& script) {
    ADD_FAILURE() << failure_header(kPart, index) << ":\n"
                  << what << "\n"
                  << header << "\nscript:\n"
                  << script.substr(0, kShownBytes);
    return false;
  };
  begin_input(kPart, index, header);
  if (verbose) std::cerr << header << std::endl;

  if (auto problem = validate(config)) {
    try {
      const PoolCore core(config);
      return fail("PoolCore accepted a config that validate() refuses: " + *problem, "");
    } catch (const std::invalid_argument& e) {
      if (e.what() != *problem) {
        return fail(std::string("PoolCore's refusal differs from validate(): ") + e.what(), "");
      }
    } catch (const std::exception& e) {
      return fail("PoolCore refused a config with " + exception_text(e), "");
    }
    ++tally.bad_configs;
    return true;
  }
  try {
    if (hostile) {
      HostileScript script(r, config, verbose);
      const ShowScript shown(script.text());
      try {
        script.run(steps);
      } catch (const std::exception& e) {
        return fail(exception_text(e), script.text());
      }
      ++tally.hostile;
      tally.inputs += script.accepted + script.refused;
      tally.refused += script.refused;
    } else {
      ValidScript script(r, config, verbose);
      const ShowScript shown(script.text());
      try {
        script.run(steps);
      } catch (const std::exception& e) {
        return fail(exception_text(e), script.text());
      }
      ++tally.valid;
      tally.inputs += steps;
    }
  } catch (const std::exception& e) {
    return fail("PoolCore's constructor threw " + exception_text(e), "");
  }
  return true;
}

TEST(Fuzz, OpScripts) {
  install_reporters();
  const auto [first, end] = input_range(Part::kOpScripts, "fuzz.op_scripts");
  const Watchdog watchdog;
  ScriptTally tally;
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t failures = 0;
  for (std::uint64_t i = first; i < end && go_on(failures); ++i) {
    if (!fuzz_one_script(i, tally)) ++failures;
  }
  if (failures > 0) return;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[ fuzz     ] " << end - first << " op scripts in " << seconds
            << " s: " << tally.valid << " valid, " << tally.hostile << " hostile (" << tally.refused
            << " of their " << tally.inputs << " inputs refused as misuse), " << tally.bad_configs
            << " configs refused" << std::endl;
}

// =============================================================================================
// 3. JSON op scripts through the conformance replay
// =============================================================================================

using nlohmann::json;

// The shipped and the project's conformance scenarios, as starting points for mutation.
const std::vector<json>& replay_corpus() {
  static const std::vector<json> corpus = [] {
    std::vector<json> out;
    for (const char* path : {POOLSIM_FUZZ_OWN_SCENARIOS, POOLSIM_FUZZ_SHIPPED_SCENARIOS}) {
      std::ifstream in(path);
      if (!in) continue;
      try {
        const json doc = json::parse(in);
        for (const json& scenario : doc.at("scenarios")) out.push_back(scenario);
      } catch (const json::exception&) {
      }
    }
    return out;
  }();
  return corpus;
}

class ReplayGenerator {
 public:
  explicit ReplayGenerator(Rand& rand) : r_(rand) {}

  // The file's text; `scenarios` is how many it holds when it is well-formed JSON.
  std::string generate() {
    wild_ = r_.one_of({0.0, 0.0, 0.02, 0.1, 0.3});
    json doc = {{"format", "queuepool-conformance/1"},
                {"clock_start", r_.chance(0.97) ? json(1000.0) : random_value()},
                {"defaults",
                 {{"pool_size", 5},
                  {"max_overflow", 10},
                  {"timeout", 30.0},
                  {"recycle", -1},
                  {"pre_ping", false},
                  {"use_lifo", false},
                  {"reset_on_return", "rollback"}}},
                {"scenarios", json::array()}};
    const std::size_t count = r_.chance(0.7) ? 1 : 2 + r_.below(2);
    for (std::size_t i = 0; i < count; ++i) {
      json scenario = !replay_corpus().empty() && r_.chance(0.5) ? mutated_corpus_scenario()
                                                                 : generated_scenario();
      scenario["name"] = "s" + std::to_string(i);
      doc["scenarios"].push_back(std::move(scenario));
    }
    if (r_.chance(wild_)) damage(doc);
    std::string text = doc.dump(r_.chance(0.5) ? -1 : 1);
    if (r_.chance(wild_ * 0.2)) {  // bytes, not JSON
      for (std::size_t edits = 1 + r_.below(4); edits > 0; --edits) {
        const std::size_t at = r_.below(text.size() + 1);
        switch (r_.below(3)) {
          case 0: text.insert(at, 1, static_cast<char>(r_.bits() & 0xFF)); break;
          case 1:
            if (at < text.size()) text.erase(at, 1 + r_.below(4));
            break;
          default: text.resize(at); break;
        }
      }
    }
    return text;
  }

 private:
  json random_value() {
    switch (r_.below(14)) {
      case 0: return nullptr;
      case 1: return r_.chance(0.5);
      case 2: return r_.between(-3, 10);
      case 3: return r_.one_of<double>({0.5, -1.5, 1e9, 1e10, 1e308, -1e308, 4.9e-324, 0.05});
      case 4: return std::numeric_limits<std::int64_t>::max();
      case 5: return std::numeric_limits<std::int64_t>::min();
      case 6: return std::numeric_limits<std::uint64_t>::max();
      case 7: return "";
      case 8: return r_.one_of({"x", "checkout", "none", "\xc3\xa9", "1"});
      case 9: return json::array();
      case 10: return json::object();
      case 11: return json::array({1, "a", nullptr});
      case 12: return json{{"op", "status"}};
      default: return std::string(1 + r_.below(300), 'a');
    }
  }

  json seconds() {
    switch (r_.below(8)) {
      case 0: return 0;
      case 1: return 0.5;
      case 2: return r_.one_of<double>({1e9, 999999999.5, 1e-9});
      case 3: return r_.between(0, 40);
      default: return r_.between(0, 12);
    }
  }

  json pool() {
    json p = json::object();
    if (r_.chance(0.6)) p["pool_size"] = r_.chance(0.9) ? json(r_.between(0, 3)) : random_value();
    if (r_.chance(0.6)) {
      p["max_overflow"] = r_.chance(0.9) ? json(r_.between(-1, 3)) : random_value();
    }
    if (r_.chance(0.6)) {
      p["timeout"] = r_.chance(0.9) ? r_.one_of<json>({nullptr, 0, 0.05, 0.3, 10, 10, 10, -1, 1e9})
                                    : random_value();
    }
    if (r_.chance(0.4)) {
      p["recycle"] = r_.chance(0.9) ? r_.one_of<json>({-1, 0, 1, 5, 10, 1e9}) : random_value();
    }
    if (r_.chance(0.4)) p["pre_ping"] = r_.chance(0.5);
    if (r_.chance(0.3)) p["use_lifo"] = r_.chance(0.5);
    if (r_.chance(0.3)) p["reset_on_return"] = r_.one_of({"rollback", "commit", "none"});
    if (r_.chance(wild_)) p[r_.one_of({"size", "timeout", "extra"})] = random_value();
    return p;
  }

  // A name for ref: mostly one that is likely to be held (or an actor, for await).
  std::string name_ref(std::vector<std::string>& likely) {
    if (r_.chance(0.03)) return r_.one_of({"nobody", "", "A"});
    if (!likely.empty() && r_.chance(0.85)) {
      const std::size_t i = r_.below(likely.size());
      std::string name = likely[i];
      likely.erase(likely.begin() + static_cast<std::ptrdiff_t>(i));
      return name;
    }
    if (names_.empty()) return "nobody";
    return names_[r_.below(names_.size())];
  }

  json step() {
    static const char* const kOps[] = {
        "checkout",      "checkout",      "checkout_async",    "checkout_async",
        "await",         "checkin",       "checkin",           "checkin",
        "invalidate",    "detach",        "engine_disconnect", "advance",
        "advance",       "kill",          "ping_error",        "rollback_error",
        "fail_connects", "hold_connects", "dispose",           "engine_dispose",
        "status"};
    // Held connects are released most of the time before anything else happens.
    std::string op = held_connects_ > 0 && r_.chance(0.7)
                         ? std::string("release_connect")
                         : std::string(kOps[r_.below(std::size(kOps))]);
    // Mostly no handle ops without a handle, no await without an actor.
    const bool needs_handle =
        op == "checkin" || op == "invalidate" || op == "detach" || op == "engine_disconnect";
    if (((needs_handle && held_.empty()) || (op == "await" && actors_.empty())) && r_.chance(0.9)) {
      op = "checkout";
    }
    json s = {{"op", op}};
    if (op == "checkout" || op == "checkout_async") {
      const std::string name =
          r_.chance(0.97) ? "h" + std::to_string(names_.size()) : name_ref(held_);
      names_.push_back(name);
      (op == "checkout" ? held_ : actors_).push_back(name);
      s["as"] = name;
    } else if (op == "await") {
      s["ref"] = name_ref(actors_);
      held_.push_back(s["ref"].get<std::string>());
    } else if (op == "checkin" || op == "invalidate" || op == "detach" ||
               op == "engine_disconnect") {
      const std::string name = name_ref(held_);
      s["ref"] = name;
      if (op == "invalidate" && r_.chance(0.5)) s["soft"] = r_.chance(0.5);
      if (op == "detach" || (op == "invalidate" && s.value("soft", false))) held_.push_back(name);
    } else if (op == "advance") {
      s["seconds"] = seconds();
    } else if (op == "kill" || op == "ping_error" || op == "rollback_error") {
      s["conn"] =
          r_.between(1, std::max<std::int64_t>(1, static_cast<std::int64_t>(names_.size())));
    } else if (op == "fail_connects" || op == "hold_connects") {
      s["count"] = r_.between(0, 2);
      if (op == "hold_connects") held_connects_ += s["count"].get<std::int64_t>();
    } else if (op == "release_connect") {
      if (held_connects_ > 0) --held_connects_;
      if (r_.chance(0.7)) s["outcome"] = r_.chance(0.7) ? "ok" : "fail";
    }
    if (r_.chance(wild_)) s[r_.one_of({"op", "as", "ref", "seconds", "extra"})] = random_value();
    return s;
  }

  json generated_scenario() {
    names_.clear();
    held_.clear();
    actors_.clear();
    held_connects_ = 0;
    json scenario = {{"name", "s"}, {"steps", json::array()}};
    if (r_.chance(0.8)) scenario["pool"] = pool();
    if (r_.chance(0.03)) {  // a long time first: the replay's clocks must not run out of range
      const bool wait = r_.chance(0.5);  // checkouts that wait out a 1e9 s timeout, or advances
      if (wait) scenario["pool"] = {{"pool_size", 0}, {"max_overflow", 0}, {"timeout", 1e9}};
      for (std::size_t i = 0, n = 5 + r_.below(10); i < n; ++i) {
        scenario["steps"].push_back(
            wait ? json{{"op", "checkout"}, {"as", "late" + std::to_string(i)}}
                 : json{{"op", "advance"}, {"seconds", 1e9}});
      }
    }
    const std::size_t steps = r_.below(r_.chance(0.1) ? 100 : 25);
    for (std::size_t i = 0; i < steps; ++i) scenario["steps"].push_back(step());
    return scenario;
  }

  json mutated_corpus_scenario() {
    json scenario = replay_corpus()[r_.below(replay_corpus().size())];
    names_.clear();
    held_.clear();
    actors_.clear();
    held_connects_ = 0;
    json& steps = scenario["steps"];
    if (!steps.is_array()) return scenario;
    for (const json& s : steps) {
      for (const char* key : {"as", "ref"}) {
        if (s.contains(key) && s[key].is_string()) names_.push_back(s[key].get<std::string>());
      }
    }
    for (std::size_t edits = r_.below(4); edits > 0; --edits) {
      const std::size_t at = r_.below(steps.size() + 1);
      switch (r_.below(5)) {
        case 0: steps.insert(steps.begin() + static_cast<std::ptrdiff_t>(at), step()); break;
        case 1:
          if (at < steps.size()) steps.erase(steps.begin() + static_cast<std::ptrdiff_t>(at));
          break;
        case 2:
          if (at < steps.size()) steps.push_back(json(steps[at]));
          break;
        case 3:
          if (scenario.contains("pool") && scenario["pool"].is_object()) {
            const json more = pool();
            for (const auto& [key, value] : more.items()) scenario["pool"][key] = value;
          } else {
            scenario["pool"] = pool();
          }
          break;
        default:
          if (steps.size() >= 2) {
            std::swap(steps[r_.below(steps.size())], steps[r_.below(steps.size())]);
          }
      }
    }
    return scenario;
  }

  // Replaces or removes something anywhere in the document.
  void damage(json& doc) {
    json* node = &doc;
    for (int depth = 0; depth < 4 && (node->is_object() || node->is_array()) && !node->empty();
         ++depth) {
      if (r_.chance(0.3)) break;
      auto it = node->begin();
      std::advance(it, static_cast<std::ptrdiff_t>(r_.below(node->size())));
      node = &*it;
    }
    if (node->is_object() && !node->empty() && r_.chance(0.5)) {
      auto it = node->begin();
      std::advance(it, static_cast<std::ptrdiff_t>(r_.below(node->size())));
      node->erase(it.key());
    } else {
      *node = random_value();
    }
  }

  Rand& r_;
  double wild_ = 0;
  std::vector<std::string> names_;   // every name given so far
  std::vector<std::string> held_;    // names whose handle is probably held
  std::vector<std::string> actors_;  // actors not awaited yet
  std::int64_t held_connects_ = 0;
};

// Sends std::cout and std::cerr to strings while it lives.
class CaptureOutput {
 public:
  CaptureOutput()
      : old_out_(std::cout.rdbuf(out_.rdbuf())), old_err_(std::cerr.rdbuf(err_.rdbuf())) {}
  ~CaptureOutput() {
    std::cout.rdbuf(old_out_);
    std::cerr.rdbuf(old_err_);
  }
  CaptureOutput(const CaptureOutput&) = delete;
  CaptureOutput& operator=(const CaptureOutput&) = delete;
  std::string out() const { return out_.str(); }
  std::string err() const { return err_.str(); }

 private:
  std::ostringstream out_, err_;
  std::streambuf* old_out_;
  std::streambuf* old_err_;
};

struct ReplayTally {
  std::uint64_t replayed = 0;
  std::uint64_t refused = 0;
};

bool fuzz_one_replay(std::uint64_t index, const TempDir& dir, ReplayTally& tally) {
  constexpr const char* kPart = "fuzz.conformance_replay";
  begin_input(kPart, index, "(not generated yet)");
  Rand r(input_seed(Part::kConformance, index));
  ReplayGenerator generator(r);
  const std::string text = generator.generate();
  const std::string compat = r.chance(0.5) ? "1.4" : "2.0";
  begin_input(kPart, index, "--compat " + compat + "\n" + text);
  const auto fail = [&](const std::string& what) {
    ADD_FAILURE() << failure_header(kPart, index) << ":\n"
                  << what << "\nscenario file (escaped), replayed with --compat " << compat << ":\n"
                  << escaped(text);
    return false;
  };
  const std::filesystem::path file = dir.path() / "scenarios.json";
  int status = 0;
  std::string out, err;
  try {
    write_file(file, text);
    std::vector<std::string> args = {"queuepool_conformance", "--compat", compat, file.string()};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const CaptureOutput capture;
    status = queuepool_conformance_main(static_cast<int>(args.size()), argv.data());
    out = capture.out();
    err = capture.err();
  } catch (const std::exception& e) {
    return fail("the replay threw " + exception_text(e));
  }
  if (status == 2) {
    // One line naming what is wrong, nothing on stdout. A message from PoolCore means the
    // replay fed the core an input it refused, or the core broke an invariant: a bug either way.
    const bool one_line = err.size() > 1 && err.find('\n') == err.size() - 1;
    if (!one_line || !out.empty() || err.rfind("queuepool_conformance: ", 0) != 0) {
      return fail("exit status 2 without exactly one line on stderr and nothing on stdout:\n" +
                  escaped(err) + "\nstdout: " + escaped(out.substr(0, 2000)));
    }
    if (err.find("PoolCore:") != std::string::npos) {
      return fail("the replay passed on PoolCore's refusal: " + escaped(err));
    }
    ++tally.refused;
    return true;
  }
  if (status != 0) return fail("exit status " + std::to_string(status) + ": " + escaped(err));
  if (!err.empty()) return fail("exit status 0 with something on stderr: " + escaped(err));
  try {
    const json input = json::parse(text);
    const json traces = json::parse(out);
    if (traces.at("scenarios").size() != input.at("scenarios").size()) {
      return fail("the trace document has another number of scenarios than the input");
    }
  } catch (const json::exception& e) {
    return fail(std::string("exit status 0 but no trace document: ") + e.what());
  }
  ++tally.replayed;
  return true;
}

TEST(Fuzz, ConformanceReplay) {
  install_reporters();
  const auto [first, end] = input_range(Part::kConformance, "fuzz.conformance_replay");
  std::cout << "[ fuzz     ] " << replay_corpus().size()
            << " conformance scenarios to mutate (shipped and the project's)" << std::endl;
  const TempDir dir;
  const Watchdog watchdog;
  ReplayTally tally;
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t failures = 0;
  for (std::uint64_t i = first; i < end && go_on(failures); ++i) {
    if (!fuzz_one_replay(i, dir, tally)) ++failures;
  }
  if (failures > 0) return;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[ fuzz     ] " << end - first << " scenario files replayed in " << seconds
            << " s: " << tally.replayed << " gave traces, " << tally.refused << " refused"
            << std::endl;
  if (end - first >= 1000) {
    EXPECT_GT(tally.replayed, (end - first) / 10) << "too few op scripts get through";
    EXPECT_GT(tally.refused, (end - first) / 10) << "too few op scripts refused";
  }
}

}  // namespace
}  // namespace poolsim

#ifdef POOLSIM_FUZZ_SANITIZED
// A UndefinedBehaviorSanitizer error aborts (so the SIGABRT handler reports the input) and
// prints where it happened.
extern "C" const char* __ubsan_default_options() { return "abort_on_error=1:print_stacktrace=1"; }
#endif
