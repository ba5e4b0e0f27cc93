# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv the first time.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium
SPAMASSASSIN := /usr/bin/spamassassin
SMTP_SINK := /usr/sbin/smtp-sink
NODE_MODULES := tests/email-lint/node_modules

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Browser tests drive Debian's Chromium: browser downloads are not possible here.
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core

# The spam-score test runs Debian's SpamAssassin with its local rules only (no network).
$(SPAMASSASSIN):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq spamassassin

# bench/send.py sends into Postfix's smtp-sink and times smtp-source. Only the two test programs
# are used: no mailer is configured, and the master daemon is stopped if the install started it.
$(SMTP_SINK):
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix
	postfix status 2>/dev/null && postfix stop || true

# doiuse-email checks the built HTML against email clients' CSS support.
$(NODE_MODULES): tests/email-lint/package.json tests/email-lint/package-lock.json
	cd tests/email-lint && npm ci --silent --no-audit --no-fund
	touch $(NODE_MODULES)

DEMO_WEEK := --since 2026-11-16 --until 2026-11-22
# The demo's own signing secret, made when the recipe runs: the outbox copies' links are signed
# with nothing real.
DEMO_SECRET = demo-$(shell $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))')

## The main job on the bundled example publication, with no server and no network: build its
## week as HTML, text and .eml, then send it to every subscriber into examples/outbox/ (a Maildir).
## Run it again: the send resumes from its ledger and sends nobody a second copy.
demo: $(STAMP) examples/subscribers.csv
	$(BIN)/digest --config examples/digest.toml build $(DEMO_WEEK)
	DIGEST_SECRET=$(DEMO_SECRET) SMTP_HOST= $(BIN)/digest --config examples/digest.toml send $(DEMO_WEEK)
	$(BIN)/digest --config examples/digest.toml issues

# The example's readers, as `digest init` would copy them; the send marks bounces in this copy.
examples/subscribers.csv: subscribers.example.csv
	cp subscribers.example.csv $@

## Lint, type-check and run the tests.
test: $(STAMP) $(CHROMIUM) $(SPAMASSASSIN) $(if $(wildcard tests/email-lint/package.json),$(NODE_MODULES))
	$(BIN)/ruff check digest tests bench
	$(BIN)/ruff format --check digest tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix digest tests bench
	$(BIN)/ruff format digest tests bench

## Benchmarks; figures are printed, never asserted in unit tests.
bench: $(STAMP) $(SMTP_SINK)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis examples/.digest examples/out examples/outbox examples/subscribers.csv $(NODE_MODULES)
