#!/usr/bin/env bash
# Puts back what backup-model-serving.sh saved on a given day; `--help` says where each part goes.
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/common.sh"
source "$SCRIPTS_DIR/lib/backup.sh"

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME YYYYMMDD | FOLDER

Restores the backup BACKUP_ROOT/YYYYMMDD (BACKUP_ROOT default /backups/model-serving), or the backup
folder given, as the runbook runs it:

  sudo /opt/scripts/restore-model-serving.sh 20240115

Each part the backup holds, in this order (the data first, then the objects that start servers on it):

  models/           copied into the model repository: MODEL_REPOSITORY, else MODEL_CACHE_DIR, else
                    where the backup came from (sources.env). Files of the backup replace those of
                    the same name; models added since the backup stay
  history.pgdump    restored with pg_restore --clean into DATABASE_URL (PostgreSQL), which must be set
  history.sqlite3   written with SQLite's backup API into DATABASE_URL's SQLite file, else
                    MODEL_CACHE_DIR/history.sqlite3, else where it came from; it replaces that history
  kubernetes/       applied to the cluster kubectl reaches (\`kubectl apply\`), the namespace first,
                    less what the cluster sets itself (uids, versions, status, cluster IPs) and
                    the objects it owns; skipped, saying so, when kubectl reaches no cluster
  prometheus-data.tar.gz  not restored: stop Prometheus and unpack it into its data folder yourself

Stop the servers that use the history first (\`kubectl scale deployment/model-serving --replicas=0
-n model-serving\`, or stop the process): a server writes its history every
HISTORY_FLUSH_INTERVAL_SEC and at shutdown, over what was restored.

Environment:
  BACKUP_ROOT                  where the dated backups are (default /backups/model-serving)
  NAMESPACE                    the Kubernetes namespace, for the messages (default model-serving); KUBECTL, the kubectl to run
  MODEL_REPOSITORY, MODEL_CACHE_DIR, DATABASE_URL   where to restore to, read as the server reads them
  AWS_*, FSSPEC_S3_ENDPOINT_URL  the bucket's credentials and endpoint, for an s3:// repository
  MODELSERVE_BIN               modelserve, whose Python copies URLs with fsspec (default: the checkout's .venv, else PATH)

Exit status: 0 every part the backup holds is restored (less those skipped, each said); 1 no such
backup, or a part failed (what, on stderr); 2 wrong usage.
EOF
}

main() {
  case ${1-} in
    -h | --help) usage && exit 0 ;;
    '') usage_error "name the backup to restore: its date (YYYYMMDD) or its folder" ;;
  esac
  (($# == 1)) || usage_error "one backup at a time"
  if [[ $1 =~ ^[0-9]{8}$ ]]; then
    BACKUP=$(backup_root)/$1
  elif [[ $1 == */* ]]; then
    BACKUP=${1%/}
  else
    usage_error "'$1' is neither a date (YYYYMMDD) nor a folder"
  fi
  if [[ ! -d $BACKUP ]]; then
    local dates
    dates=$(find "$(backup_root)" -mindepth 1 -maxdepth 1 -type d -name "$(printf '[0-9]%.0s' {1..8})" \
      -printf '%f\n' 2>/dev/null | sort | tr '\n' ' ' || true)
    dates=${dates% }
    die 1 "no backup at $BACKUP (backups in $(backup_root): ${dates:-none})"
  fi
  trap on_error ERR
  echo "restoring $BACKUP"

  restore_models
  restore_history
  restore_kubernetes
  if [[ -f $BACKUP/prometheus-data.tar.gz ]]; then
    echo "prometheus: not restored; stop Prometheus, then:" \
      "tar -xzf $BACKUP/prometheus-data.tar.gz -C $(recorded PROMETHEUS_FROM)"
  fi
  echo "Restore completed from $BACKUP"
}

# recorded KEY: what the backup's sources.env says of KEY (empty when it says nothing).
recorded() {
  [[ -f $BACKUP/sources.env ]] || return 0
  sed -n "s/^$1=//p" "$BACKUP/sources.env" | tail -n 1
}

restore_kubernetes() {
  local saved=$BACKUP/kubernetes
  [[ -d $saved ]] || return 0
  kubectl_reaches_cluster || return 0
  STEP="applying the Kubernetes objects of $saved"
  find_python
  local files=("$saved/namespace.json")
  mapfile -t -O 1 files < <(find "$saved" -name '*.json' ! -name namespace.json | sort)
  "$PYTHON" "$SCRIPTS_DIR/lib/backup.py" kube "${files[@]}" | "$KUBECTL" apply -f - | sed 's/^/kubernetes: /'
}

restore_models() {
  [[ -d $BACKUP/models ]] || return 0
  local target=${MODEL_REPOSITORY:-${MODEL_CACHE_DIR:-$(recorded MODELS_FROM)}}
  STEP="restoring the models"
  [[ -n $target ]] || {
    fail "models: set MODEL_REPOSITORY: the backup does not say where its models came from"
    false
  }
  STEP="copying $BACKUP/models into $target"
  [[ $target == *://* ]] || mkdir -p "$target"
  copy_tree "$BACKUP/models" "$target"
}

restore_history() {
  if [[ -f $BACKUP/history.pgdump ]]; then
    STEP="restoring the PostgreSQL history"
    [[ ${DATABASE_URL-} == postgres* ]] || {
      fail "history: set DATABASE_URL to the PostgreSQL database to restore history.pgdump into" \
        "(it came from $(recorded HISTORY_FROM))"
      false
    }
    command -v pg_restore >/dev/null || {
      fail "history: pg_restore is not installed (Debian: postgresql-client)"
      false
    }
    STEP="restoring the PostgreSQL history into $(without_credentials "$DATABASE_URL")"
    pg_restore --clean --if-exists --no-owner --no-privileges --single-transaction --exit-on-error \
      --dbname "$(libpq_url "$DATABASE_URL")" "$BACKUP/history.pgdump"
    echo "history: history.pgdump -> $(without_credentials "$DATABASE_URL") (pg_restore)"
  fi
  if [[ -f $BACKUP/history.sqlite3 ]]; then
    local url=${DATABASE_URL-}
    if [[ -z $url && -n ${MODEL_CACHE_DIR-} ]]; then
      url=sqlite:///$MODEL_CACHE_DIR/history.sqlite3
    fi
    url=${url:-$(recorded HISTORY_FROM)}
    STEP="restoring the SQLite history"
    [[ $url == sqlite* ]] || {
      fail "history: the backup holds a SQLite history, and DATABASE_URL is not a SQLite one"
      false
    }
    local path
    path=$(sqlite_path "$url")
    STEP="restoring the SQLite history into $path"
    find_python
    "$PYTHON" "$SCRIPTS_DIR/lib/backup.py" sqlite "$BACKUP/history.sqlite3" "$path" | sed 's/^/history: /'
  fi
}

main "$@"
