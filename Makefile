# Every target installs what it needs first (idempotent, quick the second time).
.PHONY: setup demo test bench baseline-table pretrain-report fmt clean

BIN := ./target/release/autoprune

setup:
	@scripts/setup.sh

## The main job on the default env: a short DDPG search for fmnist-vgg at 5% of its params
## (pretrained weights ship in checkpoints/), ending with the best policy's score and the
## TensorBoard log folder.
demo: setup
	$(BIN) search --config configs/demo.toml

## Formatting, lints (with and without MPI) and the whole test suite (the MPI tests included;
## Open MPI is installed through apt when missing).
test: setup
	@scripts/setup_mpi.sh
	cargo fmt --check
	cargo clippy --release --all-targets --quiet -- -D warnings
	cargo clippy --release --all-targets --quiet --features mpi -- -D warnings
	cargo test --release --features mpi

## Benchmarks (ratios measured side by side in one run).
bench: setup
	cargo bench --bench graphnet
	cargo bench --bench evaluate
	cargo bench --bench search
	cargo bench --bench gnn
	cargo bench --bench pruningnet
	cargo bench --bench posttrain

## The README's baseline table (pretrains fmnist-vgg and fmnist-resnet20 if needed; long).
baseline-table: setup
	scripts/baseline_table.sh

## The README's pretraining table.
pretrain-report: setup
	scripts/report_pretrain.sh

fmt:
	cargo fmt

## Build outputs, runs and the checkpoints pretrain wrote (the shipped one stays).
clean:
	rm -rf target runs
	git ls-files --others --ignored --exclude-standard -z checkpoints | xargs -0 rm -f
