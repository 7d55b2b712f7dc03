#include "pool_model/pool_config.hpp"

#include <cinttypes>
#include <cstdio>

namespace poolsim {

std::string format_duration(Duration d) {
  const std::int64_t ns = d.count();
  struct Unit {
    std::int64_t ns;
    const char* name;
  };
  static constexpr Unit kUnits[] = {
      {3'600'000'000'000, "h"}, {60'000'000'000, "min"}, {1'000'000'000, "s"},
      {1'000'000, "ms"},        {1'000, "us"},           {1, "ns"}};
  for (const Unit& unit : kUnits) {
    if (ns != 0 && ns % unit.ns == 0) {
      return std::to_string(ns / unit.ns) + unit.name;
    }
  }
  if (ns == 0) return "0s";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9gs", to_seconds(d));
  return buf;
}

std::optional<std::string> validate(const PoolConfig& config) {
  if (config.policy == Policy::kHikari) {
    return "pool.policy = hikari: HikariCP's pool is HikariCore (hikari_core.hpp), not PoolCore";
  }
  if (config.policy == Policy::kPgbouncer) {
    return "pool.policy = pgbouncer: pgbouncer is PgbouncerCore (pgbouncer_core.hpp); the "
           "app's pools in front of it are PoolCores with policy queuepool";
  }
  if (config.policy == Policy::kPsycopg) {
    return "pool.policy = psycopg: psycopg_pool is PsycopgCore (psycopg_core.hpp), not PoolCore";
  }
  if (config.pool_size < 0) {
    return "pool.size = " + std::to_string(config.pool_size) +
           ": must be a whole number >= 0 (0 = no limit on idle connections)";
  }
  if (config.max_overflow < -1) {
    return "pool.max_overflow = " + std::to_string(config.max_overflow) +
           ": must be -1 (unlimited) or a whole number >= 0";
  }
  if (config.recycle && config.recycle->count() < 0) {
    return "pool.recycle = " + format_duration(*config.recycle) +
           ": must be >= 0, or -1 to never recycle";
  }
  return std::nullopt;
}

int effective_max_overflow(const PoolConfig& config) {
  if (config.compat == Compat::kSqlalchemy20 && config.pool_size == 0) return -1;
  return config.max_overflow;
}

std::string timeout_message(const PoolConfig& config, std::int64_t overflow_at_raise) {
  const double seconds = config.timeout ? to_seconds(*config.timeout) : 0.0;
  char buf[160];
  std::snprintf(buf, sizeof buf,
                "QueuePool limit of size %d overflow %" PRId64
                " reached, connection timed out, timeout %0.2f",
                config.pool_size, overflow_at_raise, seconds);
  return buf;
}

}  // namespace poolsim
