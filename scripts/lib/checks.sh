# shellcheck shell=bash
# The checks smoke-test.sh and integration-test.sh run, and how they are reported: one line per check,
# "ok" on stdout or "FAIL" on stderr with the reason, every check run even after one failed. Sourced
# after common.sh and inference.sh.

CHECKS_FAILED=0

# check NAME COMMAND...: runs COMMAND, which prints a short result (or, failing, the reason).
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    printf 'ok    %s%s\n' "$name" "${out:+: ${out//$'\n'/ }}"
  else
    check_failed "$name" "${out//"$SCRIPT_NAME: "/}"
  fi
}

# check_failed NAME REASON: reports a check that failed.
check_failed() {
  printf '%s: FAIL  %s: %s\n' "$SCRIPT_NAME" "$1" "$2" >&2
  CHECKS_FAILED=$((CHECKS_FAILED + 1))
}

# checks_done: the summary line, and the exit status: 0 when every check passed, 1 otherwise.
checks_done() {
  if ((CHECKS_FAILED)); then
    fail "$CHECKS_FAILED check(s) failed against $(server_url)"
    return 1
  fi
  echo "every check passed against $(server_url)"
}

# environment_url ENV: the server's URL for a deployment environment. MODELSERVE_URL wins; otherwise
# each environment has a variable of its own, with the address our manifests give it by default.
environment_url() {
  if [[ -n ${MODELSERVE_URL-} ]]; then
    server_url
    return
  fi
  case $1 in
    dev | development | local)
      # The dev overlay has no Ingress: `kubectl -n model-serving port-forward deploy/model-serving 8000`.
      printf '%s' "${MODELSERVE_URL_DEV:-http://127.0.0.1:8000}"
      ;;
    staging | stage)
      [[ -n ${MODELSERVE_URL_STAGING-} ]] ||
        usage_error "set MODELSERVE_URL_STAGING (or MODELSERVE_URL): no staging address is configured here"
      printf '%s' "$MODELSERVE_URL_STAGING"
      ;;
    prod | production)
      # The host of the prod overlay's Ingress (deploy/kubernetes/overlays/prod/ingress.yaml).
      printf '%s' "${MODELSERVE_URL_PRODUCTION:-https://api.example.com}"
      ;;
    *) usage_error "unknown environment '$1': dev, staging or production" ;;
  esac
}

health_is_healthy() {
  http GET /health || {
    answer
    return 1
  }
  local status
  status=$(json_get 'data.get("status")' <<<"$HTTP_BODY" 2>/dev/null) || status=
  if [[ $HTTP_STATUS == 200 && $status == healthy ]]; then
    json_get '", ".join(data.get("models_loaded", [])) or "no model loaded"' <<<"$HTTP_BODY"
    return 0
  fi
  printf '%s (status %s)' "$(answer)" "${status:-unknown}"
  [[ -z $HTTP_BODY ]] || json_get '" ".join(f"{k}: {v}" for k, v in data.get("models_failed", {}).items())' \
    <<<"$HTTP_BODY" 2>/dev/null || true
  return 1
}

# answers_200 PATH: GET PATH answers 200.
answers_200() {
  http GET "$1" && [[ $HTTP_STATUS == 200 ]] || {
    answer
    return 1
  }
}

metrics_are_exported() {
  answers_200 /metrics || return 1
  if ! grep -q '^# TYPE model_serving_requests_total ' <<<"$HTTP_BODY"; then
    echo "no model_serving_requests_total in /metrics"
    return 1
  fi
  echo "$(grep -c '^model_serving_' <<<"$HTTP_BODY") model_serving_ samples"
}

# ready_models: the models the server serves now, one per line.
ready_models() {
  http POST /v2/repository/index '{"ready": true}' && [[ $HTTP_STATUS == 200 ]] || {
    echo "cannot list the models of $(server_url): $(answer)"
    return 1
  }
  json_get 'sorted({m["name"] for m in data if m.get("state") == "READY"})' <<<"$HTTP_BODY"
}

# models_to_check LABEL: fills the caller's `models` when no model was named: SMOKE_MODELS, else every
# model the server serves now; a failure to list them is a failed check under LABEL.
models_to_check() {
  local label=$1 listed
  if ((${#models[@]} == 0)) && [[ -n ${SMOKE_MODELS-} ]]; then
    IFS=', ' read -r -a models <<<"$SMOKE_MODELS"
  fi
  if ((${#models[@]} == 0)); then
    if ! listed=$(ready_models); then
      check_failed "$label" "$listed"
    elif [[ -z $listed ]]; then
      check_failed "$label" "no model is READY at $(server_url) (POST /v2/repository/index)"
    else
      mapfile -t models <<<"$listed"
    fi
  fi
}
