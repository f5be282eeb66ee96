"""Unit and property tests of the ``%sandbox`` magic parser (no engine needed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentkernel import commands, magic_names
from agentkernel.commands import (
    CellCommand,
    CommandError,
    ConnectCommand,
    DownloadCommand,
    ExecCommand,
    FileCommand,
    HelpRequest,
    ListCommand,
    MagicCall,
    PortsCommand,
    PullCommand,
    PushCommand,
    ResizeCommand,
    RestartCommand,
    StartCommand,
    StatusCommand,
    StopCommand,
    UploadCommand,
    parse_cell_magic,
    parse_code,
    parse_line_magic,
    split_magic,
    usage_text,
)
from agentkernel.config import options
from agentkernel.config.specs import (
    parse_count,
    parse_cpus,
    parse_env_pair,
    parse_hostname,
    parse_memory_mb,
    parse_port,
    parse_volume,
)
from agentkernel.errors import ConfigError, SandboxError

START_USAGE = "(usage: %sandbox start [OPTION]...)"
RESIZE_USAGE = "(usage: %sandbox resize CPUS MEMORY_MB)"
FILE_USAGE = "(usage: %%sandbox_file PATH [--append] [--mode MODE])"


def sandbox(line: str) -> commands.Command:
    """Parse ``%sandbox line``."""
    return parse_line_magic("sandbox", line)


def spec_error(parse: Callable[[str], object], value: str) -> str:
    """The message of the ConfigError that the shared spec parser raises for ``value``."""
    with pytest.raises(ConfigError) as info:
        parse(value)
    return str(info.value)


def error_of(line: str) -> str:
    """The message of the CommandError that ``%sandbox line`` raises."""
    with pytest.raises(CommandError) as info:
        sandbox(line)
    return str(info.value)


# ------------------------------------------------------------------------------------- start


def test_start_without_options_leaves_everything_to_the_config():
    assert sandbox("start") == StartCommand()


def test_start_with_every_option():
    line = (
        "start --image python:3.12-slim --cpus 1.5 --memory 2g -p 8888:8888 --port 9000"
        " --no-network --mount-cwd --mount-home -v /data:/data:ro --volume /x:/y --read-only"
        " -e A=1 --env 'B=two words' -e C= --name lab --persistent --profile restrictive"
        " --workdir /workspace --user 1000:1000 --runtime runsc --pids-limit 64"
        " --shm-size 1g --hostname lab.example"
    )
    assert sandbox(line) == StartCommand({
        "image": "python:3.12-slim",
        "cpus": 1.5,
        "memory_mb": 2048,
        "ports": ["8888:8888", "9000"],
        "network": False,
        "mount_cwd": True,
        "mount_home": True,
        "volumes": ["/data:/data:ro", "/x:/y"],
        "read_only": True,
        "env": {"A": "1", "B": "two words", "C": ""},
        "name": "lab",
        "persistent": True,
        "profile": "restrictive",
        "workdir": "/workspace",
        "user": "1000:1000",
        "runtime": "runsc",
        "pids_limit": 64,
        "shm_size_mb": 1024,
        "hostname": "lab.example",
    })


def test_every_option_with_a_flag_is_a_start_flag():
    """%sandbox start takes exactly the options of agentkernel.config.options that have flags."""
    flagged = {o.name for o in options.OPTIONS if o.flags}
    help_text = sandbox("start --help").text
    for option in options.OPTIONS:
        if option.flags:
            assert option.flag in help_text, option.name
    assert flagged == set(options.BY_NAME) - {"work_dir", "labels", "network_name", "workspace",
                                              "workspace_id", "unsafe_host_paths", "disk_mb"}


def test_a_cell_cannot_choose_the_engine_network():
    """The network a sandbox joins is the operator's (the guarded one by default)."""
    with pytest.raises(CommandError):
        sandbox("start --network-name host")


def test_start_network_flag_and_equals_syntax():
    assert sandbox("start --network --cpus=2 --memory=512").options["network"] is True
    assert sandbox("start --network --cpus=2 --memory=512").options["memory_mb"] == 512


