#!/usr/bin/env bash
# Backs up what a deployment cannot rebuild from the repository; `--help` lists what and where.
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/common.sh"
source "$SCRIPTS_DIR/lib/backup.sh"

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME

Writes a dated backup folder, BACKUP_DIR (default BACKUP_ROOT/YYYYMMDD, BACKUP_ROOT default
/backups/model-serving), as the runbook's daily and on-demand backups do:

  sudo /opt/scripts/backup-model-serving.sh
  ls -lh /backups/model-serving/\$(date +%Y%m%d)/

  kubernetes/        the objects of namespace NAMESPACE (model-serving) that deploy/kubernetes creates,
                     Secrets included, one \`kubectl get KIND -o json\` file per kind; skipped, saying
                     so, when kubectl is not installed or reaches no cluster
  models/            the model repository: MODEL_REPOSITORY, else MODEL_CACHE_DIR, else /models; a
                     folder is copied, an s3:// one with the AWS CLI when it is installed, else (and
                     any other URL) with fsspec from modelserve's Python
  history.pgdump     the traffic history on PostgreSQL (DATABASE_URL=postgresql...): pg_dump, custom format
  history.sqlite3    the traffic history on SQLite (DATABASE_URL=sqlite:///PATH, or by default
                     MODEL_CACHE_DIR/history.sqlite3): SQLite's online backup, consistent while a
                     server writes it; skipped, saying so, when the file does not exist
  prometheus-data.tar.gz  PROMETHEUS_DATA_DIR (default /var/lib/prometheus), when that folder exists
  sources.env        where each part came from, where restore-model-serving.sh puts it back by default

The folder is written as BACKUP_DIR.partial and renamed when complete, replacing an earlier backup of
the same day; only its owner can read it (it holds Secrets). Restore it with
restore-model-serving.sh YYYYMMDD.

Environment:
  BACKUP_ROOT, BACKUP_DIR      where the backup goes (above)
  NAMESPACE                    the Kubernetes namespace (default model-serving); KUBECTL, the kubectl to run
  MODEL_REPOSITORY, MODEL_CACHE_DIR, DATABASE_URL   read as the server reads them
  AWS_*, FSSPEC_S3_ENDPOINT_URL  the bucket's credentials and endpoint (the endpoint is passed to the AWS CLI too)
  PROMETHEUS_DATA_DIR          Prometheus' data folder
  MODELSERVE_BIN               modelserve, whose Python copies URLs with fsspec (default: the checkout's .venv, else PATH)

Exit status: 0 the backup is complete (less the parts skipped, each said); 1 a part failed (what,
on stderr; the partial folder is removed); 2 wrong usage.
EOF
}

main() {
  case ${1-} in
    -h | --help) usage && exit 0 ;;
    '') ;;
    *) usage_error "no arguments expected (got $1)" ;;
  esac
  local dir=${BACKUP_DIR:-$(backup_root)/$(date +%Y%m%d)}
  dir=${dir%/}
  PARTIAL=$dir.partial
  umask 077
  trap on_error ERR
  trap 'rm -rf "$PARTIAL"' EXIT
  STEP="creating $PARTIAL"
  rm -rf "$PARTIAL"
  mkdir -p "$PARTIAL"
  echo "backing up into $dir"
  record CREATED "$(date -u +%Y-%m-%dT%H:%M:%SZ)"

  backup_kubernetes
  backup_models
  backup_history
  backup_prometheus

  STEP="replacing $dir with $PARTIAL"
  rm -rf "$dir"
  mv "$PARTIAL" "$dir"
  trap - EXIT
  echo "Backup completed: $dir"
}

record() {
  printf '%s=%s\n' "$1" "$2" >>"$PARTIAL/sources.env"
}

backup_kubernetes() {
  kubectl_reaches_cluster || return 0
  local out=$PARTIAL/kubernetes kind error
  if ! "$KUBECTL" get namespace "$NAMESPACE" -o name >/dev/null 2>&1; then
    echo "kubernetes: skipped, the cluster has no namespace $NAMESPACE"
    return 0
  fi
  mkdir -p "$out"
  record NAMESPACE "$NAMESPACE"
  STEP="saving namespace $NAMESPACE"
  "$KUBECTL" get namespace "$NAMESPACE" -o json >"$out/namespace.json"
  for kind in "${KINDS[@]}"; do
    STEP="saving the $kind of namespace $NAMESPACE"
    "$KUBECTL" get "$kind" -n "$NAMESPACE" -o json >"$out/$kind.json"
  done
  for kind in "${OPERATOR_KINDS[@]}"; do
    STEP="saving the $kind of namespace $NAMESPACE"
    if ! error=$("$KUBECTL" get "$kind" -n "$NAMESPACE" -o json 2>&1 >"$out/${kind%%.*}.json"); then
      [[ $error == *"doesn't have a resource type"* ]] || {
        fail "$error"
        false
      }
      rm -f "$out/${kind%%.*}.json"
      echo "kubernetes: no ${kind%%.*} in this cluster (no Prometheus Operator)"
    fi
  done
  echo "kubernetes: namespace $NAMESPACE saved ($(find "$out" -name '*.json' | wc -l) files)"
}

backup_models() {
  local source
  source=$(models_location)
  STEP="copying the model repository $source"
  if [[ $source != *://* ]]; then
    [[ -d $source ]] || {
      fail "models: $source is not a folder; set MODEL_REPOSITORY to the model repository"
      false
    }
    source=$(cd "$source" && pwd)
  fi
  record MODELS_FROM "$source"
  copy_tree "$source" "$PARTIAL/models"
}

backup_history() {
  local url
  url=$(history_url)
  case $url in
    sqlite*)
      local path
      path=$(sqlite_path "$url")
      if [[ -f $path ]]; then
        path=$(cd "$(dirname "$path")" && pwd)/$(basename "$path")
      else
        echo "history: skipped, there is no SQLite database at $path (no server has written one there)"
        return 0
      fi
      STEP="backing up the SQLite history $path"
      find_python
      "$PYTHON" "$SCRIPTS_DIR/lib/backup.py" sqlite "$path" "$PARTIAL/history.sqlite3" | sed 's/^/history: /'
      record HISTORY_FROM "sqlite:///$path"
      ;;
    postgres*)
      STEP="dumping the PostgreSQL history $(without_credentials "$url")"
      command -v pg_dump >/dev/null || {
        fail "history: pg_dump is not installed (Debian: postgresql-client)"
        false
      }
      pg_dump --format=custom --no-owner --no-privileges --file "$PARTIAL/history.pgdump" \
        --dbname "$(libpq_url "$url")"
      record HISTORY_FROM "$(without_credentials "$(libpq_url "$url")")"
      echo "history: $(without_credentials "$url") -> history.pgdump (pg_dump)"
      ;;
    *)
      STEP="reading DATABASE_URL"
      fail "history: DATABASE_URL is neither sqlite nor postgresql"
      false
      ;;
  esac
}

backup_prometheus() {
  local data=${PROMETHEUS_DATA_DIR:-/var/lib/prometheus}
  if [[ ! -d $data ]]; then
    echo "prometheus: skipped, no folder $data (set PROMETHEUS_DATA_DIR)"
    return 0
  fi
  STEP="archiving Prometheus' data $data"
  tar -czf "$PARTIAL/prometheus-data.tar.gz" -C "$data" .
  record PROMETHEUS_FROM "$data"
  echo "prometheus: $data -> prometheus-data.tar.gz"
}

main "$@"
