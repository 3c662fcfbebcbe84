# shellcheck shell=bash
# What the operations scripts share: messages, the server's address and API key, HTTP calls with curl,
# and where `modelserve` and its Python are. Sourced, never run.
#
# MODELSERVE_URL (default http://127.0.0.1:8000) and MODELSERVE_TOKEN are the variables `modelserve`'s
# own client commands read, so a shell set up for one is set up for the other.

SCRIPT_NAME=${0##*/}
SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HTTP_TIMEOUT=30 # seconds a call may take

# Progress goes to stdout; what failed goes to stderr, prefixed with the script's name.
fail() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
  local code=$1
  shift
  fail "$@"
  exit "$code"
}
usage_error() {
  fail "$*"
  printf 'Run %s --help for usage.\n' "$SCRIPT_NAME" >&2
  exit 2
}

server_url() {
  local url=${MODELSERVE_URL:-http://127.0.0.1:8000}
  printf '%s' "${url%/}"
}

# http METHOD PATH [JSON]: sets HTTP_STATUS (000 when nothing answered) and HTTP_BODY (the answer, or
# curl's reason). Returns 0 whenever a server answered, whatever the status.
http() {
  local method=$1 path=$2 data=${3-} out
  local args=(-sS --max-time "$HTTP_TIMEOUT" -X "$method" -w '\n%{http_code}')
  if [[ -n $data ]]; then
    args+=(-H 'Content-Type: application/json' --data "$data")
  fi
  # The key goes in curl's configuration on stdin, not on the command line, where `ps` would show it.
  if ! out=$(curl "${args[@]}" --config - "$(server_url)$path" 2>&1 <<<"$(curl_config)"); then
    HTTP_STATUS=000
    out=${out%$'\n'000}
    HTTP_BODY=${out%$'\n'}
    return 1
  fi
  HTTP_STATUS=${out##*$'\n'}
  HTTP_BODY=${out%$'\n'*}
}

curl_config() {
  if [[ -n ${MODELSERVE_TOKEN-} ]]; then
    local token=${MODELSERVE_TOKEN//\\/\\\\}
    printf 'header = "Authorization: Bearer %s"\n' "${token//\"/\\\"}"
  fi
}

# The server's "error" message from HTTP_BODY, or the body itself.
http_error() {
  local message
  message=$(sed -n 's/.*"error": *"\(\([^"\\]\|\\.\)*\)".*/\1/p' <<<"$HTTP_BODY")
  printf '%s' "${message:-$HTTP_BODY}"
}

# The last call's outcome for a message: "503: <the server's error>", or "no answer (<curl's reason>)".
answer() {
  if [[ $HTTP_STATUS == 000 ]]; then
    printf 'no answer (%s)' "$HTTP_BODY"
  else
    printf '%s: %s' "$HTTP_STATUS" "$(http_error)"
  fi
}

require_curl() {
  command -v curl >/dev/null || die 1 "curl is not installed; it is how this script talks to the server"
}

# MODELSERVE_BIN: `modelserve` as that variable names it, else the checkout's (make install), else PATH's.
# Returns 1 when there is none.
locate_modelserve() {
  if [[ -n ${MODELSERVE_BIN-} ]]; then
    [[ -x $MODELSERVE_BIN ]]
  elif [[ -x $SCRIPTS_DIR/../.venv/bin/modelserve ]]; then
    MODELSERVE_BIN=$SCRIPTS_DIR/../.venv/bin/modelserve
  elif command -v modelserve >/dev/null; then
    MODELSERVE_BIN=$(command -v modelserve)
  else
    return 1
  fi
}

need_modelserve() {
  if ! locate_modelserve; then
    [[ -z ${MODELSERVE_BIN-} ]] || die 1 "MODELSERVE_BIN=$MODELSERVE_BIN is not an executable"
    die 1 "modelserve not found: run \`make install\` in the checkout, put modelserve on PATH, or set MODELSERVE_BIN"
  fi
}

# PYTHON: the interpreter of modelserve's environment when there is one (it has modelserve itself and
# fsspec), else python3.
PYTHON=
find_python() {
  if [[ -n $PYTHON ]]; then
    return
  fi
  if locate_modelserve && [[ -x $(dirname "$MODELSERVE_BIN")/python ]]; then
    PYTHON=$(dirname "$MODELSERVE_BIN")/python
  else
    PYTHON=$(command -v python3 || command -v python) || die 1 "python3 not found"
  fi
}

# json_get EXPRESSION: evaluates a Python expression over `data`, the JSON document on stdin, and
# prints the result one item per line if it is a list.
json_get() {
  find_python
  "$PYTHON" -c '
import json, sys
data = json.load(sys.stdin)
value = eval(sys.argv[1], {}, {"data": data})
print("\n".join(map(str, value)) if isinstance(value, list) else value)
' "$1"
}

# wait_until SECONDS DESCRIPTION COMMAND...: runs COMMAND every half second until it succeeds, or
# fails after SECONDS, naming DESCRIPTION.
wait_until() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      fail "$what: not within ${seconds} s"
      return 1
    fi
    sleep 0.5
  done
}
