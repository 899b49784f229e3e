"""``mamoru web`` (serve the web page on its own) and ``mamoru web passwd NAME`` (set a web password)."""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from blocklist.store import Store
from screening.cli.common import EXIT_ERROR, EXIT_OK, CliError, load
from screening.config import BUILTIN_SOURCE, Config
from screening.core.model import Language, Role
from screening.log_setup import setup_logging
from screening.web.accounts import (
    Account,
    UserFile,
    UsersFileError,
    hash_password,
    name_problem,
    password_problems,
)
from screening.web.context import USERS_FILE_NAME, WebContext
from screening.web.i18n import PAGE_LANGUAGES, page_language, translate

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often `mamoru web` checks that its server thread is still alive


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (got {port})")
    return port


def _config_args(p: argparse.ArgumentParser, default: Any = None) -> None:
    p.add_argument("--config", metavar="F", default=default,
                   help="TOML config (default: $MAMORU_CONFIG, /etc/mamoru/mamoru.toml)")  # fmt: skip
    p.add_argument("--db", metavar="F", default=default,
                   help="SQLite database (overrides [store] db); web-users.json lives next to it")  # fmt: skip


def register(subparsers: Any) -> None:
    """``mamoru web [--host H] [--port P] [--db F] [--config F]`` and ``mamoru web passwd NAME``."""
    p = subparsers.add_parser("web", help="serve the family and installer web page on its own (`mamoru run` "
                                          "serves it too); `web passwd NAME` sets a web password")  # fmt: skip
    _config_args(p)
    p.add_argument("--host", metavar="H", help="address to listen on (default: [web] host)")
    p.add_argument("--port", metavar="P", type=_port, help="TCP port (default: [web] port; 0 = any free port)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_web)
    wsub = p.add_subparsers(dest="web_action", metavar="{passwd}")
    q = wsub.add_parser("passwd", help="set (or create) a web user's password; asks twice on the terminal")
    q.add_argument("name", help="login name (created if new: the first user is the installer)")
    q.add_argument("--role", choices=[r.value for r in Role], help="default: unchanged, or family for a new user")
    q.add_argument("--language", choices=[lang.value for lang in PAGE_LANGUAGES], help="page language of this user")
    q.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    # SUPPRESS: `mamoru web --db F passwd NAME` keeps the F given before the sub-command.
    _config_args(q, default=argparse.SUPPRESS)
    q.set_defaults(func=cmd_web_passwd)


def _is_demo(cfg: Config) -> bool:
    # Here and below: the composition root and the server import every adapter and Starlette;
    # the other `mamoru` commands, all registered at start, should not pay for that.
    from screening.runner import is_sim

    return cfg.source == BUILTIN_SOURCE and is_sim(cfg.line.uri)


def data_db_path(cfg: Config, explicit_db: bool) -> Path:
    """The database `mamoru run` would use: the demo's own one for ``sim:`` on built-in defaults."""
    from screening.runner import demo_db_path

    return demo_db_path() if _is_demo(cfg) and not explicit_db else Path(cfg.store.db)


def cmd_web(args: argparse.Namespace) -> int:
    from screening.runner import demo_db_path
    from screening.web.server import (
        config_file,
        config_for_paths,
        safe_host,
        serve_in_thread,
    )

    cfg = load(args)
    setup_logging(cfg.log.level, args.verbose)
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else cfg.log.level.as_logging)
    db_path = data_db_path(cfg, explicit_db=bool(args.db))
    db_path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(db_path, recover_calls=False)  # never mark a live call of a running daemon interrupted
    store.open()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping the web page", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        # the demo keeps its recordings beside its database, as `mamoru run` does
        recordings = demo_db_path().parent / "recordings" if _is_demo(cfg) else None
        ctx = WebContext.for_config(config_for_paths(cfg, db_path, recordings), store, config_file(cfg))
        host = safe_host(args.host or cfg.web.host, ctx.users_path)
        port = cfg.web.port if args.port is None else args.port
        try:
            web = serve_in_thread(ctx, host, port)
        except OSError as exc:
            raise CliError(f"cannot serve the web page on {host}:{port}: {exc.strerror or exc}") from None
        print(f"mamoru web: serving {web.url}/ (database {db_path})", flush=True)
        try:
            while not stop.wait(POLL_S):
                if not web.running:
                    log.error("web server thread ended unexpectedly")
                    return EXIT_ERROR
        finally:
            web.stop()
    finally:
        store.close()
    return EXIT_OK


def _read_password(from_stdin: bool) -> tuple[str, str]:
    """(password, the same typed again); from stdin the first line counts twice."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        return password, password
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for the password: pipe it in with --stdin")
    try:
        return getpass.getpass("New web password: "), getpass.getpass("The same again: ")
    except EOFError:
        raise CliError("no password given") from None


def cmd_web_passwd(args: argparse.Namespace) -> int:
    args.config, args.db = getattr(args, "config", None), getattr(args, "db", None)
    cfg = load(args)
    users = UserFile(data_db_path(cfg, explicit_db=bool(args.db)).parent / USERS_FILE_NAME)
    if users.broken:
        raise CliError(f"{users.broken}; fix it or move it away, then try again")
    name = args.name.strip()
    problem = name_problem(name)
    if problem:
        raise CliError(translate(Language.EN, problem))
    password, password2 = _read_password(args.stdin)
    problems = password_problems(name, password, password2)
    if problems:
        raise CliError(translate(Language.EN, next(iter(problems.values()))))
    existing = users.find(name)
    chosen_role = Role(args.role) if args.role else None
    chosen_language = page_language(args.language) if args.language else None
    password_hash = hash_password(password)
    try:
        if existing is not None:
            account = users.replace_account(name, lambda a: replace(
                a, password_hash=password_hash, role=chosen_role or a.role, language=chosen_language or a.language))
        else:
            # The first account must be able to do everything (like first-run setup in the browser).
            role = chosen_role or (Role.FAMILY if users.accounts() else Role.INSTALLER)
            account = Account(name, role, password_hash, chosen_language)
            users.add(account)
    except (UsersFileError, OSError) as exc:
        raise CliError(f"cannot write {users.path}: {exc}") from None
    verb = "changed" if existing is not None else "created"
    print(f"web user {account.name} ({account.role.value}) {verb} in {users.path}; "
          "any open session of this user has ended")  # fmt: skip
    return EXIT_OK