def test_start_later_env_value_wins_and_value_may_hold_equals():
    assert sandbox("start -e K=1 -e K=a=b").options["env"] == {"K": "a=b"}


@pytest.mark.parametrize("profile", ["permissive", "moderate", "restrictive"])
def test_start_profiles(profile):
    assert sandbox(f"start --profile {profile}").options["profile"] == profile


def test_start_keeps_port_and_volume_specs_as_typed():
    command = sandbox("start -p 127.0.0.1::80/udp -v data:/data:ro")
    assert command.options == {"ports": ["127.0.0.1::80/udp"], "volumes": ["data:/data:ro"]}


@pytest.mark.parametrize(
    ("line", "option", "parse", "value"),
    [
        ("start --cpus abc", "--cpus", parse_cpus, "abc"),
        ("start --cpus 0", "--cpus", parse_cpus, "0"),
        ("start --cpus nan", "--cpus", parse_cpus, "nan"),
        ("start --memory lots", "--memory", parse_memory_mb, "lots"),
        ("start --memory 1", "--memory", parse_memory_mb, "1"),
        ("start -e NOEQUALS", "-e/--env", parse_env_pair, "NOEQUALS"),
        ("start -e =value", "-e/--env", parse_env_pair, "=value"),
        ("start -e 'A B=1'", "-e/--env", parse_env_pair, "A B=1"),
        ("start -p not-a-port", "-p/--port", parse_port, "not-a-port"),
        ("start -p ²", "-p/--port", parse_port, "²"),
        ("start -v :::", "-v/--volume", parse_volume, ":::"),
        ("start --shm-size huge", "--shm-size", parse_memory_mb, "huge"),
        ("start --hostname bad_name", "--hostname", parse_hostname, "bad_name"),
        ("start --pids-limit 0", "--pids-limit", parse_count, "0"),
    ],
)
def test_start_refuses_what_the_shared_spec_parsers_refuse(line, option, parse, value):
    assert error_of(line) == f"%sandbox start: {option}: {spec_error(parse, value)} {START_USAGE}"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "start --profile nope",
            "%sandbox start: --profile: must be one of permissive, moderate, restrictive, "
            "got 'nope' " + START_USAGE,
        ),
        ("start --memory", "%sandbox start: --memory: expected one argument " + START_USAGE),
        ("start --foo", "%sandbox start: unrecognized arguments: --foo " + START_USAGE),
        ("start --mem 512", "%sandbox start: unrecognized arguments: --mem 512 " + START_USAGE),
        ("start extra", "%sandbox start: unrecognized arguments: extra " + START_USAGE),
        (
            "start --network --no-network",
            "%sandbox start: --no-network: not allowed with argument --network " + START_USAGE,
        ),
    ],
)
def test_start_errors(line, message):
    assert error_of(line) == message


# ------------------------------------------------------------------------ argument-less ones


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("stop", StopCommand()),
        ("restart", RestartCommand()),
        ("status", StatusCommand()),
        ("ports", PortsCommand()),
        ("list", ListCommand()),
    ],
)
def test_commands_without_arguments(line, command):
    assert sandbox(line) == command


@pytest.mark.parametrize("sub", ["stop", "restart", "status", "ports", "list"])
def test_commands_without_arguments_refuse_arguments(sub):
    assert error_of(f"{sub} now") == (
        f"%sandbox {sub}: unrecognized arguments: now (usage: %sandbox {sub})"
    )


# ------------------------------------------------------------------------------------ resize


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("resize 2 2048", ResizeCommand(2.0, 2048)),
        ("resize 0.5 512m", ResizeCommand(0.5, 512)),
        ("resize 1 1.5g", ResizeCommand(1.0, 1536)),
        ("resize 4 2GB", ResizeCommand(4.0, 2048)),
    ],
)
def test_resize(line, command):
    assert sandbox(line) == command


