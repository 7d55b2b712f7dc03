#include "pool_model/events.hpp"

#include <ostream>

namespace poolsim {
namespace {

template <typename Id>
std::ostream& print_id(std::ostream& out, const char* name, Id id) {
  return out << ' ' << name << '=' << static_cast<std::uint64_t>(id);
}

template <typename Id>
std::ostream& print_id(std::ostream& out, const char* name, const std::optional<Id>& id) {
  if (id) print_id(out, name, *id);
  return out;
}

const char* to_string(PingOutcome outcome) {
  switch (outcome) {
    case PingOutcome::kOk: return "ok";
    case PingOutcome::kDisconnect: return "disconnect";
    case PingOutcome::kError: return "error";
  }
  return "?";
}

}  // namespace

const char* to_string(PoolEvent event) {
  switch (event) {
    case PoolEvent::kFirstConnect: return "first_connect";
    case PoolEvent::kConnect: return "connect";
    case PoolEvent::kCheckout: return "checkout";
    case PoolEvent::kCheckin: return "checkin";
    case PoolEvent::kReset: return "reset";
    case PoolEvent::kInvalidate: return "invalidate";
    case PoolEvent::kSoftInvalidate: return "soft_invalidate";
    case PoolEvent::kClose: return "close";
    case PoolEvent::kDetach: return "detach";
    case PoolEvent::kCloseDetached: return "close_detached";
  }
  return "?";
}

const char* to_string(Failure failure) {
  switch (failure) {
    case Failure::kTimeout: return "timeout";
    case Failure::kConnectFailed: return "connect_failed";
    case Failure::kPingError: return "ping_error";
    case Failure::kNegativeTimeout: return "negative_timeout";
    case Failure::kTooManyRequests: return "too_many_requests";
  }
  return "?";
}

const char* to_string(InvalidateReason reason) {
  switch (reason) {
    case InvalidateReason::kExplicit: return "explicit";
    case InvalidateReason::kPrePingDisconnect: return "pre_ping_disconnect";
    case InvalidateReason::kPingError: return "ping_error";
    case InvalidateReason::kDisconnect: return "disconnect";
    case InvalidateReason::kResetFailed: return "reset_failed";
  }
  return "?";
}

std::ostream& operator<<(std::ostream& out, const Event& event) {
  std::visit(
      [&out](const auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, CheckoutRequested>) {
          print_id(out << "CheckoutRequested", "request", e.request);
        } else if constexpr (std::is_same_v<T, ConnectSucceeded>) {
          print_id(print_id(out << "ConnectSucceeded", "slot", e.slot), "conn", e.conn);
        } else if constexpr (std::is_same_v<T, ConnectFailed>) {
          print_id(out << "ConnectFailed", "slot", e.slot) << " cause=" << e.cause;
        } else if constexpr (std::is_same_v<T, PingResult>) {
          print_id(out << "PingResult", "slot", e.slot) << ' ' << to_string(e.outcome);
        } else if constexpr (std::is_same_v<T, Returned>) {
          print_id(out << "Returned", "slot", e.slot);
        } else if constexpr (std::is_same_v<T, ResetDone>) {
          print_id(print_id(out << "ResetDone", "slot", e.slot), "conn", e.conn)
              << (e.outcome == ResetOutcome::kOk ? " ok" : " failed");
        } else if constexpr (std::is_same_v<T, Invalidated>) {
          print_id(out << "Invalidated", "slot", e.slot)
              << (e.kind == Invalidation::kSoft ? " soft" : " hard");
        } else if constexpr (std::is_same_v<T, DisconnectDetected>) {
          print_id(out << "DisconnectDetected", "slot", e.slot);
        } else if constexpr (std::is_same_v<T, Detached>) {
          print_id(out << "Detached", "slot", e.slot);
        } else if constexpr (std::is_same_v<T, DetachedReturned>) {
          print_id(out << "DetachedReturned", "conn", e.conn);
        } else if constexpr (std::is_same_v<T, PoolInvalidated>) {
          out << "PoolInvalidated";
        } else if constexpr (std::is_same_v<T, Disposed>) {
          out << "Disposed";
        } else {
          static_assert(std::is_same_v<T, WaitExpired>);
          print_id(out << "WaitExpired", "request", e.request);
        }
      },
      event);
  return out;
}

std::ostream& operator<<(std::ostream& out, const Action& action) {
  std::visit(
      [&out](const auto& a) {
        using T = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<T, OpenConnection>) {
          print_id(print_id(out << "OpenConnection", "slot", a.slot), "request", a.request);
        } else if constexpr (std::is_same_v<T, CloseConnection>) {
          print_id(print_id(out << "CloseConnection", "conn", a.conn)
                       << (a.kind == CloseKind::kClose ? " close" : " terminate"),
                   "by", a.by);
        } else if constexpr (std::is_same_v<T, Ping>) {
          print_id(print_id(print_id(out << "Ping", "slot", a.slot), "conn", a.conn), "request",
                   a.request);
        } else if constexpr (std::is_same_v<T, Reset>) {
          print_id(print_id(out << "Reset", "slot", a.slot), "conn", a.conn)
              << (a.kind == ResetKind::kRollback ? " rollback" : " commit");
        } else if constexpr (std::is_same_v<T, Grant>) {
          print_id(print_id(print_id(out << "Grant", "request", a.request), "slot", a.slot), "conn",
                   a.conn);
        } else if constexpr (std::is_same_v<T, Fail>) {
          print_id(out << "Fail", "request", a.request)
              << ' ' << to_string(a.failure) << " cause=" << a.cause << " overflow=" << a.overflow;
        } else {
          static_assert(std::is_same_v<T, Notify>);
          out << "Notify " << to_string(a.event);
          print_id(print_id(out, "conn", a.conn), "record", a.record);
          if (a.reason) out << " reason=" << to_string(*a.reason);
          print_id(out, "by", a.by);
        }
      },
      action);
  return out;
}

}  // namespace poolsim
