# Every target installs what it needs first (idempotent, quick the second time).
.PHONY: setup demo test bench baseline-table pretrain-report fmt clean

BIN := ./target/release/autoprune

setup:
	@scripts/setup.sh

## The main job on the default env: pretrain fmnist-vgg, print its graph summary and test accuracy.
demo: setup
	$(BIN) pretrain --env envs/fmnist-vgg.toml

## Formatting, lints and the whole test suite.
test: setup
	cargo fmt --check
	cargo clippy --release --all-targets --quiet -- -D warnings
	cargo test --release

## Benchmarks (ratios measured side by side in one run).
bench: setup
	cargo bench --bench graphnet
	cargo bench --bench evaluate

## The README's baseline table (pretrains fmnist-vgg and fmnist-resnet20 if needed; long).
baseline-table: setup
	scripts/baseline_table.sh

## The README's pretraining table.
pretrain-report: setup
	scripts/report_pretrain.sh

fmt:
	cargo fmt

clean:
	rm -rf target checkpoints