@pytest.mark.parametrize(
    ("line", "argument", "parse", "value"),
    [
        ("resize two 1024", "CPUS", parse_cpus, "two"),
        ("resize -1 1024", "CPUS", parse_cpus, "-1"),
        ("resize 1 0", "MEMORY_MB", parse_memory_mb, "0"),
        ("resize 1 2t", "MEMORY_MB", parse_memory_mb, "2t"),
        ("resize 1 2", "MEMORY_MB", parse_memory_mb, "2"),
    ],
)
def test_resize_refuses_what_the_shared_spec_parsers_refuse(line, argument, parse, value):
    expected = f"%sandbox resize: {argument}: {spec_error(parse, value)} {RESIZE_USAGE}"
    assert error_of(line) == expected


def test_resize_two_cpus_names_the_argument_and_the_usage():
    message = error_of("resize two 1024")
    assert message.startswith("%sandbox resize: CPUS: ")
    assert "'two'" in message
    assert message.endswith("(usage: %sandbox resize CPUS MEMORY_MB)")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("resize 1", "missing MEMORY_MB"),
        ("resize", "missing CPUS, MEMORY_MB"),
        ("resize 1 2048 3", "unrecognized arguments: 3"),
    ],
)
def test_resize_errors(line, message):
    assert error_of(line) == f"%sandbox resize: {message} {RESIZE_USAGE}"


@pytest.mark.parametrize(
    ("text", "megabytes"),
    [("1024", 1024), ("512m", 512), ("512MiB", 512), ("2g", 2048), ("0.5g", 512), (" 2 g ", 2048)],
)
def test_memory_sizes(text, megabytes):
    assert sandbox(f"resize 1 '{text}'") == ResizeCommand(1.0, megabytes)


# -------------------------------------------------------------------- names, paths, variables


def test_connect():
    assert sandbox("connect lab") == ConnectCommand("lab")


def test_connect_without_name():
    assert error_of("connect") == "%sandbox connect: missing NAME (usage: %sandbox connect NAME)"


def test_upload_and_download_keep_their_argument_order():
    assert sandbox("upload data.csv /workspace/data.csv") == UploadCommand(
        "data.csv", "/workspace/data.csv"
    )
    assert sandbox("download /workspace/out.png 'my out.png'") == DownloadCommand(
        "/workspace/out.png", "my out.png"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("upload a", "%sandbox upload: missing REMOTE (usage: %sandbox upload LOCAL REMOTE)"),
        (
            "download",
            "%sandbox download: missing REMOTE, LOCAL (usage: %sandbox download REMOTE LOCAL)",
        ),
    ],
)
def test_copy_errors(line, message):
    assert error_of(line) == message


def test_push_and_pull_take_one_or_more_names():
    assert sandbox("push df") == PushCommand(("df",))
    assert sandbox("pull df model") == PullCommand(("df", "model"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("push", "%sandbox push: missing NAME (usage: %sandbox push NAME [NAME...])"),
        (
            "pull 1x",
            "%sandbox pull: NAME: must be a Python variable name, got '1x' "
            "(usage: %sandbox pull NAME [NAME...])",
        ),
        (
            "push class",
            "%sandbox push: NAME: must be a Python variable name, got 'class' "
            "(usage: %sandbox push NAME [NAME...])",
        ),
    ],
)
def test_push_pull_errors(line, message):
    assert error_of(line) == message


# -------------------------------------------------------------------- dispatch, help, tokens


def test_unknown_subcommand():
    assert error_of("frobnicate") == (
        "%sandbox: unknown subcommand 'frobnicate' (choose from start, stop, restart, status, "
        "resize, ports, connect, list, upload, download, changes, export, push, pull)"
    )


@pytest.mark.parametrize("line", ["", "   ", "--help", "-h"])
def test_bare_sandbox_and_help_give_the_overview(line):
    assert sandbox(line) == HelpRequest(usage_text())


def test_overview_names_every_magic_and_subcommand():
    text = usage_text()
    for sub in ("start", "stop", "restart", "status", "resize", "ports", "connect", "list"):
        assert f"%sandbox {sub}" in text
    for sub in ("upload", "download", "push", "pull"):
        assert f"%sandbox {sub}" in text
    for magic in ("%sandbox_exec CMD", "%%sandbox_file PATH", "%%sandbox [--sh]"):
        assert magic in text


