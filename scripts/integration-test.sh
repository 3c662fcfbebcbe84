#!/usr/bin/env bash
# The critical paths of a running server, checked end to end; `--help` lists them.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/common.sh"
source "$SCRIPTS_DIR/lib/inference.sh"
source "$SCRIPTS_DIR/lib/checks.sh"

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME [--model MODEL]... [--duration SECONDS] [--wait SECONDS] [ENV]

The broader checks of the post-maintenance checklist, as the runbook runs them:

  ./scripts/integration-test.sh

  probes       /health (healthy), /health/live, /health/startup, /health/ready, /v2/health/live,
               /v2/health/ready, and the V2 server metadata (GET /v2)
  per model    metadata and configuration (GET /v2/models/MODEL, .../config); then, for a model
               with tensors, a short load over HTTP/JSON, HTTP with binary tensors and, when
               MODELSERVE_GRPC_ADDRESS is set, gRPC (\`modelserve bench\`: 2 clients for --duration
               seconds each, every answer a success); for a generative model, a generation and an
               OpenAI completion of one token; then its statistics (GET /v2/models/MODEL/stats)
  errors       an unknown model answers 404, a malformed request 400, each with its error message
  metrics      GET /metrics answers 200 with the model_serving_ series

The models: those named with --model or SMOKE_MODELS, else every model the server has READY.
ENV picks the server as for smoke-test.sh (dev, staging, production; MODELSERVE_URL wins); without
ENV, MODELSERVE_URL or http://127.0.0.1:8000.

Options:
  --model MODEL        a model to check (repeatable; default: every READY model)
  --duration SECONDS   load per protocol and model (default 1)
  --wait SECONDS       how long a model may take to be ready (default 30)
  -h, --help           this text

Environment:
  MODELSERVE_URL          the server (default http://127.0.0.1:8000)
  MODELSERVE_GRPC_ADDRESS host:port of its gRPC endpoint; unset, gRPC is not checked
  MODELSERVE_TOKEN        API key or JWT, sent as a bearer token when set
  SMOKE_MODELS            models to check, comma-separated (when no --model is given)
  MODELSERVE_BIN          the modelserve executable (default: the checkout's .venv, else PATH)

Exit status: 0 every check passed; 1 a check failed (each failure is on stderr); 2 wrong usage.
EOF
}

main() {
  local environment=dev duration=1 wait=30 models=() model
  while (($#)); do
    case $1 in
      -h | --help) usage && exit 0 ;;
      --model) models+=("${2-}") && shift ;;
      --duration) duration=${2-} && shift ;;
      --wait) wait=${2-} && shift ;;
      -*) usage_error "unknown option $1" ;;
      *) environment=$1 ;;
    esac
    shift
  done
  [[ $duration =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage_error "--duration takes a number of seconds"
  [[ $wait =~ ^[0-9]+$ ]] || usage_error "--wait takes a number of seconds"
  MODELSERVE_URL=$(environment_url "$environment") || exit 2
  export MODELSERVE_URL
  require_curl
  need_modelserve
  find_python
  echo "integration test at $(server_url)"

  check health health_is_healthy
  local probe
  for probe in /health/live /health/startup /health/ready /v2/health/live /v2/health/ready; do
    check "$probe" answers_200 "$probe"
  done
  check "server metadata" server_metadata

  models_to_check models
  local generative
  generative=$(generative_models) || generative=
  for model in "${models[@]}"; do
    check "$model ready" wait_for_model "$model" "$wait"
    check "$model metadata" answers_200 "/v2/models/$model"
    check "$model config" answers_200 "/v2/models/$model/config"
    if grep -qxF -- "$model" <<<"$generative"; then
      check "$model generate" generates "$model"
      check "$model completion" completes "$model"
    else
      check "$model http-json, http-binary" bench "$model" "$duration" http-json http-binary
      if [[ -n ${MODELSERVE_GRPC_ADDRESS-} ]]; then
        check "$model grpc" bench "$model" "$duration" grpc
      else
        echo "skip  $model grpc: set MODELSERVE_GRPC_ADDRESS (host:port) to check it"
      fi
      check "$model bad input" answers_400 "$model"
    fi
    check "$model statistics" answers_200 "/v2/models/$model/stats"
  done
  check "unknown model" unknown_model_answers_404
  check metrics metrics_are_exported
  checks_done
}

server_metadata() {
  answers_200 /v2 || return 1
  json_get '"{} {}".format(data["name"], data["version"])' <<<"$HTTP_BODY"
}

generates() {
  http POST "/v2/models/$1/generate" '{"text_input": "Hello", "parameters": {"max_tokens": 1}}' &&
    [[ $HTTP_STATUS == 200 ]] || {
    answer
    return 1
  }
  json_get '"finish_reason " + str(data.get("finish_reason"))' <<<"$HTTP_BODY"
}

completes() {
  http POST /v1/completions "{\"model\": \"$1\", \"prompt\": \"Hello\", \"max_tokens\": 1}" &&
    [[ $HTTP_STATUS == 200 ]] || {
    answer
    return 1
  }
  json_get '"{} token(s)".format(data["usage"]["completion_tokens"])' <<<"$HTTP_BODY"
}

# bench MODEL SECONDS PROTOCOL...: a short load per protocol; every request must succeed.
bench() {
  local model=$1 duration=$2 protocol args=()
  shift 2
  for protocol in "$@"; do
    args+=(--protocol "$protocol")
  done
  "$MODELSERVE_BIN" bench "$model" --url "$(server_url)" --grpc-address "${MODELSERVE_GRPC_ADDRESS-}" \
    "${args[@]}" --concurrency 2 --duration "$duration" --warmup 0 --json | "$PYTHON" -c '
import json, sys
points = [json.loads(line) for line in sys.stdin if line.startswith("{")]
bad = [p for p in points if p["errors"] or not p["inferences_per_second"]]
print(", ".join("{protocol} {inferences_per_second}/s, {errors} errors".format(**p) for p in points))
sys.exit(1 if bad or not points else 0)'
}

answers_400() {
  http POST "/v2/models/$1/infer" '{"inputs": []}' || {
    answer
    return 1
  }
  [[ $HTTP_STATUS == 400 && -n $(http_error) ]] || {
    echo "a request without inputs: $(answer), not 400 with a message"
    return 1
  }
  http_error
}

unknown_model_answers_404() {
  local name=integration-test-no-such-model
  http POST "/v2/models/$name/infer" '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0]}]}' || {
    answer
    return 1
  }
  [[ $HTTP_STATUS == 404 ]] && grep -q "$name" <<<"$(http_error)" || {
    echo "an unknown model: $(answer), not 404 naming it"
    return 1
  }
  echo 404
}

main "$@"
