"""crds/ (and the chart's copy) and docs/crd-reference.md are generated from stepshot.spec and must match it."""
from pathlib import Path

import yaml

from stepshot.spec import crd

ROOT = Path(__file__).resolve().parents[2]


def test_generated_crds_match_the_schema():
    paths = [ROOT / "crds" / "supernettraining.yaml"]
    chart = ROOT / "charts" / "stepshot"
    if chart.is_dir():
        paths.append(chart / "crds" / "supernettraining.yaml")
    for path in paths:
        assert path.exists(), f"{path} missing: run scripts/gen-crds.py"
        assert yaml.safe_load(path.read_text()) == crd(), f"{path} is stale: run scripts/gen-crds.py"


def test_field_reference_is_generated_from_the_schema():
    from stepshot.spec import reference_markdown

    doc = ROOT / "docs" / "crd-reference.md"
    assert doc.read_text() == reference_markdown(), "docs/crd-reference.md is stale: run scripts/gen-crds.py"
    assert "`spec.fewShot.steps[].dimension`" in doc.read_text()