@pytest.mark.parametrize(
    "sub", ["start", "stop", "restart", "status", "resize", "ports", "connect", "list",
            "upload", "download", "push", "pull"],
)  # fmt: skip
def test_subcommand_help(sub):
    command = sandbox(f"{sub} --help")
    assert isinstance(command, HelpRequest)
    assert command.text.startswith(f"usage: %sandbox {sub}")
    assert "-h, --help" in command.text


def test_help_wins_over_missing_arguments():
    assert sandbox("resize -h").text.startswith("usage: %sandbox resize CPUS MEMORY_MB")


def test_start_help_lists_one_line_per_option_and_examples():
    text = sandbox("start --help").text
    for option in (
        "--image I",
        "--cpus N",
        "--memory MB",
        "-p SPEC, --port SPEC",
        "--network",
        "--no-network",
        "--mount-cwd",
        "--mount-home",
        "-v SPEC, --volume SPEC",
        "--read-only",
        "--no-read-only",
        "-e K=V, --env K=V",
        "--name N",
        "--persistent",
        "--profile P",
        "--workdir D",
        "--user U",
        "--runtime R",
        "--pids-limit N",
        "--shm-size SIZE",
        "--hostname H",
    ):
        assert f"\n  {option} " in text
    assert "examples:\n  %sandbox start" in text
    assert "for %sandbox connect NAME\n" in text


@pytest.mark.parametrize("line", ["start --image 'abc", 'start -e "A=1', "start \\"])
def test_unbalanced_quotes(line):
    assert error_of(line).startswith("%sandbox: cannot split the line: No ")


def test_quotes_group_words():
    assert sandbox("start -e 'GREETING=hello world'").options["env"] == {
        "GREETING": "hello world"}


def test_unknown_magic_names():
    with pytest.raises(CommandError, match=r"^%sandbox_file: not an AgentKernel line magic"):
        parse_line_magic("sandbox_file", "/x")
    with pytest.raises(CommandError, match=r"^%%sandbox_exec: not an AgentKernel cell magic"):
        parse_cell_magic("sandbox_exec", "ls", "")


def test_parser_exit_is_an_error_not_a_process_exit():
    with pytest.raises(CommandError, match=r"^%%sandbox: boom$"):
        commands._cell_parser().exit(2, "boom\n")


# ------------------------------------------------------------------------------ sandbox_exec


def test_exec_keeps_the_rest_of_the_line_verbatim():
    command = parse_line_magic("sandbox_exec", "  echo 'a  b' | wc -c > \"/tmp/x\" ")
    assert command == ExecCommand("echo 'a  b' | wc -c > \"/tmp/x\"")


def test_exec_does_not_need_balanced_quotes():
    assert parse_line_magic("sandbox_exec", "echo it's") == ExecCommand("echo it's")


def test_exec_without_command():
    with pytest.raises(CommandError) as info:
        parse_line_magic("sandbox_exec", "  ")
    assert str(info.value) == "%sandbox_exec: missing CMD (usage: %sandbox_exec CMD...)"


def test_exec_help():
    assert parse_line_magic("sandbox_exec", "--help").text.startswith("usage: %sandbox_exec CMD...")


# ------------------------------------------------------------------------------ cell magics


def test_file_defaults():
    assert parse_cell_magic("sandbox_file", "/workspace/a.txt", "hello\n") == FileCommand(
        "/workspace/a.txt", "hello\n", append=False, mode=None
    )


@pytest.mark.parametrize(
    ("line", "append", "mode"),
    [
        ("/x --append", True, None),
        ("/x --mode 0755", False, 0o755),
        ("/x --mode 600 --append", True, 0o600),
        ("--mode 0o4755 /x", False, 0o4755),
    ],
)
def test_file_options(line, append, mode):
    assert parse_cell_magic("sandbox_file", line, "") == FileCommand("/x", "", append, mode)


def test_file_without_path():
    with pytest.raises(CommandError) as info:
        parse_cell_magic("sandbox_file", "", "body")
    assert str(info.value) == f"%%sandbox_file: missing PATH {FILE_USAGE}"


