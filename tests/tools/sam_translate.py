"""The CloudFormation template SAM would deploy: `template.yaml` through the
pinned SAM translator (what `sam validate` and `sam deploy` run), for the
parameter values given (the rest take their defaults), printed as JSON.
Offline: the template names no managed policy, so no IAM lookup is needed.

Usage: python sam_translate.py <template.yaml> [Name=value ...]
"""

import json
import os
import sys

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform


class NoManagedPolicies:
    """A policy loader for a template that names no managed policy."""

    def load(self):
        return {}


def main() -> None:
    # The translator fills in pseudo parameters (partition, region) offline.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    path = sys.argv[1]
    parameters = dict(arg.split("=", 1) for arg in sys.argv[2:])
    with open(path, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    # As `sam validate` does: the local code becomes a placeholder S3 location
    # (the build and package steps upload the real one).
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://bucket/value"
    translated = transform(template, parameters, NoManagedPolicies())
    json.dump(translated, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
