"""Checks the CI examples of docs/ci.md: each YAML block under "### GitHub Actions" and "### GitLab CI" must parse,
validate against the CI's published schema (bundled in check-jsonschema: vendor.github-workflows, vendor.gitlab-ci),
and every shell step must be valid bash (`bash -n`). Run by .ci/validate-deploy with its tools' Python."""

import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

DOC = pathlib.Path("docs/ci.md")
SCHEMAS = {"GitHub Actions": "vendor.github-workflows", "GitLab CI": "vendor.gitlab-ci"}


def blocks(text):
    """(heading, yaml text) of the first yaml block after each heading in SCHEMAS."""
    found = {}
    for heading in SCHEMAS:
        match = re.search(r"^### " + re.escape(heading) + r"\n(.*?)^```yaml\n(.*?)^```", text, re.S | re.M)
        if match is None:
            sys.exit(f"{DOC}: no yaml block under '### {heading}'")
        found[heading] = match.group(2)
    return found


def shell_steps(heading, document):
    if heading == "GitHub Actions":
        for job in document["jobs"].values():
            for step in job["steps"]:
                if "run" in step:
                    yield step["run"]
    else:
        for job in document.values():
            if isinstance(job, dict) and "script" in job:
                yield "\n".join(job["script"])


def main():
    failures = 0
    for heading, text in blocks(DOC.read_text()).items():
        document = yaml.safe_load(text)
        with tempfile.NamedTemporaryFile("w", suffix=".yml") as file:
            file.write(text)
            file.flush()
            result = subprocess.run(
                [sys.executable, "-m", "check_jsonschema", "--builtin-schema", SCHEMAS[heading], file.name],
                capture_output=True,
                text=True,
            )
        if result.returncode != 0:
            failures += 1
            print(f"{DOC} {heading}: schema {SCHEMAS[heading]}:\n{result.stdout}{result.stderr}")
        for script in shell_steps(heading, document):
            # GitHub's expressions are not shell: replace them by a plain word.
            script = re.sub(r"\$\{\{.*?\}\}", "value", script)
            check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
            if check.returncode != 0:
                failures += 1
                print(f"{DOC} {heading}: a shell step is not valid bash:\n{script}\n{check.stderr}")
        print(f"{DOC} {heading}: {'ok' if failures == 0 else 'FAILED'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
