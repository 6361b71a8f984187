.PHONY: test test-long bench simulate lint crash-long
test:
	./dev.sh test
test-long:
	./dev.sh test-long
bench:
	./dev.sh bench
simulate:
	./dev.sh simulate
lint:
	.venv/bin/ruff format --check . && .venv/bin/ruff check . && .venv/bin/mypy
crash-long:
	./dev.sh test-long tests/test_crash.py
