# cancel-operator: build, test and run against a local control plane.
SHELL := bash
CLUSTER := tests/cluster/cluster.sh
BIN := $(or $(CANCEL_OPERATOR_CACHE),$(HOME)/.cache/cancel-operator)/bin

.PHONY: all build crds cluster-build cluster-up cluster-down node-up node-down test unit-test fuzz bench bench-requests chaos run lint lint-scripts lint-workflows fmt image

all: build

build:
	cargo build

## Regenerate crds/ from the Rust types.
crds:
	cargo run --quiet -- crd > crds/cancel.dev.yaml

## Build the control plane binaries (cached; rebuilt when tests/cluster changes).
cluster-build:
	$(CLUSTER) build

## Start the local control plane; prints the admin kubeconfig path.
cluster-up:
	$(CLUSTER) up

## Stop it, leaving no process behind.
cluster-down:
	$(CLUSTER) down

## Join one real node (kubelet, containerd, runc) to the running control plane; needs root.
node-up:
	$(CLUSTER) node up

## Remove it, undoing every change it made to the machine.
node-down:
	$(CLUSTER) node down

## The whole test suite, on a control plane of its own that it starts and stops
## (it builds the image first: the chart's end-to-end test runs it on a real node).
test:
	tests/run-tests.sh

## Faults in combination under load: 200 StageRuns cancelled every way while
## the controller is killed 10 times, the API server restarted twice and the
## leader cut off from it twice
## (make test runs a short version).
chaos:
	CHAOS_RUNS=$${CHAOS_RUNS:-200} CHAOS_KILLS=$${CHAOS_KILLS:-10} CHAOS_APISERVER_RESTARTS=$${CHAOS_APISERVER_RESTARTS:-2} CHAOS_PARTITIONS=$${CHAOS_PARTITIONS:-2} \
		tests/run-tests.sh --test chaos -- --nocapture

## Benchmarks, as ratios to a baseline measured in the same run.
bench:
	scripts/bench.sh

## The API requests of a bulk cancel, per component, from the audit log.
bench-requests:
	scripts/bench-requests.sh

## The container image, without a daemon: target/image/cancel-operator-<appVersion>.oci.tar.
image:
	scripts/image.sh

## Unit tests only (no control plane).
unit-test:
	cargo test --lib --bins

## The hostile-input property tests with many more cases than `make test` runs.
fuzz:
	PROPTEST_CASES=$${PROPTEST_CASES:-20000} cargo test --lib sidecar::hostile_tests

## cargo fmt --check, clippy -D warnings, every shell script and the GitHub workflows.
lint: lint-scripts lint-workflows
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

## Every shell script (scripts/, tests/cluster/, tests/clients/, tests/run-tests.sh, .ci/run): shellcheck.
lint-scripts:
	scripts/lint-scripts.sh

## The GitHub workflows: actionlint (built into the tool cache) with shellcheck.
lint-workflows:
	scripts/lint-workflows.sh

fmt:
	cargo fmt --all

## Run the operator for real on the local control plane, with demo data.
run:
	scripts/run-local.sh
