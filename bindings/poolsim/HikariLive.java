// The live driver behind poolsim.hikari_live: a poolsim schedule through the real HikariCP
// (Debian 12's libhikaricp-java 2.7.9 with libpostgresql-jdbc-java 42.5.5) on PostgreSQL.
//
// Input on stdin (the password comes this way, never on the command line): lines key=value,
// then a line "schedule" and one line "arrival_s,hold_s" per request. Keys: url (a JDBC URL
// without credentials), user, password, application_name, options (libpq session options, may
// be empty), sslmode (may be empty), pools, threads (0 = no cap), maximum_pool_size,
// minimum_idle, connection_timeout_ms (0 = wait forever), idle_timeout_ms, max_lifetime_ms,
// auto_commit (true|false), connect_delay_ms, window_end_s, probes.
//
// Output on stdout, one CSV line each, first field the kind:
//   driver,HIKARI_VERSION,JDBC_DRIVER_VERSION,JAVA_VERSION
//   probe_connect,MS | probe_ping,MS | probe_statement,MS     (measured before the run; the
//                                     statement's: a request's cost beyond its hold, queued)
//   request,I,OUTCOME,WAIT_MS,LATENCY_MS                          (OUTCOME: poolsim's 0-4)
//   sample,T_S,TOTAL,ACTIVE,IDLE,WAITING,SERVER,OPENED            (every 50 ms, all pools)
//   end,T_S,TOTAL,OPENED                                          (before the pools close)
// A failure prints "error,KIND,MESSAGE" (KIND: connect when the database cannot be reached,
// bug otherwise) and exits with status 3.
//
// Time 0 is when the pools are created (new HikariDataSource, whose constructor makes the first
// connection: the simulated pool starts that connect at 0 too); a request due before its pool
// exists waits for it, and that wait is part of its wait. Each request is released at its
// planned instant on a new thread of its own (open loop; the thread is started 100 ms ahead and
// waits for the instant). A new thread has an empty ConcurrentBag thread-local list, so every
// borrow scans the shared list, as the model assumes.
//
// Connections come from ConnectSource, a DataSource around DriverManager (what HikariCP's own
// DriverDataSource is) that counts the connections it made and, with connect_delay_ms, waits
// that long before each connect: a slow server's connect as HikariCP's adder thread sees it.
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import com.zaxxer.hikari.HikariPoolMXBean;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.SQLFeatureNotSupportedException;
import java.sql.SQLTransientConnectionException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.jar.JarFile;
import java.util.logging.Logger;
import javax.sql.DataSource;

public final class HikariLive {
  // poolsim's outcome codes (sim::Samples::Outcome, _core.live_result).
  static final int COMPLETED = 0, TIMEOUT = 1, CONNECT_FAILED = 2, TOO_MANY = 3, DISCONNECT = 4;
  static final long SAMPLE_EVERY_NS = 50_000_000L;
  // A request's thread is started this long before it is due and waits for its instant, so
  // that requests due together are released together, not one thread start after another.
  static final long THREAD_LEAD_NS = 100_000_000L;
  static final int PROBE_CONNECTIONS = 2, PROBE_THREADS = 8;

  /** A DataSource that counts its connects and can make each one slower. */
  public static final class ConnectSource implements DataSource {
    private final String url;
    private final Properties properties;
    private final long delayMs;
    final AtomicLong opened = new AtomicLong();

    ConnectSource(String url, Properties properties, long delayMs) {
      this.url = url;
      this.properties = properties;
      this.delayMs = delayMs;
    }

    @Override
    public Connection getConnection() throws SQLException {
      if (delayMs > 0) {
        try {
          Thread.sleep(delayMs);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          throw new SQLException("interrupted during the connect delay", "08001", e);
        }
      }
      final Connection connection = DriverManager.getConnection(url, properties);
      // A new backend's first statement loads its catalog caches (milliseconds of server CPU,
      // and five at once saturate two cores): a one-time cost of each connection, so it is
      // paid here, as part of the connect, where the model puts every such cost.
      try (Statement statement = connection.createStatement()) {
        statement.execute("SELECT pg_sleep(0)");
      } catch (SQLException e) {
        connection.close();
        throw e;
      }
      opened.incrementAndGet();
      return connection;
    }

