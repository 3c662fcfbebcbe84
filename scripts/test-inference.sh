#!/usr/bin/env bash
# One model of a running server answers inference requests; `--help` says how it is run.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/common.sh"
source "$SCRIPTS_DIR/lib/inference.sh"

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME [--count N] [--wait SECONDS] MODEL

Checks that MODEL, on the server at MODELSERVE_URL, is ready and answers inference: N requests built
from the model's V2 metadata (\`modelserve warmup\`), or, for a generative model (one GET /v1/models
lists), N one-token generations. As the runbook runs it after loading a new version:

  ./scripts/test-inference.sh resnet50-fp16-v2

Options:
  --count N       requests to send (default 3)
  --wait SECONDS  how long to wait for the server and the model to be ready (default 30)
  -h, --help      this text

Environment:
  MODELSERVE_URL    the server (default http://127.0.0.1:8000)
  MODELSERVE_TOKEN  API key or JWT, sent as a bearer token when set
  MODELSERVE_BIN    the modelserve executable (default: the checkout's .venv, else PATH)

Exit status: 0 the model answered every request; 1 it is unknown, not ready in time, or a request
failed, or the server cannot be reached (the reason is on stderr); 2 wrong usage.
EOF
}

main() {
  local count=3 wait=30 model=
  while (($#)); do
    case $1 in
      -h | --help) usage && exit 0 ;;
      --count) count=${2-} && shift ;;
      --wait) wait=${2-} && shift ;;
      -*) usage_error "unknown option $1" ;;
      *) [[ -z $model ]] || usage_error "one model at a time (got '$model' and '$1')"; model=$1 ;;
    esac
    shift
  done
  [[ -n $model ]] || usage_error "name the model to test"
  [[ $count =~ ^[1-9][0-9]*$ ]] || usage_error "--count takes a positive whole number"
  [[ $wait =~ ^[0-9]+$ ]] || usage_error "--wait takes a number of seconds"
  require_curl
  need_modelserve

  wait_for_model "$model" "$wait" || exit 1
  infer "$model" "$count" "$wait" || exit 1
  echo "ok: model '$model' answered $count inference request(s) at $(server_url)"
}

main "$@"
