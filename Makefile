# Changeover's two commands: `make run` and `make test`. Both install what
# they need first (scripts/setup.sh: idempotent, fast the second time).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
GENERATED := ui/src/lib/ipc/generated

.PHONY: run test setup ui edge watcher app types lint unit integration gui bench-app bench-inventory bench-rollout bench-edge bench-traffic bench-volumes bench-images bench-udp clean-test-leftovers

## Install everything, build, and open the desktop app against the local daemon.
run: setup app
	@if [ -z "$${DISPLAY:-}$${WAYLAND_DISPLAY:-}" ]; then \
	  echo "make run: no display (DISPLAY/WAYLAND_DISPLAY unset); run it from a desktop session, or: xvfb-run make run" >&2; exit 1; fi
	./target/debug/changeover-app

## Install everything and run every check and test.
test: setup clean-test-leftovers lint unit integration gui
	@echo "make test: all checks and tests passed"

setup:
	@bash scripts/setup.sh

ui:
	cd ui && npm run --silent build

## The edge as a static binary: what goes into the edge and demo images.
edge:
	$(CARGO) build --release --target x86_64-unknown-linux-musl -p changeover-edge

## The changeover command as a static binary without the OS keyring: what
## goes into the watcher container (changeover watch --install).
watcher:
	$(CARGO) build --release --target x86_64-unknown-linux-musl -p changeover-cli --no-default-features

app: ui edge watcher
	$(CARGO) build --workspace

## Regenerate the TypeScript types from the Rust ones.
types:
	$(CARGO) test -q -p changeover-core -p changeover-application export_bindings >/dev/null

lint: ui
	$(CARGO) fmt --all -- --check
	cd ui && npm run --silent check
	$(MAKE) --no-print-directory types
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
	  echo "generated TypeScript types drifted from the Rust types; run 'make types' and commit:" >&2; \
	  git status --porcelain -- $(GENERATED) >&2; git diff --stat -- $(GENERATED) >&2; exit 1; fi
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --lib --bins
	$(CARGO) test -p changeover-core --test corpus

# The workspace tests run with a private, unlocked OS keyring of their own
# (scripts/with-keyring.sh), never the user's.
integration: app
	$(CARGO) test -p changeover-edge --test proxy --test server
	bash scripts/with-keyring.sh $(CARGO) test -p changeover-tests --test live --test cli --test deploy --test traffic --test recovery --test detail --test environments --test volumes --test registry --test builds --test redeploy

gui: app
	bash scripts/with-keyring.sh $(CARGO) test -p changeover-tests --test gui -- --test-threads=1

## Remove containers and volumes an interrupted test run left behind.
clean-test-leftovers:
	@ids=$$(docker ps -aq --filter label=dev.changeover.test=1); \
	  if [ -n "$$ids" ]; then docker rm -f -v $$ids >/dev/null; fi; \
	  helpers=$$(docker ps -a --filter label=dev.changeover.helper --format '{{.ID}} {{.Label "dev.changeover.helper"}}' | awk '$$2 ~ /^volume:/ {print $$1}'); \
	  if [ -n "$$helpers" ]; then docker rm -f -v $$helpers >/dev/null; fi; \
	  if docker inspect -f '{{join .Config.Cmd " "}}' changeover-watcher 2>/dev/null | grep -q '^t-watcher-'; then docker rm -f changeover-watcher >/dev/null; fi; \
	  vols=$$( (docker volume ls -q --filter label=dev.changeover.test=1; \
	    docker volume ls -q --filter label=dev.changeover.snapshot.of | grep '^t-' || true) | sort -u); \
	  if [ -n "$$vols" ]; then docker volume rm $$vols >/dev/null; fi; \
	  nets=$$(docker network ls --filter label=dev.changeover.managed=true --format '{{.Name}}' | grep '^t-' || true); \
	  if [ -n "$$nets" ]; then docker network rm $$nets >/dev/null; fi; \
	  for ns in $$(ip netns list 2>/dev/null | awk '$$1 ~ /^co-/ {print $$1}'); do ip netns del "$$ns" 2>/dev/null || true; done

bench-edge: setup edge
	$(CARGO) build --release -p changeover-bench
	./target/release/bench-edge

bench-rollout: setup edge
	$(CARGO) build --release -p changeover-bench
	./target/release/bench-rollout

## Registry tags and pulls through Changeover next to skopeo and docker pull.
bench-images: setup app
	$(CARGO) build --release -p changeover-bench -p changeover-cli
	./target/release/bench-images

bench-traffic: setup edge
	$(CARGO) build --release -p changeover-bench
	./target/release/bench-traffic

## UDP through the edge next to the same app published by Docker.
bench-udp: setup edge
	$(CARGO) build --release -p changeover-bench
	./target/release/bench-udp

## The app's cost to the daemon, terminal echo and log-follow speed, in the real window.
bench-volumes: setup edge
	$(CARGO) build --release -p changeover-bench
	./target/release/bench-volumes

bench-app: setup app
	$(CARGO) build --release -p changeover-app -p changeover-bench
	bash scripts/with-keyring.sh ./target/release/bench-app

bench-inventory: setup ui
	$(CARGO) build --release -p changeover-app -p changeover-bench
	./target/release/bench-inventory