@pytest.mark.parametrize("mode", ["999", "0x1ff", "rwx", "17777", "0o"])
def test_file_invalid_mode(mode):
    with pytest.raises(CommandError) as info:
        parse_cell_magic("sandbox_file", f"/x --mode {mode}", "")
    assert str(info.value) == (
        f"%%sandbox_file: --mode: must be an octal mode like 0644, got {mode!r} {FILE_USAGE}"
    )


def test_file_help():
    command = parse_cell_magic("sandbox_file", "--help", "ignored")
    assert command.text.startswith("usage: %%sandbox_file PATH [--append] [--mode MODE]")


def test_file_unbalanced_quote():
    with pytest.raises(CommandError, match=r"^%%sandbox_file: cannot split the line"):
        parse_cell_magic("sandbox_file", "'/x", "")


def test_cell_python_and_shell():
    assert parse_cell_magic("sandbox", "", "x = 1") == CellCommand("x = 1", shell=False)
    assert parse_cell_magic("sandbox", "--sh", "ls\n") == CellCommand("ls\n", shell=True)


def test_cell_errors_and_help():
    with pytest.raises(CommandError) as info:
        parse_cell_magic("sandbox", "--bash", "ls")
    assert str(info.value) == (
        "%%sandbox: unrecognized arguments: --bash (usage: %%sandbox [--sh])"
    )
    assert parse_cell_magic("sandbox", "-h", "").text.startswith("usage: %%sandbox [--sh]")


# ---------------------------------------------------------------------------- split_magic


@pytest.mark.parametrize(
    "code",
    [
        "",
        "\n  \n",
        "x = 1",
        "%time x = 1",
        "%%time\nx = 1",
        "%%sh\n%sandbox status",
        "%sandboxes",
        "%sandbox?",
        "x = '''\n%sandbox start\n'''",
        "x = (y\n%sandbox)",
        's = """\n%%sandbox_file /x\n"""',
    ],
)
def test_split_leaves_other_cells_to_the_runner(code):
    assert split_magic(code) is None
    assert parse_code(code) is None


def test_split_one_line_magic():
    assert split_magic("%sandbox status") == [MagicCall("line", "sandbox", "status", "")]


def test_split_several_line_magics_with_blanks_and_comments():
    code = "\n  %sandbox start --cpus 2\n\n# then\n%sandbox_exec ls -la  \n%sandbox\n"
    assert split_magic(code) == [
        MagicCall("line", "sandbox", "start --cpus 2", ""),
        MagicCall("line", "sandbox_exec", "ls -la", ""),
        MagicCall("line", "sandbox", "", ""),
    ]


def test_split_cell_magic_keeps_the_body_verbatim():
    code = "\n%%sandbox_file /a.sh --mode 755\n#!/bin/sh\n\necho hi\n"
    assert split_magic(code) == [
        MagicCall("cell", "sandbox_file", "/a.sh --mode 755", "#!/bin/sh\n\necho hi\n")
    ]


def test_split_cell_magic_with_only_a_first_line():
    assert split_magic("%%sandbox --sh") == [MagicCall("cell", "sandbox", "--sh", "")]


def test_split_mixing_magics_and_code_is_an_error():
    with pytest.raises(CommandError) as info:
        split_magic("%sandbox status\nx = 1")
    assert str(info.value) == (
        "%sandbox: magic lines cannot share a cell with other code (line 2: 'x = 1'); "
        "put them in a cell of their own"
    )


def test_split_mixing_with_other_magics_is_an_error_too():
    with pytest.raises(CommandError, match=r"\(line 1: '!ls'\)"):
        split_magic("!ls\n%sandbox_exec ls")


@pytest.mark.parametrize("code", ["# note\n%%sandbox_file /x\nbody", "%sandbox stop\n%%sandbox"])
def test_split_cell_magic_below_the_first_line(code):
    with pytest.raises(CommandError,
                       match=r"must be the first line of its cell \(found on line 2\)"):
        split_magic(code)


def test_parse_code_parses_every_magic_in_order():
    assert parse_code("%sandbox stop\n%sandbox start --memory 1g") == [
        StopCommand(),
        StartCommand({"memory_mb": 1024}),
    ]
    assert parse_code("%%sandbox_file /x --append\ny") == [FileCommand("/x", "y", append=True)]


