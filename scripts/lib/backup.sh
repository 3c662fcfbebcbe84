# shellcheck shell=bash
# What backup-model-serving.sh and restore-model-serving.sh share: where each part lives, and the tools
# that copy it. Sourced after common.sh.

: "${NAMESPACE:=model-serving}"
: "${KUBECTL:=kubectl}"
# The kinds of deploy/kubernetes (the servers and the replication service), then those of the
# Prometheus Operator, which a cluster without it does not have.
KINDS=(deployments services configmaps secrets horizontalpodautoscalers poddisruptionbudgets networkpolicies ingresses)
OPERATOR_KINDS=(servicemonitors.monitoring.coreos.com prometheusrules.monitoring.coreos.com)

# What failed, for the ERR trap: each step names itself before it runs.
STEP="starting"
on_error() {
  fail "failed while $STEP"
  exit 1
}

backup_root() {
  printf '%s' "${BACKUP_ROOT:-/backups/model-serving}"
}

# kubectl_reaches_cluster: kubectl is installed and a cluster answers it; otherwise says why not.
kubectl_reaches_cluster() {
  if ! command -v "$KUBECTL" >/dev/null; then
    echo "kubernetes: skipped, $KUBECTL is not installed"
    return 1
  fi
  if ! "$KUBECTL" version --request-timeout=10s >/dev/null 2>&1; then
    echo "kubernetes: skipped, $KUBECTL reaches no cluster (\`$KUBECTL version\` fails)"
    return 1
  fi
}

# The model repository as the server finds it: MODEL_REPOSITORY, else MODEL_CACHE_DIR (which is then the
# repository), else /models, where the runbooks keep models.
models_location() {
  printf '%s' "${MODEL_REPOSITORY:-${MODEL_CACHE_DIR:-/models}}"
}

# The traffic history's database as the server finds it: DATABASE_URL, else the SQLite file in
# MODEL_CACHE_DIR (/tmp/model_cache, the server's default).
history_url() {
  printf '%s' "${DATABASE_URL:-sqlite:///${MODEL_CACHE_DIR:-/tmp/model_cache}/history.sqlite3}"
}

# sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy writes them (the driver named or
# not: sqlite+pysqlite:///...), to a path.
sqlite_path() {
  local path=${1#sqlite*:///}
  printf '%s' "${path%%\?*}"
}

# postgresql+psycopg://... (SQLAlchemy's) to postgresql://... (libpq's, which pg_dump reads).
libpq_url() {
  sed -E 's#^postgres(ql)?(\+[A-Za-z0-9_]+)?://#postgresql://#' <<<"$1"
}

# The URL without its user and password, for the record and the messages.
without_credentials() {
  sed -E 's#://[^@/]*@#://#' <<<"$1"
}

# copy_tree SOURCE TARGET: a model repository between a folder and a folder or bucket. S3 goes through
# the AWS CLI when it is installed (the runbook's tool), any other URL through fsspec.
copy_tree() {
  local source=$1 target=$2 endpoint=${AWS_ENDPOINT_URL:-${FSSPEC_S3_ENDPOINT_URL-}} args=()
  if [[ "$source$target" == *s3://* ]] && command -v aws >/dev/null; then
    [[ -z $endpoint ]] || args+=(--endpoint-url "$endpoint")
    echo "models: $source -> $target with the AWS CLI (aws s3 sync)"
    aws "${args[@]}" s3 sync --only-show-errors --exclude 'history.sqlite3*' --exclude '*.partial' "$source" "$target"
  else
    find_python
    [[ "$source$target" != *://* ]] || echo "models: $source -> $target with fsspec ($PYTHON)"
    "$PYTHON" "$SCRIPTS_DIR/lib/backup.py" copy "$source" "$target" | sed 's/^/models: /'
  fi
}