    @Override
    public Connection getConnection(String user, String password) throws SQLException {
      throw new SQLFeatureNotSupportedException("the credentials are the source's own");
    }

    // HikariCP sets the login timeout here, as its DriverDataSource passes it to DriverManager.
    @Override
    public void setLoginTimeout(int seconds) {
      DriverManager.setLoginTimeout(seconds);
    }

    @Override
    public int getLoginTimeout() {
      return DriverManager.getLoginTimeout();
    }

    @Override
    public PrintWriter getLogWriter() {
      return null;
    }

    @Override
    public void setLogWriter(PrintWriter out) {}

    @Override
    public Logger getParentLogger() throws SQLFeatureNotSupportedException {
      throw new SQLFeatureNotSupportedException();
    }

    @Override
    public <T> T unwrap(Class<T> type) throws SQLException {
      throw new SQLException("not a wrapper");
    }

    @Override
    public boolean isWrapperFor(Class<?> type) {
      return false;
    }
  }

  static final class Failure extends Exception {
    private static final long serialVersionUID = 1L;
    final String kind;

    Failure(String kind, String message) {
      super(message);
      this.kind = kind;
    }
  }

  private final Map<String, String> settings;
  private final double[] arrival;
  private final double[] hold;
  private final int[] outcome;
  private final double[] waitMs;
  private final double[] latencyMs;
  private final List<String> samples = new ArrayList<>();
  private final List<Throwable> bugs = new ArrayList<>();

  private HikariLive(Map<String, String> settings, double[] arrival, double[] hold) {
    this.settings = settings;
    this.arrival = arrival;
    this.hold = hold;
    outcome = new int[arrival.length];
    waitMs = new double[arrival.length];
    latencyMs = new double[arrival.length];
  }

  public static void main(String[] args) throws Exception {
    final Map<String, String> settings = new HashMap<>();
    final List<double[]> schedule = new ArrayList<>();
    try (BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
      boolean inSchedule = false;
      for (String line = in.readLine(); line != null; line = in.readLine()) {
        if (inSchedule) {
          final String[] fields = line.split(",");
          schedule.add(new double[] {Double.parseDouble(fields[0]), Double.parseDouble(fields[1])});
        } else if (line.equals("schedule")) {
          inSchedule = true;
        } else {
          final int eq = line.indexOf('=');
          settings.put(line.substring(0, eq), line.substring(eq + 1));
        }
      }
    }
    final double[] arrival = new double[schedule.size()];
    final double[] hold = new double[schedule.size()];
    for (int i = 0; i < arrival.length; ++i) {
      arrival[i] = schedule.get(i)[0];
      hold[i] = schedule.get(i)[1];
    }
    final StringBuilder out = new StringBuilder();
    int status = 0;
    try {
      new HikariLive(settings, arrival, hold).run(out);
    } catch (Failure e) {
      out.append("error,").append(e.kind).append(',').append(oneLine(e.getMessage())).append('\n');
      status = 3;
    } catch (Throwable e) {
      out.append("error,bug,").append(oneLine(e.toString())).append('\n');
      status = 3;
    }
    System.out.print(out);
    System.out.flush();
    System.exit(status);
  }

  private static String oneLine(String text) {
    return text == null ? "" : text.replace('\n', ' ').replace('\r', ' ');
  }

  private String setting(String key) {
    final String value = settings.get(key);
    if (value == null) throw new IllegalArgumentException("setting " + key + " is missing");
    return value;
  }

  private int integer(String key) {
    return Integer.parseInt(setting(key));
  }

  private long number(String key) {
    return Long.parseLong(setting(key));
  }

  private Properties properties(String applicationName) {
    final Properties p = new Properties();
    p.setProperty("user", setting("user"));
    if (!setting("password").isEmpty()) p.setProperty("password", setting("password"));
    p.setProperty("ApplicationName", applicationName);
    if (!setting("options").isEmpty()) p.setProperty("options", setting("options"));
    if (!setting("sslmode").isEmpty()) p.setProperty("sslmode", setting("sslmode"));
    return p;
  }

  private HikariConfig poolConfig(ConnectSource source, String name) {
    final HikariConfig c = new HikariConfig();
    c.setDataSource(source);
    c.setPoolName(name);
    c.setMaximumPoolSize(integer("maximum_pool_size"));
    c.setMinimumIdle(integer("minimum_idle"));
    c.setConnectionTimeout(number("connection_timeout_ms"));
    c.setIdleTimeout(number("idle_timeout_ms"));
    c.setMaxLifetime(number("max_lifetime_ms"));
    c.setAutoCommit(Boolean.parseBoolean(setting("auto_commit")));
    return c;
  }

