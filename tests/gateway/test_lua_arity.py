"""The limiter packs for every Lua script exactly the keys and arguments the script reads, on both Redis paths.

Each script's arity is read from its text (``gateway/lua/*.lua``): the highest literal ``KEYS[n]``/``ARGV[n]``, the
bounds of numeric ``for`` loops indexing them, and loops running to ``#KEYS``/``#ARGV`` in fixed-stride groups. The
limiter's commands are recorded where they leave for Redis: redis-py's ``execute_command`` and the RESP bytes
handed to ``RedisPipe.execute_packed`` (whose ``*<n>`` header is checked against what follows it). A script that
gains an ``ARGV`` the limiter does not pack, or a packed argument no script reads, fails here.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

import gateway.limits
from gateway.limits import Limiter, LimitRequest, Limits
from gateway.redispipe import RedisPipe, pack
from tests.support.limiter_paths import LIMITER_PATHS, REDIS_PY, REDISPIPE, close_hot_redis, open_hot_redis

LUA = Path(gateway.limits.__file__).with_name("lua")
SHARED = "month.lua"  # helpers the limiter puts in front of every script; it must read no KEYS or ARGV

# Reads whose index the reader cannot bound, each with the reason it stays within the literal indices.
BOUNDED_ELSEWHERE = {
    ("admit.lua", "KEYS[scope]"): "only when fail == 2, where scope is 1 or 2: the key's and the tenant's windows",
}


# --- reading a script ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """``KEYS``/``ARGV`` from ``start`` up to ``#KEYS``/``#ARGV`` in groups of ``stride``."""

    start: int
    stride: int


@dataclass(frozen=True)
class Table:
    """What a script reads of ``KEYS`` or of ``ARGV``."""

    fixed: int  # the highest index read outside a group (0: none)
    group: Group | None = None

    def accepts(self, count: int) -> bool:
        if self.group is None:
            return count == self.fixed
        before = self.group.start - 1
        return count >= max(self.fixed, before) and (count - before) % self.group.stride == 0


@dataclass(frozen=True)
class Arity:
    keys: Table
    argv: Table
    unbounded: frozenset[str]  # reads no rule above bounds, spelled as in the script ("KEYS[scope]")


_TOKENS = re.compile(r"""--\[(=*)\[.*?\]\1\]|--[^\n]*|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"|\w+|\S""", re.S)
# Every numeric loop, whatever its bounds: one the reader cannot bound still shadows an outer loop's variable.
_FOR = re.compile(r"\bfor\s+(\w+)\s*=\s*([^,]+?)\s*,\s*([^,]+?)\s*(?:,\s*([^,]+?)\s*)?\bdo\b")
_READ = re.compile(r"(#?)\b(KEYS|ARGV)\b(?:\s*\[\s*([^\]]*?)\s*\])?")
_OPENS, _CLOSES = {"do", "if", "function", "repeat"}, {"end", "until"}


def _code(script: str) -> str:
    """The script with its comments blanked and its strings emptied, so neither can look like a read."""

    def keep(match: re.Match[str]) -> str:
        token = match.group(0)
        if token.startswith("--"):
            return re.sub(r"[^\n]", " ", token)
        if token[0] in "'\"":
            return token[0] * 2 + " " * (len(token) - 2)
        return token

    return _TOKENS.sub(keep, script)


def _block_end(code: str, start: int) -> int:
    """Where the block opened just before ``start`` (a loop's ``do``) ends."""
    depth = 1
    for word in re.finditer(r"\b\w+\b", code[start:]):
        if word.group(0) in _OPENS:
            depth += 1
        elif word.group(0) in _CLOSES:
            depth -= 1
            if depth == 0:
                return start + word.start()
    raise AssertionError("a loop without its end")


