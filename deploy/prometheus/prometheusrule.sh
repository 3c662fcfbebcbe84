#!/bin/sh
# Wraps alerts.yml in the PrometheusRule that the Prometheus Operator reads, beside the ServiceMonitor in
# deploy/kubernetes/base. After changing alerts.yml, from the repository root (a test fails until then):
#   sh deploy/prometheus/prometheusrule.sh > deploy/kubernetes/base/prometheusrule.yaml
set -eu
cat <<'HEADER'
# Generated from deploy/prometheus/alerts.yml by deploy/prometheus/prometheusrule.sh: edit those, not this.
# The Prometheus of kube-prometheus-stack selects rules by its release label (release=<name>); add it to
# the header in prometheusrule.sh if yours does.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: model-serving
  labels:
    app: model-serving
    app.kubernetes.io/name: modelserve
spec:
HEADER
sed 's/^./  &/' "$(dirname "$0")/alerts.yml"
