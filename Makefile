# Each target creates .venv and installs the pinned dependencies itself.
# torch is pinned exactly: an unpinned torch pulls a multi-GB CUDA build on CPU-only machines.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo compare test bench profile tokenizer clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/seqlab train

# The head-to-head: seq2seq_tiny against its matched decoder-only baseline. Set SEQLAB_EVAL_DATA to a folder
# holding flores200/, sib200/ and xcopa/ to evaluate both on the paper's tasks.
compare: $(STAMP)
	$(BIN)/seqlab compare

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	mkdir -p benchmarks/results
	$(BIN)/python -m pytest benchmarks -q --benchmark-only --benchmark-json=benchmarks/results/benchmarks.json

profile: $(STAMP)
	mkdir -p benchmarks/results
	$(BIN)/python benchmarks/profile_loader.py
	$(BIN)/python benchmarks/profile_model.py

# Rebuild the tokenizer shipped with the embedded corpus (after editing the corpus).
tokenizer: $(STAMP)
	$(BIN)/seqlab tokenizer train platform/seqlab/resources/corpus \
		--output platform/seqlab/resources/tokenizer/embedded.model --vocab-size 4096
	rm -f platform/seqlab/resources/tokenizer/embedded.vocab

clean:
	rm -rf $(VENV) outputs multirun compare compare-multirun evals benchmarks/results
