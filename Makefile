# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := plugins/hisparc plugins/weather plugins/lightning
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast lint demo bench bench-day chaos powercut fuzz dist clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(addprefix -e ./,$(PLUGINS)) -e '.[all,test]'
	touch $@

lint: venv
	$(BIN)/ruff check core plugins tests bench

test: lint
	$(BIN)/pytest tests $(addsuffix /tests,$(PLUGINS))

# The edit loop: the unit tests, without the ones that start services, kill processes,
# install wheels or fuzz at length (the `slow` list in tests/conftest.py). No lint.
test-fast: venv
	$(BIN)/pytest -q -m "not slow" tests $(addsuffix /tests,$(PLUGINS))

demo: venv
	rm -rf demo-data
	$(BIN)/python -m hisparc_datastore.sim.demo demo-data --stations 5 --hours 1

bench: venv
	$(BIN)/python bench/writer_bench.py
	$(BIN)/python bench/receiver_bench.py

# A midday hour of 140 stations against day files of a real day's size, and single uploads
# into 2 and 10 GB day files, ours and the deployed writer side by side (bench/day_bench.py).
# Needs about 35 GB free under bench-day-data/ and half an hour; deletes its data at the end.
bench-day: venv
	$(BIN)/python bench/day_bench.py

# The long runs of exactly-once: writers killed mid-batch (chaos, storm), then power cuts.
chaos: venv
	$(BIN)/python bench/chaos.py --kills 50
	$(BIN)/python bench/storm.py --kills 100
	$(MAKE) powercut

# Power cuts: the disk as it may be found after one, at 300 points of the writer's writes.
powercut: venv
	$(BIN)/python bench/powercut.py --states 300

# The differential test against the deployed datastore, long: 2,000 generated uploads
# (make test runs a few dozen). Prints the tally line; any difference fails it.
fuzz: venv
	DIFFERENTIAL_UPLOADS=2000 $(BIN)/pytest tests/test_differential.py -q -rA \
		-k generated_uploads_are_stored_as_the_deployed

# Wheels of the core and the plugins; install them with their dependencies, never asking an
# index for our own names (docs/operations.md, "Install"):
#   pip download --dest wheelhouse dist/*.whl
#   pip install --no-index --find-links wheelhouse 'hisparc-datastore[all]'
dist: venv
	rm -rf dist
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist ./ $(addprefix ./,$(PLUGINS))

clean:
	rm -rf $(VENV) demo-data bench-data bench-day-data chaos-data storm-data powercut-data dist
