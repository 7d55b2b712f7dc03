// Scripted tests of PoolCore: pool_core_cases.txt holds one case per "## heading", each a list
// of timed inputs, every input followed by the actions it must produce, in order:
//
//   ## a returned connection is reused (spec §4, §7)
//   config pool_size=2 max_overflow=0
//   0s checkout 1
//      OpenConnection slot=0 request=1
//   0s connected 0 conn=10
//      Grant request=1 slot=0 conn=10
//      status size=2 checkedin=0 checkedout=1 overflow=-1 waiting=0
//
// An input with no action lines must produce no action. `status ...` and `deadline T|none`
// lines check PoolCore::status() and poll_timeout(); `error TEXT` expects the input to be
// refused with a std::logic_error containing TEXT. Invariants are checked after every input.
// Time moves only through the time written on each input; nothing sleeps or starts a thread.
#include "pool_model/pool_core.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace poolsim {
namespace {

struct Step {
  int line = 0;
  std::string input;
  std::vector<std::string> expect;  // action lines, in order
  std::vector<std::string> checks;  // status / deadline / error lines
};

struct Case {
  std::string title;
  int line = 0;
  std::string config;
  std::vector<Step> steps;
};

void PrintTo(const Case& c, std::ostream* out) {
  *out << "pool_core_cases.txt:" << c.line << " \"" << c.title << "\"";
}

std::string trim(const std::string& s) {
  const auto begin = s.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  const auto end = s.find_last_not_of(" \t\r");
  return s.substr(begin, end - begin + 1);
}

std::vector<Case> load_cases() {
  std::ifstream in(POOLSIM_CASES_FILE);
  if (!in) throw std::runtime_error("cannot read " POOLSIM_CASES_FILE);
  std::vector<Case> cases;
  std::string raw;
  int line = 0;
  while (std::getline(in, raw)) {
    ++line;
    const std::string text = trim(raw);
    const bool heading = text.rfind("## ", 0) == 0;
    if (text.empty() || (text[0] == '#' && !heading)) continue;
    if (heading) {
      cases.push_back(Case{text.substr(3), line, "", {}});
      continue;
    }
    if (cases.empty())
      throw std::runtime_error("line " + std::to_string(line) + ": no case heading");
    Case& c = cases.back();
    const bool indented = raw[0] == ' ' || raw[0] == '\t';
    if (!indented && text.rfind("config", 0) == 0) {
      c.config = text.substr(6);
    } else if (!indented) {
      c.steps.push_back(Step{line, text, {}, {}});
    } else {
      if (c.steps.empty())
        throw std::runtime_error("line " + std::to_string(line) + ": expectation before any input");
      const bool check = text.rfind("status ", 0) == 0 || text.rfind("deadline ", 0) == 0 ||
                         text.rfind("error ", 0) == 0;
      (check ? c.steps.back().checks : c.steps.back().expect).push_back(text);
    }
  }
  return cases;
}

Duration parse_duration(const std::string& text) {
  std::size_t pos = 0;
  const double value = std::stod(text, &pos);
  const std::string unit = text.substr(pos);
  double scale = 0;
  if (unit == "s") scale = 1e9;
  if (unit == "ms") scale = 1e6;
  if (unit == "us") scale = 1e3;
  if (unit == "ns") scale = 1;
  if (scale == 0) throw std::runtime_error("bad duration " + text);
  return Duration(static_cast<std::int64_t>(std::llround(value * scale)));
}

PoolConfig parse_config(const std::string& text) {
  PoolConfig config;
  std::istringstream words(text);
  std::string word;
  while (words >> word) {
    const auto eq = word.find('=');
    if (eq == std::string::npos) throw std::runtime_error("bad config word " + word);
    const std::string key = word.substr(0, eq);
    const std::string value = word.substr(eq + 1);
    if (key == "pool_size") {
      config.pool_size = std::stoi(value);
    } else if (key == "max_overflow") {
      config.max_overflow = std::stoi(value);
    } else if (key == "timeout") {
      config.timeout = value == "none" ? std::nullopt : std::optional(parse_duration(value));
    } else if (key == "recycle") {
      config.recycle = parse_duration(value);
    } else if (key == "pre_ping") {
      config.pre_ping = value == "true";
    } else if (key == "order") {
      config.order = value == "lifo" ? QueueOrder::kLifo : QueueOrder::kFifo;
    } else if (key == "reset") {
      config.reset_on_return = value == "commit" ? ResetOnReturn::kCommit
                               : value == "none" ? ResetOnReturn::kNone
                                                 : ResetOnReturn::kRollback;
    } else if (key == "compat") {
      config.compat = value == "1.4" ? Compat::kSqlalchemy14 : Compat::kSqlalchemy20;
    } else if (key == "events") {
      config.events = value == "on" ? PoolEvents::kOn : PoolEvents::kOff;
    } else {
      throw std::runtime_error("unknown config key " + key);
    }
  }
  return config;
}

template <typename Id>
Id id_arg(std::istringstream& in) {
  std::uint64_t value = 0;
  std::string word;
  in >> word;
  const auto eq = word.find('=');
  value = std::stoull(eq == std::string::npos ? word : word.substr(eq + 1));
  return static_cast<Id>(value);
}

// "1.5s checkout 7" -> the instant and the event; "timeout" -> handle_timeout.
struct Input {
  Instant at;
  std::optional<Event> event;  // nullopt: handle_timeout
};

Input parse_input(const std::string& text) {
  std::istringstream in(text);
  std::string when, what;
  in >> when >> what;
  Input input{Instant(parse_duration(when)), std::nullopt};
  auto word = [&in] {
    std::string w;
    in >> w;
    return w;
  };
  if (what == "checkout") {
    input.event = CheckoutRequested{id_arg<RequestId>(in)};
  } else if (what == "connected") {
    const auto slot = id_arg<SlotId>(in);
    input.event = ConnectSucceeded{slot, id_arg<ConnId>(in)};
  } else if (what == "connect_failed") {
    input.event = ConnectFailed{id_arg<SlotId>(in), 7};
  } else if (what == "ping") {
    const auto slot = id_arg<SlotId>(in);
    const std::string outcome = word();
    input.event = PingResult{slot,
                             outcome == "ok"           ? PingOutcome::kOk
                             : outcome == "disconnect" ? PingOutcome::kDisconnect
                                                       : PingOutcome::kError,
                             9};
  } else if (what == "returned") {
    input.event = Returned{id_arg<SlotId>(in)};
  } else if (what == "reset_done") {
    const std::string slot = word();
    std::optional<SlotId> slot_id;
    if (slot != "-") slot_id = static_cast<SlotId>(std::stoul(slot.substr(slot.find('=') + 1)));
    const auto conn = id_arg<ConnId>(in);
    input.event =
        ResetDone{slot_id, conn, word() == "ok" ? ResetOutcome::kOk : ResetOutcome::kFailed};
  } else if (what == "invalidate") {
    const auto slot = id_arg<SlotId>(in);
    input.event = Invalidated{slot, word() == "soft" ? Invalidation::kSoft : Invalidation::kHard};
  } else if (what == "disconnect") {
    input.event = DisconnectDetected{id_arg<SlotId>(in)};
  } else if (what == "detach") {
    input.event = Detached{id_arg<SlotId>(in)};
  } else if (what == "detached_returned") {
    input.event = DetachedReturned{id_arg<ConnId>(in)};
  } else if (what == "pool_invalidated") {
    input.event = PoolInvalidated{};
  } else if (what == "dispose") {
    input.event = Disposed{};
  } else if (what == "wait_expired") {
    input.event = WaitExpired{id_arg<RequestId>(in)};
  } else if (what != "timeout") {
    throw std::runtime_error("unknown input " + what);
  }
  return input;
}

std::string print(const PoolStatus& status) {
  std::ostringstream out;
  out << "status " << status;
  return out.str();
}

std::string print_deadline(std::optional<Instant> deadline) {
  if (!deadline) return "deadline none";
  return "deadline " + format_duration(deadline->time_since_epoch());
}

class ScriptedCase : public testing::TestWithParam<Case> {};

// The driver's two ways to take actions: poll_action() copies each out, take_actions() visits
// each in place (the simulator's). Both must give the same actions in the same order.
std::vector<std::string> take_all(PoolCore& core, bool in_place) {
  std::vector<std::string> actions;
  const auto print_one = [&](const auto& alternative) {
    std::ostringstream out;
    out << Action(alternative);
    actions.push_back(out.str());
  };
  if (in_place) {
    core.take_actions(print_one);
  } else {
    while (auto action = core.poll_action()) std::visit(print_one, *action);
  }
  return actions;
}

void run_case(const Case& c, bool in_place) {
  PoolCore core(parse_config(c.config));
  for (const Step& step : c.steps) {
    SCOPED_TRACE("pool_core_cases.txt:" + std::to_string(step.line) + ": " + step.input);
    const Input input = parse_input(step.input);
    std::string error;
    try {
      if (input.event) {
        core.handle(input.at, *input.event);
      } else {
        core.handle_timeout(input.at);
      }
    } catch (const std::logic_error& e) {
      error = e.what();
    }
    const std::vector<std::string> actions = take_all(core, in_place);
    bool error_expected = false;
    for (const std::string& check : step.checks) {
      if (check.rfind("status ", 0) == 0) {
        EXPECT_EQ(check, print(core.status()));
      } else if (check.rfind("deadline ", 0) == 0) {
        EXPECT_EQ(check, print_deadline(core.poll_timeout()));
      } else {
        error_expected = true;
        EXPECT_NE(error.find(check.substr(6)), std::string::npos)
            << "expected an error containing \"" << check.substr(6) << "\", got \"" << error
            << "\"";
      }
    }
    if (!error_expected) {
      ASSERT_EQ(error, "") << "the input was refused";
      EXPECT_EQ(step.expect, actions);
      core.check_invariants();
    }
  }
}

TEST_P(ScriptedCase, ProducesTheScriptedActions) { run_case(GetParam(), false); }
TEST_P(ScriptedCase, ProducesTheScriptedActionsTakenInPlace) { run_case(GetParam(), true); }

// take_actions() visits each action where it lies, so a visitor that feeds the same core (and so
// adds actions to the queue it is reading) is refused, not left with a dangling reference.
TEST(PoolCore, RefusesToBeFedFromItsOwnTakeActions) {
  PoolConfig config;
  config.pool_size = 2;
  PoolCore core(config);
  core.handle(Instant{}, CheckoutRequested{RequestId{1}});
  std::vector<std::string> seen;
  EXPECT_THROW(core.take_actions([&](const auto&) {
    seen.push_back("visited");
    core.handle(Instant{}, CheckoutRequested{RequestId{2}});
  }),
               std::logic_error);
  EXPECT_EQ(seen.size(), 1u);
  // The action being visited was taken all the same.
  EXPECT_FALSE(core.poll_action().has_value());
}

std::string case_name(const testing::TestParamInfo<Case>& info) {
  std::string name;
  for (char ch : info.param.title) {
    if (std::isalnum(static_cast<unsigned char>(ch))) {
      name += ch;
    } else if (!name.empty() && name.back() != '_') {
      name += '_';
    }
    if (ch == '(') break;
  }
  while (!name.empty() && name.back() == '_') name.pop_back();
  return std::to_string(info.index) + "_" + name;
}

INSTANTIATE_TEST_SUITE_P(PoolCoreCases, ScriptedCase, testing::ValuesIn(load_cases()), case_name);

TEST(PoolConfig, RefusesWhatSqlalchemyCannotRun) {
  PoolConfig config;
  config.pool_size = -1;
  EXPECT_EQ(validate(config),
            "pool.size = -1: must be a whole number >= 0 (0 = no limit on idle connections)");
  EXPECT_THROW(PoolCore{config}, std::invalid_argument);
  config = PoolConfig{};
  config.max_overflow = -2;
  EXPECT_EQ(validate(config),
            "pool.max_overflow = -2: must be -1 (unlimited) or a whole number >= 0");
  config = PoolConfig{};
  config.recycle = std::chrono::milliseconds(-5);
  EXPECT_EQ(validate(config), "pool.recycle = -5ms: must be >= 0, or -1 to never recycle");
  EXPECT_EQ(validate(PoolConfig{}), std::nullopt);
}

TEST(PoolConfig, TimeoutMessageIsSqlalchemys) {
  PoolConfig config;
  config.pool_size = 1;
  config.timeout = std::chrono::milliseconds(50);
  EXPECT_EQ(timeout_message(config, 1),
            "QueuePool limit of size 1 overflow 1 reached, connection timed out, timeout 0.05");
  config.timeout = Duration(0);
  EXPECT_EQ(timeout_message(config, 0),
            "QueuePool limit of size 1 overflow 0 reached, connection timed out, timeout 0.00");
}

TEST(PoolConfig, FormatsDurationsAsUsersWriteThem) {
  EXPECT_EQ(format_duration(std::chrono::seconds(30)), "30s");
  EXPECT_EQ(format_duration(std::chrono::milliseconds(250)), "250ms");
  EXPECT_EQ(format_duration(std::chrono::minutes(10)), "10min");
  EXPECT_EQ(format_duration(Duration(0)), "0s");
  EXPECT_EQ(format_duration(std::chrono::microseconds(-5)), "-5us");
}

}  // namespace
}  // namespace poolsim