def read_arity(script: str) -> Arity:
    """What ``script`` reads of ``KEYS`` and ``ARGV``."""
    code = _code(script)
    loops = [(m, m.end(), _block_end(code, m.end())) for m in _FOR.finditer(code)]
    fixed = {"KEYS": 0, "ARGV": 0}
    groups: dict[str, Group] = {}
    unbounded: set[str] = set()
    for read in _READ.finditer(code):
        length, table, index = read.groups()
        spelled = read.group(0)
        in_header = [m for m, _, _ in loops if m.start() <= read.start() < m.end()]
        if length and in_header:
            continue  # a loop's bound: the reads in its body say what it takes
        if length or index is None:
            unbounded.add(spelled)  # the count itself, or the whole table (unpack(ARGV)): not a fixed arity
            continue
        if index.isdigit():
            fixed[table] = max(fixed[table], int(index))
            continue
        offset = re.fullmatch(r"(\w+)\s*(?:\+\s*(\d+))?", index)
        enclosing = [
            (m, lo, hi) for m, lo, hi in loops if offset and m.group(1) == offset.group(1) and lo <= read.start() < hi
        ]
        if offset is None or not enclosing:
            unbounded.add(f"{table}[{index}]")
            continue
        loop = enclosing[-1][0]  # the innermost loop naming the variable
        shift = int(offset.group(2) or 0)
        first, last, stride = loop.group(2), loop.group(3), loop.group(4) or "1"
        if not (first.isdigit() and stride.isdigit() and int(stride) > 0):
            unbounded.add(f"{table}[{index}]")
        elif last.isdigit():  # the last value the loop reaches, plus the offset read
            reached = int(first) + (int(last) - int(first)) // int(stride) * int(stride)
            fixed[table] = max(fixed[table], reached + shift)
        elif last == f"#{table}" and shift < int(stride):
            group = groups.setdefault(table, Group(int(first), int(stride)))
            if group != Group(int(first), int(stride)):
                unbounded.add(f"{table}[{index}]")  # two different groupings of one table
        else:
            unbounded.add(f"{table}[{index}]")
    return Arity(
        keys=Table(fixed["KEYS"], groups.get("KEYS")),
        argv=Table(fixed["ARGV"], groups.get("ARGV")),
        unbounded=frozenset(unbounded),
    )


def scripts_in_folder() -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(LUA.glob("*.lua")) if path.name != SHARED}


# --- recording the limiter's commands -------------------------------------------------------------------------


def parse_command(data: bytes) -> tuple[bytes, ...]:
    """One RESP command, strictly: the ``*<n>`` header must count exactly the bulk strings that follow."""
    header, _, rest = data.partition(b"\r\n")
    assert header[:1] == b"*", f"not a RESP command: {data[:40]!r}"
    count, args, pos = int(header[1:]), [], 0
    for number in range(count):
        assert rest[pos : pos + 1] == b"$", f"the header counts {count} arguments, the command has {number}"
        size_end = rest.index(b"\r\n", pos)
        start = size_end + 2
        end = start + int(rest[pos + 1 : size_end])
        assert rest[end : end + 2] == b"\r\n", f"argument {number} is not as long as its length says"
        args.append(rest[start:end])
        pos = end + 2
    assert pos == len(rest), f"the header counts {count} arguments, more follow: {rest[pos : pos + 60]!r}"
    return tuple(args)


def _as_bytes(arg: Any) -> bytes:
    return arg if isinstance(arg, bytes) else str(arg).encode()


def _words(args: tuple[Any, ...]) -> tuple[bytes, ...]:
    """redis-py's arguments as they go on the wire (it splits a command name such as ``"SCRIPT LOAD"``)."""
    return (*_as_bytes(args[0]).split(), *(_as_bytes(a) for a in args[1:]))


def record(client: aioredis.Redis | RedisPipe, sent: list[tuple[bytes, ...]]) -> None:
    """Append every command ``client`` sends to ``sent``, as the words Redis receives, then send it."""
    if isinstance(client, RedisPipe):
        execute_packed = client.execute_packed

        def recording_packed(command: bytes) -> asyncio.Future[Any]:
            sent.append(parse_command(command))
            return execute_packed(command)

        client.execute_packed = recording_packed  # type: ignore[method-assign]
        return
    execute_command = client.execute_command

    async def recording_command(*args: Any, **options: Any) -> Any:
        sent.append(_words(args))
        return await execute_command(*args, **options)

    client.execute_command = recording_command  # type: ignore[method-assign]


