# involution-mm: `make demo` sets everything up and runs the main job; `make test` runs the test suite.
PYTHON := .venv/bin/python

.PHONY: install demo test benchmark

install:
	tools/setup_env.sh

demo: install
	tools/demo.sh

test: install
	$(PYTHON) -m pytest tests

benchmark: install
	$(PYTHON) benchmarks/op.py