def test_parse_code_is_all_or_nothing():
    with pytest.raises(CommandError, match=r"^%sandbox resize: CPUS"):
        parse_code("%sandbox stop\n%sandbox resize two 1024")


# -------------------------------------------------------------------------------- properties

COMMAND_TYPES = tuple(
    [StartCommand, StopCommand, RestartCommand, StatusCommand, PortsCommand, ListCommand]
    + [ResizeCommand, ConnectCommand, UploadCommand, DownloadCommand, PushCommand, PullCommand]
    + [FileCommand, ExecCommand, CellCommand, HelpRequest]
)
SUBCOMMANDS = ["start", "stop", "resize", "connect", "upload", "push", "pull", "list"]
WORDS = st.sampled_from(
    SUBCOMMANDS
    + ["--cpus", "--memory", "-p", "-e", "-v", "--profile", "--mode", "--help", "-h", "--", "-"]
    + ["--network", "--no-network", "A=1", "=", "2g", "0", "-1", "1e400", "'", '"', "\\", "%"]
)


def parses_or_refuses(call) -> None:
    """``call()`` returns a command or raises CommandError; nothing else escapes."""
    try:
        command = call()
    except CommandError as err:
        assert len(str(err).splitlines()) == 1
    else:
        assert isinstance(command, COMMAND_TYPES)


@given(st.text())
def test_any_line_parses_or_raises_magic_error(line):
    parses_or_refuses(lambda: parse_line_magic("sandbox", line))


@given(st.lists(st.one_of(WORDS, st.text(max_size=8)), max_size=8))
def test_any_word_sequence_parses_or_raises_magic_error(words):
    parses_or_refuses(lambda: parse_line_magic("sandbox", " ".join(words)))


@given(st.text(), st.text())
def test_any_file_magic_parses_or_raises_magic_error(line, body):
    parses_or_refuses(lambda: parse_cell_magic("sandbox_file", line, body))


@given(st.text())
def test_any_cell_splits_or_raises_magic_error(code):
    try:
        calls = split_magic(code)
    except CommandError as err:
        assert len(str(err).splitlines()) == 1
    else:
        assert calls is None or all(call.name in commands.OUR_MAGICS for call in calls)


@given(st.lists(st.sampled_from(["%sandbox ", "%%sandbox_file ", "x = 1", "\n", "#"]) | WORDS))
def test_any_magic_like_cell_parses_or_raises_magic_error(parts):
    code = "".join(parts)
    try:
        commands = parse_code(code)
    except CommandError as err:
        assert len(str(err).splitlines()) == 1
    else:
        assert commands is None or all(isinstance(c, COMMAND_TYPES) for c in commands)


def test_magic_error_belongs_to_the_sandbox_error_family():
    assert issubclass(CommandError, SandboxError)


def test_a_huge_memory_size_is_a_magic_error():
    with pytest.raises(CommandError, match="MEMORY_MB"):
        sandbox("resize 1 " + "9" * 400)


MAGIC_LIKE = st.lists(st.sampled_from(
    ["%sandbox", "%%sandbox_file", "%sandbox_exec", "%%sandbox", "% sandbox", "%sand", "box",
     "%time", "%%sh", " ", "\n", "#", "x = 1", "'", "%", "%%", "sandbox", "SANDBOX", "ſandbox"])
    | WORDS | st.text(max_size=4))


@given(MAGIC_LIKE)
def test_a_cell_that_cannot_call_our_magics_is_told_without_the_parser(parts):
    """The kernel loads this module only for a cell that may call one of our magics
    (``magic_names.may_call_ours``): any cell it lets by must be one the parser lets by."""
    code = "".join(parts)
    if magic_names.may_call_ours(code):
        return
    try:
        assert parse_code(code) is None
    except CommandError as err:
        pytest.fail(f"{code!r} would have been refused: {err}")


def test_every_magic_name_holds_the_stem():
    assert all(magic_names.STEM in name for name in commands.OUR_MAGICS)
