#!/usr/bin/env python3
"""Lints and renders the Helm chart (deploy/helm/cicada) and validates every manifest against the Kubernetes
schemas, offline: Helm's own engine through helm-python-sdk, the schemas bundled in kubernetes-validate. Checks
that deploy/kubernetes/cicada.yaml is the chart rendered with deploy/kubernetes/values.yaml (--write renders it
again). Exits 1 naming every problem. Run by .ci/validate-deploy, which installs the tools."""

import argparse
import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

DEPLOY = Path(__file__).resolve().parent
CHART = DEPLOY / "helm" / "cicada"
PLAIN = DEPLOY / "kubernetes" / "cicada.yaml"
PLAIN_VALUES = DEPLOY / "kubernetes" / "values.yaml"
# The oldest Kubernetes the chart supports (gRPC probes are GA from 1.27; the schemas start at 1.25) and the newest
# the validator knows.
KUBE_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
RELEASE = "load"
NAMESPACE = "loadtest"
# The plain manifests are the release "cicada" in the namespace "cicada": objects cicada-master, cicada-worker.
PLAIN_RELEASE = "cicada"

# Value sets that must render and validate: each mode, a generated token and a named one, persistence on and off.
CASES = {
    "web, generated token": {"host": "http://shop:8080"},
    "web, named token and login": {
        "host": "http://shop:8080",
        "clusterToken": {"existingSecret": "cicada-token"},
        "master": {"web": {"loginSecret": "cicada-web-login", "allowedHosts": ["cicada.example.internal"]}},
        "tags": ["checkout"],
        "userTypes": ["Visitor"],
        "env": [{"name": "CICADA_LOGLEVEL", "value": "DEBUG"}],
    },
    "headless": {"mode": "headless", "host": "http://shop:8080", "runTime": "10m", "workers": {"replicas": 4}},
    "headless, emptyDir": {
        "mode": "headless",
        "host": "http://shop:8080",
        "runTime": "1m",
        "master": {"reports": {"persistence": {"enabled": False}}},
    },
}
# Value sets the chart must refuse, with a message naming the value.
REFUSED = {
    "no host": ({}, "host (-H) is required"),
    "headless without run time": ({"host": "http://shop:8080", "mode": "headless"}, "runTime (-t) is required"),
    "unknown mode": ({"host": "http://shop:8080", "mode": "batch"}, "mode must be web or headless"),
}


def render(values: dict, release: str = RELEASE, namespace: str = NAMESPACE) -> str:
    """The chart rendered as `helm template` does: every manifest, in file order, as one YAML stream."""
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name=release, namespace=namespace, is_install=True)
    documents = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt") or not manifests[path].strip():
            continue
        documents.append(f"# Source: {path}\n{manifests[path].strip()}\n")
    return "---\n".join(documents)


def validate(stream: str, what: str) -> list[str]:
    problems = []
    documents = [document for document in yaml.safe_load_all(stream) if document]
    if not documents:
        return [f"{what}: no manifest"]
    for document in documents:
        name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                location = ".".join(str(part) for part in error.path)
                problems.append(f"{what}: {name} is invalid for Kubernetes {version} at {location}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                problems.append(f"{what}: {name}: no schema for Kubernetes {version}: {error}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="render deploy/kubernetes/cicada.yaml again")
    parser.add_argument("manifests", nargs="*", type=Path, help="validate these files too (or only these)")
    arguments = parser.parse_args()
    problems: list[str] = []

    try:
        lint = helm.lint(str(CHART), {"host": "http://shop:8080"}, strict=True)
    except helm.HelmError as error:
        lint = {"errors": [str(error)]}
    for message in lint.get("messages", []):
        if message.get("severity", 0) >= 2:
            problems.append(f"helm lint: {message.get('path')}: {message.get('error')}")
    problems += [f"helm lint: {error}" for error in lint.get("errors", [])]

    for case, values in CASES.items():
        try:
            problems += validate(render(values), f"chart ({case})")
        except helm.HelmError as error:
            problems.append(f"chart ({case}) does not render: {error}")
    for case, (values, expected) in REFUSED.items():
        try:
            render(values)
            problems.append(f"chart ({case}) rendered, but should be refused with {expected!r}")
        except helm.HelmError as error:
            if expected not in str(error):
                problems.append(f"chart ({case}) was refused, but not with {expected!r}: {error}")

    plain_values = yaml.safe_load(PLAIN_VALUES.read_text())
    header = (
        "# Generated from deploy/helm/cicada with deploy/kubernetes/values.yaml by `python3 deploy/validate.py --write`;\n"
        "# do not edit by hand. For the namespace cicada; create it and the token Secret first (docs/distributed.md).\n"
    )
    try:
        plain = header + render(plain_values, PLAIN_RELEASE, PLAIN_RELEASE)
    except helm.HelmError as error:
        problems.append(f"the plain manifests do not render: {error}")
        plain = None
    if plain is None:
        pass
    elif arguments.write:
        PLAIN.write_text(plain)
        print(f"wrote {PLAIN.relative_to(DEPLOY.parent)}")
    elif PLAIN.read_text() != plain:
        problems.append(
            f"{PLAIN.relative_to(DEPLOY.parent)} is not the chart's render: run `python3 deploy/validate.py --write`"
        )
    for path in arguments.manifests or [PLAIN]:
        problems += validate(path.read_text(), str(path))

    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    cases = len(CASES) + len(REFUSED) + 1
    print(f"deploy: chart linted, {cases} renders checked, manifests validated against Kubernetes {', '.join(KUBE_VERSIONS)}: "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