  // HikariConfig.validateNumerics() quietly replaces some values; poolsim refuses those before
  // the run, so a value changed here is a mismatch between the two and must not go unnoticed.
  private void checkApplied(HikariDataSource ds) throws Failure {
    final long timeout = number("connection_timeout_ms");
    final boolean same = ds.getMaximumPoolSize() == integer("maximum_pool_size")
        && ds.getMinimumIdle() == integer("minimum_idle")
        && ds.getConnectionTimeout() == (timeout == 0 ? Integer.MAX_VALUE : timeout)
        && ds.getMaxLifetime() == number("max_lifetime_ms")
        && (ds.getMinimumIdle() == ds.getMaximumPoolSize()
            || ds.getIdleTimeout() == number("idle_timeout_ms"));
    if (!same) {
      throw new Failure("bug", "HikariCP changed a setting: maximumPoolSize "
          + ds.getMaximumPoolSize() + ", minimumIdle " + ds.getMinimumIdle()
          + ", connectionTimeout " + ds.getConnectionTimeout() + ", idleTimeout "
          + ds.getIdleTimeout() + ", maxLifetime " + ds.getMaxLifetime());
    }
  }

  private static void parkUntil(long deadline) {
    for (long rest = deadline - System.nanoTime(); rest > 0; rest = deadline - System.nanoTime()) {
      LockSupport.parkNanos(rest);
    }
  }

  private static double nsToMs(long ns) {
    return ns / 1e6;
  }

  // Before the run, on connections of their own: what a connect costs (with the delay), a
  // ping (HikariCP's isConnectionAlive is Connection.isValid), and a request beyond its hold
  // when requests queue for connections (the statement's round trip, close(), the hand-off to
  // the next waiting thread). Untimed connects, statements and requests first warm up the JVM
  // (class loading, the JIT: a cold JVM's first connect takes ten times as long), so that the
  // run's first requests and connects do not pay for it.
  private void probe(StringBuilder out, String url, String app) throws Failure {
    final ConnectSource warm = new ConnectSource(url, properties(app + "_probe"), 0);
    final ConnectSource timed =
        new ConnectSource(url, properties(app + "_probe"), number("connect_delay_ms"));
    try {
      for (int i = 0; i < 12; ++i) {
        try (Connection c = warm.getConnection()) {
          if (i > 0) continue;
          out.append("driver,").append(hikariVersion()).append(',')
              .append(c.getMetaData().getDriverVersion()).append(',')
              .append(System.getProperty("java.version")).append('\n');
        }
      }
      try (Connection c = warm.getConnection()) {
        for (int i = 0; i < 300; ++i) {
          final long start = System.nanoTime();
          c.isValid(5);
          if (i < 250) continue;
          out.append("probe_ping,").append(nsToMs(System.nanoTime() - start)).append('\n');
        }
      }
      for (int i = 0; i < integer("probes"); ++i) {
        final long start = System.nanoTime();
        timed.getConnection().close();
        out.append("probe_connect,").append(nsToMs(System.nanoTime() - start)).append('\n');
      }
    } catch (SQLException e) {
      throw new Failure("connect", e.getMessage());
    }
    // More threads than connections, so that waiting, the hand-off and the adder's tasks are
    // exercised too; the holds are the schedule's own (at most 20 ms each, to bound the time).
    final HikariConfig config = new HikariConfig();
    config.setDataSource(warm);
    config.setPoolName("poolsim-warm-up");
    config.setMaximumPoolSize(PROBE_CONNECTIONS);
    config.setAutoCommit(Boolean.parseBoolean(setting("auto_commit")));
    try (HikariDataSource ds = new HikariDataSource(config)) {
      requests(ds, new double[600]);  // warming up, with holds of 0
      for (int round = 0; round < 4; ++round) {
        final double[] holds = new double[40];
        double held = 0;
        for (int k = 0; k < holds.length && hold.length > 0; ++k) {
          holds[k] = Math.min(0.020, hold[(round * holds.length + k) % hold.length]);
          held += holds[k] * 1e3;
        }
        final long start = System.nanoTime();
        requests(ds, holds);
        final double perRequest =
            nsToMs(System.nanoTime() - start) * PROBE_CONNECTIONS / holds.length;
        out.append("probe_statement,").append(Math.max(0, perRequest - held / holds.length))
            .append('\n');
      }
    } catch (RuntimeException e) {
      throw new Failure("connect", e.getMessage());
    }
  }

