"""A throw-away pgbouncer in front of a PostgreSQL: the real thing that ``pool.policy =
pgbouncer`` models, for live cross-checks.

``Pgbouncer(server, default_pool_size=4, query_wait_timeout=1)`` writes a pgbouncer.ini and a
userlist into a private temporary directory, starts Debian's ``/usr/sbin/pgbouncer`` on a free
localhost port in transaction pooling mode (as the ``postgres`` user when we are root:
pgbouncer refuses to run as root) and waits until it answers; ``close()``, or the end of a
``with``, stops it and deletes the directory. Clients log in to it with md5 and the server's
own password, which pgbouncer keeps in its userlist to log its servers in (SCRAM) with.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from typing import Any, Dict, Optional, Union
from urllib.parse import quote

PGBOUNCER = "/usr/sbin/pgbouncer"  # Debian 12's package pgbouncer (1.18)
_RUN_AS = "postgres"  # who runs it when we are root
_START_TIMEOUT_S = 20.0
# $1 = pgbouncer, $2 = its ini. A background job's stdin is /dev/null unless redirected, hence
# fd 3.
_SUPERVISOR = ('exec 3<&0; "$1" "$2" & child=$!; '
               '(while read -r _ <&3; do :; done; kill -TERM "$child" 2>/dev/null) & '
               'wait "$child"')
_STOP_TIMEOUT_S = 10.0

# What every instance sets unless the caller overrides it. max_client_conn: several processes'
# QueuePools (15 connections each by default) exceed pgbouncer's default of 100.
_DEFAULTS = {
    "pool_mode": "transaction",
    "max_client_conn": 1000,
    "ignore_startup_parameters": "extra_float_digits",
}
# Keys this class owns: they make the instance private and reachable, so they are not settings.
_OWNED = {"listen_addr", "listen_port", "unix_socket_dir", "auth_type", "auth_file", "logfile",
          "pidfile", "admin_users", "stats_users", "user", "conffile"}


class _PortTaken(Exception):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quoted(value: str) -> str:
    """A libpq (and pgbouncer) connection-string value, quoted when it must be."""
    if value and not any(c in value for c in " '\\\t\n"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ini_value(key: str, value: Any) -> str:
    """A setting as pgbouncer.ini spells it: times are seconds (fractions allowed), booleans
    0/1, strings as given."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        if any(c in value for c in "\n\r"):
            raise ValueError(f"pgbouncer setting {key} = {value!r}: one line only")
        return value
    raise TypeError(f"pgbouncer setting {key} = {value!r}: must be a number, a bool or a string")


def _server_fields(server: Any) -> Dict[str, str]:
    """host, port, user, password and dbname of a TestServer, an object with ``.dsn``, or a
    libpq DSN."""
    dsn = server if isinstance(server, str) else getattr(server, "dsn", None)
    if not isinstance(dsn, str):
        raise TypeError("Pgbouncer(server): give a poolsim.TestServer or a libpq DSN string")
    import psycopg2.extensions

    try:
        fields = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        raise ValueError("Pgbouncer(server): not a libpq DSN") from None
    missing = [k for k in ("port", "user", "password") if not fields.get(k)]
    if missing:
        raise ValueError(f"Pgbouncer(server): the DSN has no {', '.join(missing)}")
    fields.setdefault("host", "127.0.0.1")
    fields.setdefault("dbname", fields["user"])
    return fields


# Instances still running, stopped at interpreter exit if their owner forgot.
_running: "weakref.WeakSet[Pgbouncer]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for bouncer in list(_running):
        bouncer.close()


