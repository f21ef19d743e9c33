#!/usr/bin/env python3
"""Validates the custom resources among rendered Kubernetes manifests against
their CRDs' JSON Schemas.

kubernetes-validate checks the built-in kinds and only warns on a kind it has
no schema for; this checks the rest. Every document whose API group is not a
built-in one (the core group, a group without a dot, or one ending in
.k8s.io) must have a schema at <schemas>/<group>/<kind lower-cased>_<version>.json
and must validate against it. Exits 1 and says what is wrong otherwise.

usage: check-custom-resources.py SCHEMA_DIR FILE... ('-' reads standard input)
"""

import json
import sys
from pathlib import Path

import jsonschema
import yaml


def is_builtin(group: str) -> bool:
    return group == "" or "." not in group or group.endswith(".k8s.io")


def where(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path or "(the document)"


def problems(validator: jsonschema.protocols.Validator, doc: dict) -> list[str]:
    found = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        found.append(f"{where(error)}: {error.message}")
        # For anyOf/oneOf, say why each branch failed, or the message says little.
        for sub in error.context or []:
            found.append(f"  {where(sub)}: {sub.message}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    schemas = Path(argv[1])
    validators: dict[Path, jsonschema.protocols.Validator] = {}
    failures = 0
    checked = 0
    for name in argv[2:]:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
        for index, doc in enumerate(yaml.safe_load_all(text)):
            if not doc:
                continue
            api_version = doc.get("apiVersion", "")
            kind = doc.get("kind", "")
            meta = doc.get("metadata") or {}
            label = f"{name}: document {index + 1}: {kind or '?'} {meta.get('name', '?')}"
            if not api_version or not kind:
                print(f"FAIL {label}: no apiVersion or kind")
                failures += 1
                continue
            group, _, version = api_version.rpartition("/")
            if is_builtin(group):
                continue
            checked += 1
            path = schemas / group / f"{kind.lower()}_{version}.json"
            if not path.is_file():
                print(f"FAIL {label}: no schema for {group} {kind} {version} (expected {path})")
                failures += 1
                continue
            if path not in validators:
                schema = json.loads(path.read_text())
                # CRD schemas are OpenAPI 3.0 structural schemas: JSON Schema draft 4 with extensions.
                validators[path] = jsonschema.Draft4Validator(schema)
            found = problems(validators[path], doc)
            if not meta.get("name"):
                found.insert(0, "metadata.name: missing")
            if found:
                failures += 1
                print(f"FAIL {label} ({api_version}) against {path}:")
                for line in found:
                    print(f"  {line}")
    if failures:
        print(f"{failures} custom resource(s) failed, {checked} checked")
        return 1
    print(f"{checked} custom resources valid against their CRD schemas")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