  // One request per hold on ds, by PROBE_THREADS threads in a closed loop.
  private static void requests(HikariDataSource ds, double[] holds) {
    final AtomicLong next = new AtomicLong();
    final List<CompletableFuture<Void>> users = new ArrayList<>();
    for (int t = 0; t < PROBE_THREADS; ++t) {
      users.add(CompletableFuture.runAsync(() -> {
        for (long k = next.getAndIncrement(); k < holds.length; k = next.getAndIncrement()) {
          try (Connection c = ds.getConnection();
              PreparedStatement statement = c.prepareStatement("SELECT pg_sleep(?)")) {
            statement.setDouble(1, holds[(int) k]);
            statement.executeQuery().close();
          } catch (SQLException e) {
            throw new IllegalStateException(e.getMessage(), e);
          }
        }
      }, runnable -> new Thread(runnable).start()));
    }
    for (CompletableFuture<Void> user : users) user.join();
  }

  private static String hikariVersion() {
    try {
      final String jar =
          HikariDataSource.class.getProtectionDomain().getCodeSource().getLocation().getPath();
      try (JarFile file = new JarFile(jar)) {
        final String version = file.getManifest().getMainAttributes().getValue("Bundle-Version");
        return version == null ? "unknown" : version;
      }
    } catch (Exception e) {
      return "unknown";
    }
  }

  private void run(StringBuilder out) throws Exception {
    final String url = setting("url");
    final String app = setting("application_name");
    probe(out, url, app);
    System.gc();  // the probes' garbage, collected now rather than in a pause during the run

    final int pools = integer("pools");
    final int threads = integer("threads");
    final ConnectSource source =
        new ConnectSource(url, properties(app), number("connect_delay_ms"));
    final List<CompletableFuture<HikariDataSource>> pool = new ArrayList<>();
    final Semaphore[] gates = new Semaphore[pools];
    final Connection watcher;
    try {
      watcher = DriverManager.getConnection(url, properties(app + "_watch"));
    } catch (SQLException e) {
      throw new Failure("connect", e.getMessage());
    }
    final long t0 = System.nanoTime();
    for (int p = 0; p < pools; ++p) {
      final HikariConfig config = poolConfig(source, "poolsim-" + p);
      // Each pool is created on a thread of its own: the constructor waits for a connect.
      pool.add(CompletableFuture.supplyAsync(() -> new HikariDataSource(config),
                                             runnable -> new Thread(runnable).start()));
      gates[p] = threads > 0 ? new Semaphore(threads, true) : null;
    }
    final Thread sampler = new Thread(() -> sample(t0, pool, source, watcher, app), "sampler");
    sampler.setDaemon(true);
    sampler.start();

    final Thread[] requests = new Thread[arrival.length];
    for (int i = 0; i < arrival.length; ++i) {
      final long due = t0 + Math.round(arrival[i] * 1e9);
      parkUntil(due - THREAD_LEAD_NS);
      final int request = i;
      final int p = i % pools;
      requests[i] = new Thread(() -> {
        parkUntil(due);
        serve(request, due, pool.get(p), gates[p]);
      }, "request-" + i);
      requests[i].start();
    }
    for (Thread t : requests) t.join();
    parkUntil(t0 + Math.round(Double.parseDouble(setting("window_end_s")) * 1e9));
    sampler.interrupt();
    sampler.join();
    final long end = System.nanoTime();
    int total = 0;
    for (CompletableFuture<HikariDataSource> f : pool) {
      if (f.isCompletedExceptionally()) continue;
      total += f.join().getHikariPoolMXBean().getTotalConnections();
    }
    out.append("end,").append((end - t0) / 1e9).append(',').append(total).append(',')
        .append(source.opened.get()).append('\n');
    for (CompletableFuture<HikariDataSource> f : pool) {
      if (!f.isCompletedExceptionally()) checkApplied(f.join());
    }
    for (CompletableFuture<HikariDataSource> f : pool) {
      if (!f.isCompletedExceptionally()) f.join().close();
    }
    watcher.close();
    synchronized (bugs) {
      if (!bugs.isEmpty()) throw new Failure("bug", bugs.get(0).toString());
    }
    for (int i = 0; i < arrival.length; ++i) {
      out.append("request,").append(i).append(',').append(outcome[i]).append(',')
          .append(waitMs[i]).append(',').append(latencyMs[i]).append('\n');
    }
    synchronized (samples) {
      for (String s : samples) out.append(s).append('\n');
    }
  }

