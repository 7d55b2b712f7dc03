# Compiler settings shared by every poolsim target: C++20, the warning set of STYLE.md, and the
# optional -Werror and sanitizer builds (ASan + UBSan, or TSan). Targets link poolsim::build_flags.
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
set(CMAKE_EXPORT_COMPILE_COMMANDS ON)
if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
endif()
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/bin")

add_library(poolsim_build_flags INTERFACE)
add_library(poolsim::build_flags ALIAS poolsim_build_flags)
target_compile_options(poolsim_build_flags INTERFACE
  -Wall -Wextra -Wpedantic -Wconversion -Wshadow
  $<$<BOOL:${POOLSIM_WERROR}>:-Werror>)
# The libraries are built position-independent when the Python module links them, and GCC then
# assumes any exported function may be replaced at load time (semantic interposition), so it
# stops inlining PoolCore's functions into each other. Nothing in poolsim is meant to be
# interposed: this gives the inlining of a non-PIC build back.
target_compile_options(poolsim_build_flags INTERFACE
  $<$<CXX_COMPILER_ID:GNU>:-fno-semantic-interposition>)
if(POOLSIM_SANITIZERS AND POOLSIM_TSAN)
  # ThreadSanitizer cannot share a process with AddressSanitizer: two builds, two directories.
  message(FATAL_ERROR "POOLSIM_TSAN and POOLSIM_SANITIZERS are mutually exclusive: "
                      "configure a separate build directory for each")
endif()
if(POOLSIM_SANITIZERS)
  target_compile_options(poolsim_build_flags INTERFACE
    -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  target_link_options(poolsim_build_flags INTERFACE -fsanitize=address,undefined)
endif()
if(POOLSIM_TSAN)
  # Data races make a test fail: a TSan report ends the process with exit code 66
  # (scripts/test.sh also sets TSAN_OPTIONS=halt_on_error=1).
  target_compile_options(poolsim_build_flags INTERFACE -fsanitize=thread -fno-omit-frame-pointer)
  target_link_options(poolsim_build_flags INTERFACE -fsanitize=thread)
endif()
