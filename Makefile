# baie — the two commands a fresh machine needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := openipmi ipmitool systemd qemu-system-x86 ipxe-qemu ipxe dnsmasq-base
# pytest options; CI adds BAIE_REQUIRE_POSTGRES=1 so that a missing PostgreSQL fails instead of skipping
PYTEST_ARGS ?= -q -rs

.PHONY: venv system-packages test demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the real peers need (ipmi_sim, systemd-analyze; qemu, its iPXE ROMs and dnsmasq for the PXE
# boot test); installed only when missing.
system-packages:
	@missing=""; \
	command -v ipmi_sim >/dev/null || missing="$$missing openipmi"; \
	command -v ipmitool >/dev/null || missing="$$missing ipmitool"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v qemu-system-x86_64 >/dev/null || missing="$$missing qemu-system-x86"; \
	[ -e /usr/lib/ipxe/qemu/efi-virtio.rom ] || missing="$$missing ipxe-qemu"; \
	[ -e /usr/lib/ipxe/undionly.kpxe ] || missing="$$missing ipxe"; \
	[ -x /usr/sbin/dnsmasq ] || missing="$$missing dnsmasq-base"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: system-packages $(STAMP)
	@if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || $(BIN)/python -c "import socket; socket.create_connection(('127.0.0.1', 5432), 2)" 2>/dev/null; \
	  then echo "PostgreSQL answers on 127.0.0.1:5432: running the PostgreSQL half too"; \
	  else echo "PostgreSQL does not answer on 127.0.0.1:5432: the PostgreSQL half will be skipped"; fi
	$(BIN)/pytest $(PYTEST_ARGS)

demo: system-packages $(STAMP)
	$(BIN)/python -m tests.lab.demo

# The fleet benchmark (~16 min; BENCH_ARGS=--quick for a ~3 min smoke run): results in bench/results/.
BENCH_ARGS ?=
bench: system-packages $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-state .pytest_cache