  private void serve(int i, long due, CompletableFuture<HikariDataSource> pool, Semaphore gate) {
    try {
      if (gate != null) gate.acquireUninterruptibly();
      try {
        serveOne(i, due, pool);
      } finally {
        if (gate != null) gate.release();
      }
    } catch (Throwable e) {  // a bug here must not lose a request silently
      synchronized (bugs) {
        bugs.add(e);
      }
    }
  }

  private void serveOne(int i, long due, CompletableFuture<HikariDataSource> pool) {
    latencyMs[i] = Double.NaN;
    final long start = System.nanoTime();
    final HikariDataSource ds;
    try {
      ds = pool.join();  // the pool's constructor makes its first connection
    } catch (RuntimeException e) {
      outcome[i] = CONNECT_FAILED;
      waitMs[i] = nsToMs(System.nanoTime() - start);
      return;
    }
    final Connection c;
    try {
      c = ds.getConnection();
    } catch (SQLTransientConnectionException e) {  // "request timed out after ..."
      outcome[i] = TIMEOUT;
      waitMs[i] = nsToMs(System.nanoTime() - start);
      return;
    } catch (SQLException e) {
      outcome[i] = "53300".equals(e.getSQLState()) ? TOO_MANY : CONNECT_FAILED;
      waitMs[i] = nsToMs(System.nanoTime() - start);
      return;
    }
    waitMs[i] = nsToMs(System.nanoTime() - start);
    try (Connection connection = c;
        PreparedStatement statement = connection.prepareStatement("SELECT pg_sleep(?)")) {
      statement.setDouble(1, hold[i]);
      try (ResultSet r = statement.executeQuery()) {
        r.next();
      }
    } catch (SQLException e) {
      final String state = e.getSQLState() == null ? "" : e.getSQLState();
      // HikariCP's own test for a broken connection (ProxyConnection.checkException).
      final boolean broken = state.startsWith("08") || state.equals("57P01")
          || state.equals("57P02") || state.equals("57P03");
      outcome[i] = broken ? DISCONNECT : CONNECT_FAILED;
      return;
    }
    outcome[i] = COMPLETED;
    latencyMs[i] = nsToMs(System.nanoTime() - due);
  }

  private void sample(long t0, List<CompletableFuture<HikariDataSource>> pool,
                      ConnectSource source, Connection watcher, String app) {
    try (PreparedStatement count = watcher.prepareStatement(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = ?")) {
      count.setString(1, app);
      for (long next = t0 + SAMPLE_EVERY_NS; ; next += SAMPLE_EVERY_NS) {
        for (long rest = next - System.nanoTime(); rest > 0; rest = next - System.nanoTime()) {
          LockSupport.parkNanos(rest);
          if (Thread.interrupted()) return;
        }
        int total = 0, active = 0, idle = 0, waiting = 0;
        for (CompletableFuture<HikariDataSource> f : pool) {
          if (!f.isDone() || f.isCompletedExceptionally()) continue;
          final HikariPoolMXBean mx = f.join().getHikariPoolMXBean();
          total += mx.getTotalConnections();
          active += mx.getActiveConnections();
          idle += mx.getIdleConnections();
          waiting += mx.getThreadsAwaitingConnection();
        }
        final long opened = source.opened.get();
        final double t = (System.nanoTime() - t0) / 1e9;
        int server;
        try (ResultSet r = count.executeQuery()) {
          r.next();
          server = r.getInt(1);
        }
        synchronized (samples) {
          samples.add("sample," + t + "," + total + "," + active + "," + idle + "," + waiting
              + "," + server + "," + opened);
        }
      }
    } catch (SQLException e) {
      synchronized (bugs) {
        bugs.add(e);
      }
    }
  }
}
