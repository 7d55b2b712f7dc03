// Scenario files: INI in Boost.Program_options' config-file syntax ([pool] size = 20), read into
// the key -> value text that make_scenario takes. Shared by the command line and the Python
// package, so both accept and refuse exactly the same files.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace poolsim::sim {

// The file's options ("pool.size" -> "20"). A UTF-8 byte order mark is skipped. Throws
// ScenarioError (one line naming the file, the key and the value) for an unreadable file,
// a syntax error, an unknown key or a key given twice.
std::map<std::string, std::string> read_scenario_file(const std::filesystem::path& file);

// The same for a scenario file's text; `name` stands for the file in messages.
std::map<std::string, std::string> read_scenario_text(const std::string& text,
                                                      const std::string& name);

// A command's options: the file's (when one is given), overridden by `overrides`. *base_dir is
// where relative file names in them (traces, empirical distributions) resolve: the file's
// folder, else the working directory. Shared by the command line and the Python package.
std::map<std::string, std::string> scenario_values(
    const std::optional<std::filesystem::path>& file,
    const std::map<std::string, std::string>& overrides, std::filesystem::path* base_dir);

}  // namespace poolsim::sim
