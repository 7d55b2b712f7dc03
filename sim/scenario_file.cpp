#include "sim/scenario_file.hpp"

#include <boost/program_options.hpp>
#include <fstream>
#include <iterator>
#include <sstream>

#include "sim/scenario.hpp"

namespace po = boost::program_options;

namespace poolsim::sim {

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
