#!/usr/bin/env bash
""":"
# Loads models before traffic comes: into a running server, or, before the server starts (an init
# container), into its model cache; `--help` says more.
#
# The runbook's init container runs this file with `python scripts/preload-models.sh`. To Python, the
# lines from the quotes above to the closing ones at the end are a string, and the two lines after them
# hand the file to bash; to bash, the quotes above are the command `:`, and the Python lines at the end
# an unused here-document. Keep three double quotes in a row, and backslashes other than Python's escapes, out of the bash part.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/common.sh"
source "$SCRIPTS_DIR/lib/inference.sh"

usage() {
  cat <<'EOF'
Usage: preload-models.sh [--mode auto|server|cache] [--timeout SECONDS] [MODEL...]

Loads the models, then waits until each is ready. Two ways, as the pod's lifecycle needs:

  server  a server answers at MODELSERVE_URL: each model not already ready is loaded through it
          (`modelserve models load`, control mode explicit or on-demand), then GET
          /v2/models/MODEL/ready must answer 200
  cache   no server runs yet, as in an init container: each model of MODEL_REPOSITORY is mirrored
          into MODEL_CACHE_DIR and verified (an s3:// repository), or read (a local one), with the
          server's own code, so the server's load finds it in place and a missing model fails here

auto (the default) takes server when something answers at MODELSERVE_URL right away, else cache. The
runbook's init container (same image, the pod's settings and /models volume):

  initContainers:
  - name: model-loader
    image: model-serving:latest
    command: ['python', 'scripts/preload-models.sh']

The models: the MODEL arguments, else PRELOAD_MODELS, else LOAD_MODELS (comma- or space-separated;
* is every model), else every model of the repository.

Options:
  --mode MODE        auto, server or cache (default: PRELOAD_MODE, else auto)
  --timeout SECONDS  how long the models may take to be ready, all together (default:
                     PRELOAD_TIMEOUT, else 600)
  -h, --help         this text

Environment:
  MODELSERVE_URL     the server (default http://127.0.0.1:8000)
  MODELSERVE_TOKEN   API key or JWT with the admin scope, sent as a bearer token when set
  MODEL_REPOSITORY, MODEL_CACHE_DIR  in cache mode, where the models come from and go to, read as
                     the server reads them
  MODELSERVE_BIN     the modelserve executable (default: the checkout's .venv, else PATH)

Exit status: 0 every model is ready (server) or in place (cache); 1 one is not, or no server
answered in server mode (each reason is on stderr); 2 wrong usage.
EOF
}

main() {
  local mode=${PRELOAD_MODE:-auto} timeout=${PRELOAD_TIMEOUT:-600} models=()
  while (($#)); do
    case $1 in
      -h | --help) usage && exit 0 ;;
      --mode) mode=${2-} && shift ;;
      --timeout) timeout=${2-} && shift ;;
      -*) usage_error "unknown option $1" ;;
      *) models+=("$1") ;;
    esac
    shift
  done
  [[ $mode =~ ^(auto|server|cache)$ ]] || usage_error "--mode is auto, server or cache, not '$mode'"
  [[ $timeout =~ ^[0-9]+$ ]] || usage_error "--timeout takes a number of seconds"
  if ((${#models[@]} == 0)); then
    local named=${PRELOAD_MODELS:-${LOAD_MODELS-}}
    [[ $named == '*' ]] || IFS=', ' read -r -a models <<<"$named"
  fi
  need_modelserve
  if [[ $mode == auto ]]; then
    mode=cache
    if command -v curl >/dev/null && HTTP_TIMEOUT=5 http GET /health/live; then
      mode=server
    fi
    echo "preloading into the $([[ $mode == server ]] && echo "server at $(server_url)" || echo "model cache")"
  fi
  if [[ $mode == cache ]]; then
    find_python
    "$PYTHON" "$SCRIPTS_DIR/lib/mirror.py" "${models[@]}" || die 1 "a model could not be preloaded (above)"
    return
  fi
  require_curl
  preload_into_server "$timeout" "${models[@]}"
}

# preload_into_server SECONDS [MODEL...]
preload_into_server() {
  local timeout=$1 model failed=() loaded
  local deadline=$((SECONDS + timeout))
  shift
  local models=("$@")
  wait_until "$timeout" "no server answered at $(server_url)" http GET /health/live 2>/dev/null ||
    die 1 "no server answered at $(server_url) within $timeout s: $(answer)"
  if ((${#models[@]} == 0)); then
    loaded=$(list_models) || die 1 "cannot list the models of $(server_url): $(answer)"
    [[ -n $loaded ]] || die 1 "the repository of $(server_url) holds no model"
    mapfile -t models <<<"$loaded"
  fi
  for model in "${models[@]}"; do
    if http GET "/v2/models/$model/ready" && [[ $HTTP_STATUS == 200 ]]; then
      echo "model '$model' is ready already"
      continue
    fi
    if ! loaded=$(COLUMNS=1000 "$MODELSERVE_BIN" models load "$model" --url "$(server_url)" 2>&1); then
      fail "model '$model' could not be loaded: ${loaded//$'\n'/ }"
      failed+=("$model")
      continue
    fi
    echo "$loaded"
    if ! wait_for_model "$model" $((deadline > SECONDS ? deadline - SECONDS : 0)); then
      failed+=("$model")
    fi
  done
  if ((${#failed[@]})); then
    die 1 "not ready: ${failed[*]}"
  fi
  echo "ready at $(server_url): ${models[*]}"
}

# Every model of the server's repository, loaded or not.
list_models() {
  http POST /v2/repository/index && [[ $HTTP_STATUS == 200 ]] || return 1
  json_get 'sorted({m["name"] for m in data})' <<<"$HTTP_BODY"
}

main "$@"
exit
: <<'PYTHON'
"""
import os
import sys

os.execvp("bash", ["bash", *sys.argv])
PYTHON
