#!/usr/bin/env bash
# A quick check that a deployment serves: health, readiness, inference, metrics; `--help` says more.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/common.sh"
source "$SCRIPTS_DIR/lib/inference.sh"
source "$SCRIPTS_DIR/lib/checks.sh"

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME [--model MODEL]... [--wait SECONDS] [ENV]

The checks to run after a deployment or a maintenance window, as the runbook runs them:

  ./scripts/smoke-test.sh production

  health     GET /health answers 200, status healthy (a model that failed to load fails it)
  readiness  GET /health/ready answers 200
  inference  each model answers one request (test-inference.sh's check); the models named with
             --model or SMOKE_MODELS, else every model the server has READY
  metrics    GET /metrics answers 200 with the model_serving_ series

ENV picks the server: dev (MODELSERVE_URL_DEV, default http://127.0.0.1:8000: \`make run\`, or
\`kubectl -n model-serving port-forward deploy/model-serving 8000\`), staging (MODELSERVE_URL_STAGING,
no default) or production (MODELSERVE_URL_PRODUCTION, default https://api.example.com, the prod
Ingress's host). MODELSERVE_URL, when set, wins over all of them. Without ENV: dev.

Options:
  --model MODEL   a model to check inference on (repeatable; default: every READY model)
  --wait SECONDS  how long a model may take to be ready (default 30)
  -h, --help      this text

Environment:
  MODELSERVE_URL    the server, whatever ENV says
  MODELSERVE_TOKEN  API key or JWT, sent as a bearer token when set
  SMOKE_MODELS      models to check inference on, comma-separated (when no --model is given)
  MODELSERVE_BIN    the modelserve executable (default: the checkout's .venv, else PATH)

Exit status: 0 every check passed; 1 a check failed (each failure is on stderr); 2 wrong usage.
EOF
}

main() {
  local environment=dev wait=30 models=() model
  while (($#)); do
    case $1 in
      -h | --help) usage && exit 0 ;;
      --model) models+=("${2-}") && shift ;;
      --wait) wait=${2-} && shift ;;
      -*) usage_error "unknown option $1" ;;
      *) environment=$1 ;;
    esac
    shift
  done
  [[ $wait =~ ^[0-9]+$ ]] || usage_error "--wait takes a number of seconds"
  MODELSERVE_URL=$(environment_url "$environment") || exit 2
  export MODELSERVE_URL
  require_curl
  need_modelserve
  echo "smoke test of $environment at $(server_url)"

  check health health_is_healthy
  check readiness answers_200 /health/ready
  models_to_check inference
  for model in "${models[@]}"; do
    check "inference $model" model_answers "$model" "$wait"
  done
  check metrics metrics_are_exported
  checks_done
}

model_answers() {
  wait_for_model "$1" "$2" && infer "$1" 1 "$2" >/dev/null && echo "answered"
}

main "$@"
