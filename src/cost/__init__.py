"""The runbook's cost tools, as thin entry points onto ``modelserve regions cost`` (docs/REGIONS.md#cost)."""
