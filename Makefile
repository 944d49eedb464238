# Each target creates .venv and installs the pinned dependencies itself.
# torch is pinned exactly: an unpinned torch pulls a multi-GB CUDA build on CPU-only machines.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo compare study test bench profile tokenizer clean

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

# The default study: three sizes x two seeds, each pair trained to equal FLOPs, with intervals and verdicts.
# With ../shared/data beside the repository it trains on NTREX-128, TICO-19, lingua and UDHR text and evaluates
# on FLORES-200, SIB-200 and XCOPA; without it, on the embedded corpus, without evaluation.
SHARED_DATA := $(abspath ../shared/data)
study: $(STAMP)
	if [ -d "$(SHARED_DATA)" ]; then \
		SEQLAB_EVAL_DATA=$${SEQLAB_EVAL_DATA:-$(SHARED_DATA)} $(BIN)/seqlab compare -m experiment=study data=study; \
	else \
		$(BIN)/seqlab compare -m experiment=study; \
	fi

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