class Pgbouncer:
    """A private pgbouncer (transaction pooling) in front of ``server``: a ``poolsim.TestServer``
    or a libpq DSN with a password.

    Keyword arguments are pgbouncer.ini settings of its ``[pgbouncer]`` section
    (``default_pool_size=4``, ``query_wait_timeout=1.5``, ``server_idle_timeout=1``,
    ``reserve_pool_size``, ``reserve_pool_timeout``, ``min_pool_size``, ``server_lifetime``,
    ``server_check_delay``, ``max_db_connections``, ...): numbers are written as they are, so
    times are seconds as pgbouncer reads them. Its one database has the server's database's
    name and goes to the server's host and port.

    ``dsn`` and ``url`` are how clients reach it (libpq string, SQLAlchemy URL); ``admin_dsn``
    is its admin console (``SHOW POOLS``); ``directory`` holds pgbouncer.ini and pgbouncer.log.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, server: Union[str, Any], **settings: Any):
        owned = sorted(_OWNED.intersection(settings))
        if owned:
            raise ValueError(f"Pgbouncer: {', '.join(owned)} cannot be set: each instance "
                             "chooses its own (a private directory, a free localhost port)")
        if not os.access(PGBOUNCER, os.X_OK):
            raise FileNotFoundError(f"{PGBOUNCER} is missing: install Debian's package "
                                    "pgbouncer (scripts/install-deps.sh does)")
        self._fields = _server_fields(server)
        self._settings = {**_DEFAULTS, **settings}
        self._process: Optional[subprocess.Popen] = None
        self._directory: Optional[str] = tempfile.mkdtemp(prefix="poolsim-pgbouncer-")
        try:
            for attempt in range(3):  # another process may take the free port before pgbouncer
                self._write_files()
                try:
                    self._start()
                    break
                except _PortTaken:
                    if attempt == 2:
                        raise RuntimeError("pgbouncer: no free port after 3 tries") from None
        except BaseException:
            self.close()
            raise
        _running.add(self)

    # ---- what clients use -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def dsn(self) -> str:
        """libpq connection string of the server's database through pgbouncer."""
        f = self._fields
        return (f"host=127.0.0.1 port={self._port} user={_quoted(f['user'])} "
                f"password={_quoted(f['password'])} dbname={_quoted(f['dbname'])}")

    @property
    def admin_dsn(self) -> str:
        """libpq connection string of pgbouncer's admin console (database ``pgbouncer``; use
        autocommit: it takes no transactions)."""
        f = self._fields
        return (f"host=127.0.0.1 port={self._port} user={_quoted(f['user'])} "
                f"password={_quoted(f['password'])} dbname=pgbouncer")

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg2) of the server's database through pgbouncer."""
        f = self._fields
        return (f"postgresql+psycopg2://{quote(f['user'], safe='')}:"
                f"{quote(f['password'], safe='')}@127.0.0.1:{self._port}/"
                f"{quote(f['dbname'], safe='')}")

    @property
    def directory(self) -> Optional[str]:
        return self._directory

    @property
    def settings(self) -> Dict[str, Any]:
        """The [pgbouncer] settings given (with this class's defaults)."""
        return dict(self._settings)

    def log(self) -> str:
        """pgbouncer's log so far ('' once stopped)."""
        try:
            with open(os.path.join(self._directory or "", "pgbouncer.log"),
                      errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # ---- set-up -----------------------------------------------------------------------------

    def _write_files(self) -> None:
        d = self._directory
        f = self._fields
        self._port = _free_port()
        try:  # a failed attempt's log must not speak for this one
            os.remove(os.path.join(d, "pgbouncer.log"))
        except FileNotFoundError:
            pass
        pgbouncer: Dict[str, Any] = {
            "listen_addr": "127.0.0.1",
            "listen_port": self._port,
            "unix_socket_dir": d,
            "auth_type": "md5",
            "auth_file": os.path.join(d, "userlist.txt"),
            "admin_users": f["user"],
            "stats_users": f["user"],
            "logfile": os.path.join(d, "pgbouncer.log"),
            "pidfile": os.path.join(d, "pgbouncer.pid"),
            **self._settings,
        }
        lines = ["[databases]",
                 f"{f['dbname']} = host={_quoted(f['host'])} port={f['port']} "
                 f"dbname={_quoted(f['dbname'])}",
                 "", "[pgbouncer]"]
        lines += [f"{k} = {_ini_value(k, v)}" for k, v in pgbouncer.items()]
        self._write(os.path.join(d, "pgbouncer.ini"), "\n".join(lines) + "\n")
        user = f["user"].replace('"', '""')
        password = f["password"].replace('"', '""')
        self._write(os.path.join(d, "userlist.txt"), f'"{user}" "{password}"\n')
        if os.geteuid() == 0:
            account = pwd.getpwnam(_RUN_AS)
            for path in (d, *(os.path.join(d, n) for n in os.listdir(d))):
                os.chown(path, account.pw_uid, account.pw_gid)

    @staticmethod
    def _write(path: str, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)

    def _start(self) -> None:
        run_as: Dict[str, Any] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam(_RUN_AS)
            run_as = dict(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        # pgbouncer in the foreground (no -d) under a small sh that ends it (SIGTERM: immediate
        # shutdown) once its stdin, a pipe from us, closes: when close() closes it, and when
        # this process dies however it dies, so that no pgbouncer outlives its owner. The sh
        # exits with pgbouncer's status. Its own session: a Ctrl-C at the terminal reaches
        # only us, and we stop it.
        self._process = subprocess.Popen(
            ["/bin/sh", "-c", _SUPERVISOR, "sh", PGBOUNCER,
             os.path.join(self._directory, "pgbouncer.ini")],
            cwd=self._directory, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, **run_as)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                self._process.stdin.close()  # ends the supervisor's reader too
                if "Address already in use" in self.log():
                    raise _PortTaken()
                raise RuntimeError(f"pgbouncer exited with status {self._process.returncode} "
                                   f"at start; its log:\n{self.log()[-2000:]}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not answer on 127.0.0.1:{self._port} within "
                                   f"{_START_TIMEOUT_S:.0f} s; its log:\n{self.log()[-2000:]}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        """Whether its admin console answers SHOW VERSION."""
        import psycopg2

        try:
            conn = psycopg2.connect(self.admin_dsn, connect_timeout=2)
        except psycopg2.OperationalError:
            return False
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute("SHOW VERSION")
                cursor.fetchall()
            return True
        except psycopg2.Error:
            return False
        finally:
            conn.close()

    # ---- the admin console --------------------------------------------------------------------

    def show(self, what: str) -> list:
        """``SHOW <what>`` on the admin console (``POOLS``, ``SERVERS``, ``STATS``...) as a list of
        dicts, one per row."""
        import psycopg2

        if not what.replace("_", "").isalpha():
            raise ValueError(f"Pgbouncer.show({what!r}): a SHOW command's name")
        conn = psycopg2.connect(self.admin_dsn, connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f"SHOW {what}")
                names = [c.name for c in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
        finally:
            conn.close()

    # ---- stopping -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop pgbouncer (SIGTERM: immediate shutdown, its clients are disconnected) and delete
        its directory. Harmless when already closed."""
        process, self._process = getattr(self, "_process", None), None
        if process is not None:
            process.stdin.close()  # the supervising sh sends pgbouncer SIGTERM
            try:
                process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its session: sh, pgbouncer, reader
                process.wait()
        directory, self._directory = getattr(self, "_directory", None), None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        _running.discard(self)

    def __enter__(self) -> "Pgbouncer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit the modules close() needs may be gone
            pass

    def __repr__(self) -> str:
        if self._process is None:
            return "<poolsim.Pgbouncer closed>"
        return (f"<poolsim.Pgbouncer 127.0.0.1:{self._port} -> "
                f"{self._fields['host']}:{self._fields['port']}/{self._fields['dbname']}>")
