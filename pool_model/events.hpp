// What a driver tells the pool core (Event) and what the core asks the driver to do (Action).
//
// Inputs are named for what happened, outputs for what the driver must do. Expected outcomes
// (a timeout, a failed connect) are actions, never exceptions. Drivers std::visit both with one
// lambda per alternative and no catch-all, so a new alternative fails to compile until every
// driver handles it.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <variant>

namespace poolsim {

// A checkout request, named by the driver. A request is answered exactly once: Grant or Fail.
enum class RequestId : std::uint64_t {};
// A live database connection, named by the driver when its connect succeeds.
enum class ConnId : std::uint64_t {};
// A pool slot (SQLAlchemy's _ConnectionRecord): a container for at most one connection that
// outlives invalidation. Slot ids are reused once a slot is discarded.
enum class SlotId : std::uint32_t {};
// The serial number of a record, never reused: lets traces name records as SQLAlchemy does.
enum class RecordId : std::uint64_t {};

enum class PingOutcome { kOk, kDisconnect, kError };
enum class ResetOutcome { kOk, kFailed };
enum class ResetKind { kRollback, kCommit };
enum class CloseKind { kClose, kTerminate };  // DBAPI close() vs dialect do_terminate()
enum class Invalidation { kHard, kSoft };

// Why a connection was invalidated; traces show it as the exception SQLAlchemy passes.
enum class InvalidateReason {
  kExplicit,           // handle.invalidate(): no exception
  kPrePingDisconnect,  // InvalidatePoolError
  kPingError,          // the non-disconnect ping error (ProgrammingError)
  kDisconnect,         // the Engine saw a disconnect error (OperationalError)
  kResetFailed,        // the reset-on-return rollback raised (OperationalError)
};

enum class Failure {
  kTimeout,          // TimeoutError: the pool stayed exhausted for pool.timeout
  kConnectFailed,    // the connect attempt failed; its cause is the driver's
  kPingError,        // pre-ping raised an error that is not a disconnect
  kNegativeTimeout,  // ValueError: a checkout at the limit with a negative pool.timeout
  kTooManyRequests,  // psycopg_pool's TooManyRequests: max_waiting clients already wait
};

// SQLAlchemy's PoolEvents, reported as Notify actions when PoolConfig::events is on.
enum class PoolEvent {
  kFirstConnect,
  kConnect,
  kCheckout,
  kCheckin,
  kReset,
  kInvalidate,
  kSoftInvalidate,
  kClose,
  kDetach,
  kCloseDetached,
};

// ---- events: what happened ----------------------------------------------------------------

struct CheckoutRequested {
  RequestId request;
  bool operator==(const CheckoutRequested&) const = default;
};
struct ConnectSucceeded {
  SlotId slot;
  ConnId conn;
  bool operator==(const ConnectSucceeded&) const = default;
};
struct ConnectFailed {
  SlotId slot;
  int cause = 0;  // driver-defined, handed back in Fail
  bool operator==(const ConnectFailed&) const = default;
};
struct PingResult {
  SlotId slot;
  PingOutcome outcome;
  int cause = 0;
  bool operator==(const PingResult&) const = default;
};
// The holder of a granted slot checked it back in (reset-on-return follows).
struct Returned {
  SlotId slot;
  bool operator==(const Returned&) const = default;
};
// The reset asked for by a Reset action finished. slot is empty for a detached connection.
struct ResetDone {
  std::optional<SlotId> slot;
  ConnId conn;
  ResetOutcome outcome;
  bool operator==(const ResetDone&) const = default;
};
// handle.invalidate(soft=...) by the holder of a granted slot.
struct Invalidated {
  SlotId slot;
  Invalidation kind = Invalidation::kHard;
  bool operator==(const Invalidated&) const = default;
};
// A statement on a granted slot failed with a disconnect error: SQLAlchemy's Engine
// invalidates the whole pool (every older connection is recycled at its next checkout) and
// the connection itself.
struct DisconnectDetected {
  SlotId slot;
  bool operator==(const DisconnectDetected&) const = default;
};
// handle.detach(): the slot goes back empty, the holder keeps the connection outside the pool.
struct Detached {
  SlotId slot;
  bool operator==(const Detached&) const = default;
};
// A detached connection's handle was closed: it is reset and closed.
struct DetachedReturned {
  ConnId conn;
  bool operator==(const DetachedReturned&) const = default;
};
// pool._invalidate() with no record (e.g. a disconnect on a detached handle): every
// connection started before now is recycled at its next checkout.
struct PoolInvalidated {
  bool operator==(const PoolInvalidated&) const = default;
};
// pool.dispose(): close idle connections, reset the overflow counter.
struct Disposed {
  bool operator==(const Disposed&) const = default;
};
// The driver's own timer for this waiter fired: run the wait's deadline path now. For drivers
// that keep one timer per waiter; others call handle_timeout().
struct WaitExpired {
  RequestId request;
  bool operator==(const WaitExpired&) const = default;
};

using Event = std::variant<CheckoutRequested, ConnectSucceeded, ConnectFailed, PingResult, Returned,
                           ResetDone, Invalidated, DisconnectDetected, Detached, DetachedReturned,
                           PoolInvalidated, Disposed, WaitExpired>;

// ---- actions: what the driver must do -------------------------------------------------------

// Open a connection for this slot, on behalf of request; answer ConnectSucceeded/Failed.
// No request: the pool's own background work (HikariCP's connection adder filling the pool).
struct OpenConnection {
  SlotId slot;
  std::optional<RequestId> request;
  bool operator==(const OpenConnection&) const = default;
};
// Close a connection; nothing to answer. `by` names the request whose checkout caused it.
struct CloseConnection {
  ConnId conn;
  CloseKind kind;
  std::optional<RequestId> by;
  bool operator==(const CloseConnection&) const = default;
};
// Run the pre-ping round trip; answer PingResult. No request: a keepalive of an idle
// connection (HikariCP's keepaliveTime), which stays idle if it answers.
struct Ping {
  SlotId slot;
  ConnId conn;
  std::optional<RequestId> request;
  bool operator==(const Ping&) const = default;
};
// Run reset-on-return (ROLLBACK or COMMIT); answer ResetDone with the same slot and conn.
struct Reset {
  std::optional<SlotId> slot;
  ConnId conn;
  ResetKind kind;
  bool operator==(const Reset&) const = default;
};
// The request has this slot's connection until it sends Returned (or Invalidated, Detached...).
struct Grant {
  RequestId request;
  SlotId slot;
  ConnId conn;
  bool operator==(const Grant&) const = default;
};
// The request failed. For kTimeout, overflow is the pool's overflow() at raise time (it is in
// SQLAlchemy's message); for kConnectFailed and kPingError, cause is the driver's.
struct Fail {
  RequestId request;
  Failure failure;
  int cause = 0;
  std::int64_t overflow = 0;
  bool operator==(const Fail&) const = default;
};
// A SQLAlchemy pool event, for traces (only with PoolConfig::events on).
struct Notify {
  PoolEvent event;
  std::optional<ConnId> conn;
  std::optional<RecordId> record;
  std::optional<InvalidateReason> reason;
  std::optional<RequestId> by;
  bool operator==(const Notify&) const = default;
};

using Action = std::variant<OpenConnection, CloseConnection, Ping, Reset, Grant, Fail, Notify>;

// Readable one-line forms, for scripted tests and debugging: "Grant request=3 slot=0 conn=7".
std::ostream& operator<<(std::ostream& out, const Event& event);
std::ostream& operator<<(std::ostream& out, const Action& action);
const char* to_string(PoolEvent event);
const char* to_string(Failure failure);
const char* to_string(InvalidateReason reason);

}  // namespace poolsim
