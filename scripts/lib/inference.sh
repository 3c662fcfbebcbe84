# shellcheck shell=bash
# Checking that a model serves: waiting for it to be ready and sending it inference requests. Sourced
# after common.sh by test-inference.sh, smoke-test.sh and integration-test.sh.

# wait_for_model MODEL SECONDS: until GET /v2/models/MODEL/ready answers 200. A model the server does
# not know, or credentials it refuses, fail at once: waiting would not change the answer.
wait_for_model() {
  local model=$1 deadline=$((SECONDS + $2))
  while true; do
    if http GET "/v2/models/$model/ready"; then
      case $HTTP_STATUS in
        200) return 0 ;;
        404)
          fail "model '$model' is not in the repository of $(server_url): $(http_error)"
          return 1
          ;;
        401 | 403)
          fail "$(server_url) refused the credentials for model '$model' ($(answer));" \
            "set MODELSERVE_TOKEN to a key it accepts"
          return 1
          ;;
      esac
    fi
    if ((SECONDS >= deadline)); then
      fail "model '$model' is not ready at $(server_url) after $2 s: $(answer)"
      return 1
    fi
    sleep 0.5
  done
}

# generative_models: the models GET /v1/models lists (platform llm), one per line.
generative_models() {
  http GET /v1/models && [[ $HTTP_STATUS == 200 ]] || return 0
  json_get '[model["id"] for model in data.get("data", [])]' <<<"$HTTP_BODY"
}

# infer MODEL COUNT WAIT: COUNT requests to a ready MODEL, each answered 200. `modelserve warmup` builds
# tensors from the model's metadata; it cannot make up a generative model's text, so those generate.
infer() {
  local model=$1 count=$2 wait=$3 i
  if grep -qxF -- "$model" <<<"$(generative_models)"; then
    for ((i = 0; i < count; i++)); do
      http POST "/v2/models/$model/generate" '{"text_input": "Hello", "parameters": {"max_tokens": 1}}' || true
      if [[ $HTTP_STATUS != 200 ]]; then
        fail "model '$model' failed a generation at $(server_url): $(answer)"
        return 1
      fi
    done
    echo "model '$model' generated $count time(s)"
    return 0
  fi
  if ! "$MODELSERVE_BIN" warmup --url "$(server_url)" --models "$model" --count "$count" --wait "$wait"; then
    fail "model '$model' failed inference at $(server_url) (the table above has the server's answer)"
    return 1
  fi
}
