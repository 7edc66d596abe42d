PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck pytest bench clean install uninstall

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check relay mailx tests demo tools $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy --strict relay mailx tools/entry_scripts.py

pytest: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

demo: $(STAMP)
	$(BIN)/python demo/demo.py

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# System-wide install into its own venv (README "Install"; tools/install.sh says what it
# changes). `make install LINK_BIN=/usr/local/bin` also links mail, mailx, mailq and
# mail-alias there; `SBIN=` leaves /usr/sbin/sendmail alone. Uninstall with the same PREFIX.
PREFIX ?= /opt/mailx-relay
DESTDIR ?=
SBIN ?= /usr/sbin
LINK_BIN ?=
INSTALL_PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
# Empty UNIT_DIR: /etc/systemd/system when it exists, else $(PREFIX)/share/systemd.
UNIT_DIR ?=
SPOOL_DIR ?= /var/spool/mailx-relay
INSTALL_VARS = PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' SBIN='$(SBIN)' LINK_BIN='$(LINK_BIN)' \
	INSTALL_PYTHON='$(INSTALL_PYTHON)' UNIT_DIR='$(UNIT_DIR)' SPOOL_DIR='$(SPOOL_DIR)'

install:
	@$(INSTALL_VARS) sh tools/install.sh

uninstall:
	@$(INSTALL_VARS) sh tools/uninstall.sh
