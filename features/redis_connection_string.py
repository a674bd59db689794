"""Feast's Redis ``connection_string`` read as the ``redis://`` URL the rest of tidemark uses.

Feast's ``redis`` online store takes its server as ``host:port[,host:port…][,key=value…]``::

    redis-master:6379,db=0,ssl=true,password=…                  (one server)
    node1:6379,node2:6379,skip_full_coverage_check=true          (a cluster: any node will do)

tidemark's store takes the same string, so that switching a Feast repo to it is the ``type:`` line
alone, and turns it into one URL (``rediss://:…@redis-master:6379/0``): one form of address for
the reader, the writer and the Spark executors that materialize, which rebuild their connection
from the URL. A key the string may hold and the URL can't (or that would fight tidemark's own
timeouts) is a :class:`~features.errors.ConfigError` that names it, rather than silently dropped.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote, urlencode

from features.errors import ConfigError

__all__ = ["redis_url_from_connection_string"]

_TRUE: Final = ("true", "1", "yes")
_FALSE: Final = ("false", "0", "no")
#: Passed on in the URL's query string; redis-py's ``from_url`` hands them to its SSL connection.
_PASSED_ON: Final = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname",
                     "health_check_interval", "max_connections")
#: Options of Feast's clients that tidemark's own settings replace: (key, what to use instead).
_REPLACED: Final = {
    "socket_timeout": "timeout_ms (reads) and write_timeout_ms (writes)",
    "socket_connect_timeout": "timeout_ms (reads) and write_timeout_ms (writes)",
    "retry_on_timeout": "nothing: tidemark does not retry behind the caller (see features/redis_client.py)",
    "decode_responses": "nothing: tidemark's values are bytes",
}
#: Options of redis-py-cluster that redis-py's cluster client (which tidemark uses) has no use for.
_IGNORED: Final = ("skip_full_coverage_check",)
_KNOWN: Final = ("db", "ssl", "password", "username", *_PASSED_ON, *_IGNORED)


def redis_url_from_connection_string(connection_string: str) -> str:
    """The ``redis://`` (``rediss://`` with ``ssl=true``) URL of the first server in Feast's
    ``host:port,key=value`` ``connection_string``; raises ConfigError for a key it can't carry."""
    nodes, options = _split(connection_string)
    host, port = _host_port(nodes[0])
    ssl = _flag(options.pop("ssl", "false"), "ssl")
    db = options.pop("db", "0")
    if not db.isdigit():
        raise ConfigError(f"connection_string: db={db!r} is not a database number (0, 1, …)")
    password = options.pop("password", None)
    username = options.pop("username", None)
    for key in _IGNORED:
        options.pop(key, None)
    auth = ""
    if password is not None:
        auth = f"{quote(username or '', safe='')}:{quote(password, safe='')}@"
    elif username is not None:
        auth = f"{quote(username, safe='')}@"
    query = f"?{urlencode(options)}" if options else ""
    return f"{'rediss' if ssl else 'redis'}://{auth}{host}:{port}/{db}{query}"


def _split(connection_string: str) -> tuple[list[str], dict[str, str]]:
    """Feast's split: parts with ``=`` are options, the others ``host:port`` servers."""
    parts = [p.strip() for p in connection_string.split(",") if p.strip()]
    nodes = [p for p in parts if "=" not in p]
    if not nodes:
        raise ConfigError("connection_string names no server: use Feast's form "
                          "'host:port[,key=value…]', e.g. 'localhost:6379,db=0'")
    options: dict[str, str] = {}
    for part in parts:
        if "=" not in part:
            continue
        key, value = (s.strip() for s in part.split("=", 1))
        if key in _REPLACED:
            raise ConfigError(f"connection_string: {key} is not used by tidemark's online store; "
                              f"set {_REPLACED[key]} instead")
        if key not in _KNOWN:
            raise ConfigError(f"connection_string: unknown option {key!r}; known: {', '.join(_KNOWN)}")
        options[key] = value.strip("\"'")  # Feast JSON-decodes values: password="x" means x
    return nodes, options


def _host_port(node: str) -> tuple[str, int]:
    host, sep, port = node.rpartition(":")
    if not sep or not host or not port.isdigit():
        # not quoted: a part without '=' may be a password written without its key
        raise ConfigError("connection_string: its first server is not 'host:port' (Feast's form is "
                          "'host:port[,host:port…][,key=value…]', e.g. 'localhost:6379,db=0')")
    return host, int(port)


def _flag(value: str, key: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    raise ConfigError(f"connection_string: {key}={value!r} is neither true nor false")
