"""The `SupernetTraining` resource: one schema, many consumers.

The OpenAPI schema (`schema`, `status`, built with `fields`) is the single definition of the
resource. The CRD (`crds/`, the chart) and the field reference are generated from it
(`generate`), the API server validates against it, and the local runner validates the same
YAML with `validate()` (`document`), which applies the same rules through a generic checker
(`openapi`) and reports them with the same field paths and wording as the API server. Checks
the 1.20-era API server cannot express (cross-field rules) live in `rules` and are applied by
the local runner and by the operator (which then marks the resource Failed with reason
InvalidSpec). `view` holds the typed `Spec` every reader takes, and `load`/`load_file`.

This package namespace re-exports the names the rest of stepshot uses.
"""
from stepshot.kyaml import KubeDumper, kube_yaml, safe_yaml_documents
from stepshot.quantity import cores_per_process, parse_quantity
from stepshot.spec.document import SpecError, apply_defaults, validate
from stepshot.spec.generate import crd, openapi_schema, reference_markdown
from stepshot.spec.rules import (MAX_SPEC_BYTES, MAX_STAGES, POD_SPEC_DIR, RESERVED_LABEL_PREFIXES,
                                 RESERVED_MOUNTS, semantic_errors, stage_count)
from stepshot.spec.schema import (API_VERSION, GROUP, KIND, PLURAL, ROLES, SHORT_NAMES, SINGULAR, SPACE_NAMES,
                                  SPEC_SCHEMA, VERSION)
from stepshot.spec.status import PRINTER_COLUMNS, STATUS_SCHEMA
from stepshot.spec.view import RUNTIME_FIELDS, Spec, View, changed_fields, load, load_file, training_fields

__all__ = [
    "API_VERSION", "GROUP", "KIND", "MAX_SPEC_BYTES", "MAX_STAGES", "PLURAL", "POD_SPEC_DIR", "PRINTER_COLUMNS",
    "RESERVED_LABEL_PREFIXES", "RESERVED_MOUNTS", "ROLES", "RUNTIME_FIELDS", "SHORT_NAMES", "SINGULAR",
    "SPACE_NAMES", "SPEC_SCHEMA", "STATUS_SCHEMA", "VERSION", "KubeDumper", "Spec", "SpecError", "View",
    "apply_defaults", "changed_fields", "cores_per_process", "crd", "kube_yaml", "load", "load_file",
    "openapi_schema", "parse_quantity", "reference_markdown", "safe_yaml_documents",
    "semantic_errors", "stage_count", "training_fields", "validate",
]
