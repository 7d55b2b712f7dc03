// The conformance replay (tests/pool_model/queuepool_conformance.cpp) compiled into the fuzz
// test with its main() renamed queuepool_conformance_main, so fuzz_test.cpp can feed it JSON op
// scripts in-process: a process per input would be far too slow. Its headers come first, so the
// macro below renames nothing but the replay's own main().
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "pool_model/overloaded.hpp"
#include "pool_model/pool_core.hpp"

int queuepool_conformance_main(int argc, char** argv);

#define main queuepool_conformance_main
#include "tests/pool_model/queuepool_conformance.cpp"
#undef main