@dataclass(frozen=True)
class ScriptCall:
    site: str  # the limiter's method that sent it
    script: str  # the file in gateway/lua/
    keys: int
    args: int


def _request(*, limited: bool) -> LimitRequest:
    """A request under every limit there is, or under none (the settle then packs an empty budget prefix)."""
    if not limited:
        return LimitRequest(uuid.uuid4().hex, "arity", Limits(), "acme", Limits(), 3, None, 5, 30.0)
    key = Limits(requests_per_minute=100, tokens_per_minute=100_000, max_concurrent_requests=10)
    tenant = Limits(
        requests_per_minute=100, tokens_per_minute=100_000, max_concurrent_requests=10, monthly_token_budget=10**6
    )
    return LimitRequest(uuid.uuid4().hex, "arity", key, "acme", tenant, 3, 10, 50, 30.0)


BATCHED_SETTLE = {REDIS_PY: "settle_commands", REDISPIPE: "settle_packed"}  # how the usage sink sends it


async def record_script_calls(path: str, redis_url: str, prefix: str) -> list[ScriptCall]:
    """Every script call of every limiter method that sends one, on ``path``, against real Redis."""
    hot = open_hot_redis(path, redis_url)
    sent: list[tuple[bytes, ...]] = []
    record(hot, sent)
    limiter = Limiter(hot, prefix)
    by_site: list[tuple[str, tuple[bytes, ...]]] = []

    def mark(site: str) -> None:
        by_site.extend((site, command) for command in sent[len(by_site) :])

    try:
        await limiter.load_scripts()
        mark("load_scripts")
        for limited in (True, False):
            req = _request(limited=limited)
            assert (await limiter.admit(req)).allowed
            mark("admit")
            await limiter.settle(req, 20)
            mark("settle")
            assert (await limiter.admit(req)).allowed
            mark("admit")
            if isinstance(hot, RedisPipe):
                assert await hot.execute_packed(limiter.settle_packed(req, 20)) == 1
            else:
                pipe = hot.pipeline(transaction=False)
                limiter.settle_commands(pipe, req, 20)
                sent.extend(_words(args) for args, _ in pipe.command_stack)  # a pipeline bypasses execute_command
                assert await pipe.execute() == [1]
            mark(BATCHED_SETTLE[path])
    finally:
        await close_hot_redis(hot)
    loaded = {
        hashlib.sha1(command[2]).hexdigest(): command[2].decode()  # noqa: S324 - the script's Redis id
        for _, command in by_site
        if command[:2] == (b"SCRIPT", b"LOAD")
    }
    folder = scripts_in_folder()
    calls = []
    for site, command in by_site:
        if command[0] != b"EVALSHA":
            continue
        body = loaded.get(command[1].decode())
        assert body is not None, f"{site} runs a script load_scripts never loads"
        names = [name for name, text in folder.items() if body.endswith(text)]
        assert len(names) == 1, f"{site} runs a script that is no one file of {LUA}"
        numkeys = int(command[2])
        calls.append(ScriptCall(site, names[0], numkeys, len(command) - 3 - numkeys))
    return calls


# --- the checks -------------------------------------------------------------------------------------------------


def loaded_arity(name: str) -> Arity:
    """The arity of the script as Redis runs it: the shared helpers in front of the file."""
    return read_arity((LUA / SHARED).read_text(encoding="utf-8") + "\n" + (LUA / name).read_text(encoding="utf-8"))


@pytest.fixture(params=LIMITER_PATHS)
def limiter_path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def script_calls(limiter_path: str, redis_url: str, redis_prefix: str) -> list[ScriptCall]:
    return asyncio.run(record_script_calls(limiter_path, redis_url, redis_prefix))


def test_it_packs_exactly_the_keys_and_arguments_each_script_reads(script_calls: list[ScriptCall]) -> None:
    for call in script_calls:
        arity = loaded_arity(call.script)
        assert arity.keys.accepts(call.keys), f"{call.site} packs {call.keys} keys, {call.script} reads {arity.keys}"
        assert arity.argv.accepts(call.args), f"{call.site} packs {call.args} ARGV, {call.script} reads {arity.argv}"


