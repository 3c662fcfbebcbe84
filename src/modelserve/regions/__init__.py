"""Many regions: a regions file naming each region's model store and serving endpoints, verified
replication of model versions between the regional stores, and the cost of serving per region and model.

Replication is a persisted job per (model version, target region) that copies, verifies against the
source's SHA256SUMS and publishes the target's SHA256SUMS last (docs/REGIONS.md).
"""
