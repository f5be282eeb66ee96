# Shell helpers shared by the set-up scripts and the commands that call set-up. Source it.

# start_daemon LOG CMD [ARG...]: start CMD as a daemon that outlives the calling script, writing
# to LOG. It runs from / (conmon, which the Podman service starts for each container, writes a
# file named "oom" into its working folder on an OOM kill), in a session of its own, and holds
# none of the caller's stdin, stdout or stderr: a caller reading set-up's output through a pipe
# (python=$(scripts/setup.sh | tail -n 1)) waits for that pipe's end, which a daemon holding it
# would put off for ever. Nor does it hold any other descriptor the caller has open (a CI step's
# lock or pipe): every one but stdin, stdout and stderr is closed before CMD runs.
start_daemon() {
  local log_file=$1
  shift
  (
    cd / || exit
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then exec {fd}>&-; fi
    done
    exec setsid "$@"
  ) </dev/null >"$log_file" 2>&1 &
}

# setup_python [ARG...]: run scripts/setup.sh and print the venv's python path (its last line).
# Set-up's output goes through a file, not a pipe, so nothing it leaves running can keep the
# caller waiting; the rest of that output goes to stderr.
setup_python() {
  local output status=0
  output=$(mktemp)
  scripts/setup.sh "$@" >"$output" || status=$?
  sed '$d' "$output" >&2
  tail -n 1 "$output"
  rm -f "$output"
  return "$status"
}

# oldest_venv: make (or reuse) .venv-oldest, a venv with the oldest releases pyproject.toml
# accepts of the libraries the kernel builds on (tests/oldest-constraints.txt: ipykernel,
# jupyter_client, docker-py, pyzmq, traitlets, IPython...), the package (editable) and what
# the kernel's tests import (pytest, hypothesis, jupyter_kernel_test); print its python. Made
# again from nothing when pyproject.toml, the constraints or this file change. Run from the
# repository's root.
oldest_venv() {
  local venv=${AGENTKERNEL_OLDEST_VENV:-$PWD/.venv-oldest}
  local stamp=$venv/.agentkernel-installed
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] ||
     [ tests/oldest-constraints.txt -nt "$stamp" ] || [ scripts/lib.sh -nt "$stamp" ]; then
    printf '[setup] making %s with the oldest accepted versions\n' "$venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 || return
    "$venv/bin/pip" install -q -c tests/oldest-constraints.txt -e . pytest pytest-timeout \
      hypothesis jupyter_kernel_test >&2 || return
    # the pinned IPython 8 of images with an older matplotlib, as setup.sh installs it for .venv
    "$venv/bin/python" -c 'from agentkernel.sandbox import ipython8; ipython8.ensure_installed()' \
      >&2 || return
    touch "$stamp"
  fi
  echo "$venv/bin/python"
}