def test_it_runs_every_script_of_its_folder_from_every_method(
    script_calls: list[ScriptCall], limiter_path: str
) -> None:
    """Otherwise a new script, or a method sending none, would pass the check above unchecked."""
    assert {call.script for call in script_calls} == set(scripts_in_folder())
    assert {call.site for call in script_calls} == {"admit", "settle", BATCHED_SETTLE[limiter_path]}


def test_it_reads_only_indices_it_can_bound() -> None:
    assert read_arity((LUA / SHARED).read_text(encoding="utf-8")) == Arity(Table(0), Table(0), frozenset())
    found = {(name, spelled) for name, text in scripts_in_folder().items() for spelled in read_arity(text).unbounded}
    unexplained, stale = sorted(found - set(BOUNDED_ELSEWHERE)), sorted(set(BOUNDED_ELSEWHERE) - found)
    assert not unexplained, f"bound {unexplained}, or say in BOUNDED_ELSEWHERE why they stay in range"
    assert not stale, f"{stale} are gone from the scripts: drop them from BOUNDED_ELSEWHERE"


# --- the reader and the parser themselves ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "keys", "argv", "unbounded"),
    [
        ("return {KEYS[2], ARGV[3]}", Table(2), Table(3), set()),
        ("-- ARGV[9] in a comment\nlocal s = 'ARGV[8]'\nreturn ARGV[1]", Table(0), Table(1), set()),
        ("--[[ KEYS[7] ]] return KEYS[1]", Table(1), Table(0), set()),
        ("for i = 5, 12 do x[i] = ARGV[i] end\nfor i = 1, #old do y = KEYS[i] end", Table(0), Table(12), {"KEYS[i]"}),
        ("for i = 2, 5, 2 do a = ARGV[i]; b = ARGV[i + 1] end", Table(0), Table(5), set()),
        ("for i = 5, 12 do for i = 1, #old do x = ARGV[i] end end", Table(0), Table(0), {"ARGV[i]"}),
        ("for i = 1, #ARGV - 1 do x = ARGV[i] end", Table(0), Table(0), {"ARGV[i]"}),
        (
            "for i = 3, #ARGV, 2 do local a, b = ARGV[i], ARGV[i + 1] end\nreturn ARGV[2]",
            Table(0),
            Table(2, Group(3, 2)),
            set(),
        ),
        ("for i = 1, #KEYS do if KEYS[i] then end end", Table(0, Group(1, 1)), Table(0), set()),
        ("if #ARGV > 2 then return unpack(ARGV) end", Table(0), Table(0), {"#ARGV", "ARGV"}),
        ("local n = 3\nreturn ARGV[n]", Table(0), Table(0), {"ARGV[n]"}),
    ],
)
def test_it_reads_the_arity_of_a_script(script: str, keys: Table, argv: Table, unbounded: set[str]) -> None:
    assert read_arity(script) == Arity(keys, argv, frozenset(unbounded))


@pytest.mark.parametrize(
    ("table", "count", "accepted"),
    [(Table(13), 13, True), (Table(13), 12, False), (Table(13), 14, False)]
    + [(Table(2, Group(3, 2)), n, n in (2, 4, 6)) for n in range(8)],
)
def test_it_accepts_only_the_counts_a_table_takes(table: Table, count: int, accepted: bool) -> None:
    assert table.accepts(count) is accepted


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"*1\r\n$4\r\nPING\r\n$1\r\nx\r\n", "more follow"),
        (b"*3\r\n$4\r\nPING\r\n$1\r\nx\r\n", "the command has 2"),
        (b"*1\r\n$5\r\nPING\r\n", "not as long"),
    ],
)
def test_it_refuses_a_command_whose_header_miscounts(data: bytes, complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        parse_command(data)


def test_it_parses_a_packed_command() -> None:
    assert parse_command(pack(("EVALSHA", "ab", 1, "k", 2))) == (b"EVALSHA", b"ab", b"1", b"k", b"2")
