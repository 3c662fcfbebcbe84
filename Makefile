# The two commands a user needs are `make run` and `make test`; both install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
REPOSITORY := examples/model_repository

TOOLS := .tools
.PHONY: install tools models run run-regions test lint bench constraints

install: $(STAMP)

# Re-installs only when the dependency declarations change, so repeated `make` calls cost nothing.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[torch,sklearn,s3,llm,dev]'
	touch $@

# promtool, amtool and prometheus, and jq (the runbooks pipe into it), from Debian's packages, unpacked into
# .tools (no service starts, no root needed once apt's package lists exist). The deploy/ and runbook tests run them.
# PostgreSQL 15 (initdb, pg_ctl, postgres) and the libraries it links that a slim Debian lacks, for the traffic
# history's tests, which start it in a temporary folder with LD_LIBRARY_PATH pointing into .tools; its client
# (pg_dump, pg_restore) for the backup scripts' tests.
# HAProxy, the regions' router, and the libraries it links that a slim Debian lacks (Lua, OpenTracing), for the
# failover tests and benchmark, which run it the same way.
# Chromium and its chromedriver, for the web console's browser tests (selenium), with the libraries a slim Debian
# lacks: `apt-get -s install --no-install-recommends chromium chromium-driver` less what is installed.
DEBS := prometheus prometheus-alertmanager jq libjq1 libonig5 \
	postgresql-15 postgresql-client-15 libpq5 libicu72 libxml2 libldap-2.5-0 libsasl2-2 libgssapi-krb5-2 libkrb5-3 libk5crypto3 \
	libkrb5support0 libkeyutils1 \
	haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1 \
	chromium chromium-common chromium-driver libasyncns0 libcolord2 libdouble-conversion3 libepoxy0 libflac12 \
	libgtk-3-0 libgtk-3-common libharfbuzz-subset0 libminizip1 libmp3lame0 libmpg123-0 libogg0 libopenh264-7 \
	libopenjp2-7 libopus0 libpulse0 libsndfile1 libvorbis0a libvorbisenc2 libwayland-cursor0 libwayland-egl1 \
	libxnvctrl0
tools: $(TOOLS)/.installed $(TOOLS)/awscli/.installed

$(TOOLS)/.installed: Makefile
	rm -rf $(TOOLS) && mkdir -p $(TOOLS)/debs
	cd $(TOOLS)/debs && apt-get download $(DEBS) 2>/dev/null || \
		{ apt-get update -qq && apt-get download $(DEBS); }
	for deb in $(TOOLS)/debs/*.deb; do dpkg-deb -x $$deb $(TOOLS)/root; done
	rm -rf $(TOOLS)/debs
	touch $@

# The AWS CLI, for the backup scripts' test of `aws s3 sync`: from PyPI into a folder of its own, since it pins its
# own botocore; the tests run it as `python -m awscli` with that folder first on PYTHONPATH.
$(TOOLS)/awscli/.installed: Makefile $(STAMP)
	rm -rf $(TOOLS)/awscli
	$(BIN)/python -m pip install -q --target $(TOOLS)/awscli awscli
	touch $@

models: install
	$(BIN)/python examples/build_models.py $(REPOSITORY)
	$(BIN)/python examples/build_llm.py $(REPOSITORY)

# On-demand loading within a memory budget, with the predictive pre-warming policy, as the Kubernetes base runs:
# the start log says so and where to see its plan (GET /v2/prewarm, `modelserve prewarm plan`).
RUN_OPTIONS := --model-control-mode on-demand --load-model '*' --model-memory-budget-mb 2048 --prewarm-policy predictive
run: models
	$(BIN)/modelserve serve --model-repository $(REPOSITORY) --host $(HOST) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) \
		$(RUN_OPTIONS)

# The optional multi-region demo: the example models in two regions (moto stores, a server each) behind HAProxy
# on HTTP_PORT, with the failover commands to try printed (docs/REGIONS.md#routing-and-failover).
run-regions: models tools
	$(BIN)/python scripts/regions_demo.py --port $(HTTP_PORT)

# Two workers: most of the suite's time is servers starting and clients waiting, which overlap.
test: install tools
	$(BIN)/python -m pytest -n 2

lint: install
	$(BIN)/ruff check src tests examples benchmarks scripts
	$(BIN)/ruff format --check src tests examples benchmarks scripts
	$(BIN)/mypy

# Speed against raw inference, the echo floor and MLServer (its own venv, built on first use); see docs/PERFORMANCE.md.
bench: install
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python -m benchmarks.serving $(BENCH_ARGS)

# Pins exactly what is installed now, for CI to reproduce.
constraints: install
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch=='; \
	  echo 'torch==2.13.0'; } > constraints.txt.new && mv constraints.txt.new constraints.txt
