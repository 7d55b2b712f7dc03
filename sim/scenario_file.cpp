#include "sim/scenario_file.hpp"

#include <boost/program_options.hpp>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>

#include "sim/scenario.hpp"

namespace po = boost::program_options;

namespace poolsim::sim {
namespace {

// The offset of the first byte that is not UTF-8 text (a NUL, or a malformed sequence), or npos.
std::size_t first_binary_byte(const std::string& text) {
  for (std::size_t i = 0; i < text.size();) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte == 0) return i;
    const std::size_t length = byte < 0x80 ? 1 : byte >= 0xC2 && byte < 0xE0 ? 2
                               : byte >= 0xE0 && byte < 0xF0              ? 3
                               : byte >= 0xF0 && byte < 0xF5              ? 4
                                                                          : 0;
    if (length == 0 || i + length > text.size()) return i;
    for (std::size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return i;
    }
    i += length;
  }
  return std::string::npos;
}

// A line of the user's file, quoted in an error: control characters escaped, at most 40 bytes.
std::string quoted(const std::string& line) {
  std::string out = "'";
  for (std::size_t i = 0; i < line.size() && i < 40; ++i) {
    const auto ch = static_cast<unsigned char>(line[i]);
    if (ch < 0x20 || ch == 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", ch);
      out += escaped;
    } else {
      out += line[i];
    }
  }
  return out + (line.size() > 40 ? "...'" : "'");
}

// What Boost's parser would refuse, said with the line number and what a line may be; Boost's
// own message names neither. Also refuses a file with no option at all (an empty file is more
// likely a wrong file than a wish for every default).
void check_lines(const std::string& text, const std::string& name) {
  if (const std::size_t at = first_binary_byte(text); at != std::string::npos) {
    throw ScenarioError(name + ": not a text file (byte " + std::to_string(at) +
                        " is not UTF-8 text); a scenario file is INI text: [section] lines and "
                        "key = value lines");
  }
  std::istringstream lines(text);
  bool any_option = false;
  int number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++number;
    const std::string raw = line;
    line = line.substr(0, line.find('#'));
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos) continue;
    line = line.substr(first, line.find_last_not_of(" \t\r") - first + 1);
    const bool section = line.front() == '[';
    if (section ? line.back() == ']' : line.find('=') != std::string::npos) {
      any_option = any_option || !section;
      continue;
    }
    throw ScenarioError(name + ": line " + std::to_string(number) + " " + quoted(raw) +
                        (section ? " opens a [section] without closing it with ]"
                                 : " is neither a [section] line nor a key = value line"));
  }
  if (!any_option) {
    throw ScenarioError(name + ": no key = value line in the scenario file (run without a file "
                        "for the defaults)");
  }
}

}  // namespace

std::map<std::string, std::string> read_scenario_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::error_code ignored;
  if (!in || std::filesystem::is_directory(file, ignored)) {
    throw ScenarioError(file.string() + ": cannot read the scenario file");
  }
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return read_scenario_text(text, file.string());
}

std::map<std::string, std::string> read_scenario_text(const std::string& file_text,
                                                      const std::string& name) {
  std::string text = file_text;
  if (text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);  // a UTF-8 byte order mark
  check_lines(text, name);
  po::options_description known;
  for (const OptionInfo& o : kOptions) known.add_options()(o.key, po::value<std::string>(), "");
  std::istringstream stream(text);
  po::parsed_options parsed(nullptr);
  try {
    parsed = po::parse_config_file(stream, known, true);
  } catch (const po::error& e) {
    throw ScenarioError(name + ": " + e.what());
  }
  std::map<std::string, std::string> values;
  for (const po::option& o : parsed.options) {
    const std::string value = o.value.empty() ? "" : o.value.front();
    if (o.unregistered) {
      throw ScenarioError(name + ": " + o.string_key + " = " + value +
                          ": unknown option (see poolsim --help)");
    }
    if (values.count(o.string_key)) {
      throw ScenarioError(name + ": " + o.string_key + " is given twice");
    }
    values[o.string_key] = value;
  }
  return values;
}

std::map<std::string, std::string> scenario_values(
    const std::optional<std::filesystem::path>& file,
    const std::map<std::string, std::string>& overrides, std::filesystem::path* base_dir) {
  std::map<std::string, std::string> values;
  *base_dir = std::filesystem::current_path();
  if (file) {
    *base_dir = std::filesystem::absolute(*file).parent_path();
    values = read_scenario_file(*file);
  }
  for (const auto& [key, value] : overrides) values[key] = value;
  return values;
}

}  // namespace poolsim::sim
