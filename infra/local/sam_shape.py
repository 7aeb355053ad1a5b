#!/usr/bin/env python3
"""Checks what SAM makes of template.yaml, offline, with SAM's own translator (the code
`sam deploy` runs in CloudFormation's transform): the facts that the caller scoping rests on and
that template.yaml alone cannot show, because SAM writes them.

- Every function that believes an HTTP event's caller only through an alias
  (DP_CALLER_HTTP_QUALIFIER) has that alias, and every route, queue and schedule that reaches
  it invokes the alias, never the unqualified function: a permission on the unqualified
  function must not reach what the alias is trusted with.
- mint-user-token has no route: DP_CALLER_HTTP_QUALIFIER without an alias means that an
  HTTP-shaped event sent to it is always a direct invoker's.

Usage: python infra/local/sam_shape.py [template.yaml]. Exit status 1 with every broken fact
listed, 0 when all hold.
"""

import json
import os
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    """The translator asks IAM for AWS managed policies only when a function names one by
    name; ours name none (each function has its own role), so nothing is looked up."""

    def load(self):
        return {}


def translated(path):
    template = yaml_parse(open(path, encoding="utf-8").read())
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::Serverless::Function":
            # `sam build` puts an S3 location here; the translator accepts nothing else.
            resource["Properties"]["CodeUri"] = "s3://bucket/function.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return transform(template, {}, NoManagedPolicies())["Resources"]


def refers_to(value, name):
    """Whether a CloudFormation value is `!Ref name` or `!GetAtt name.*`."""
    if not isinstance(value, dict):
        return False
    if value.get("Ref") == name:
        return True
    get_att = value.get("Fn::GetAtt")
    return isinstance(get_att, list) and get_att[:1] == [name]


def invokers(resources, function):
    """Every (resource, what it invokes) that reaches `function` or one of its aliases."""
    aliases = {
        name
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Lambda::Alias"
        and refers_to(resource["Properties"].get("FunctionName"), function)
    }
    targets = {function} | aliases
    found = []
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if kind in ("AWS::Lambda::EventSourceMapping", "AWS::Lambda::Permission"):
            values = [props.get("FunctionName")]
        elif kind == "AWS::ApiGatewayV2::Integration":
            values = [props.get("IntegrationUri")]
        elif kind == "AWS::Events::Rule":
            values = [target.get("Arn") for target in props.get("Targets", [])]
        else:
            continue
        for value in values:
            for target in targets:
                if refers_to(value, target):
                    found.append((name, kind, target))
    return found


def problems(resources):
    broken = []
    for function, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        qualifier = variables.get("DP_CALLER_HTTP_QUALIFIER")
        if qualifier is None:
            continue
        alias = f"{function}Alias{qualifier}"
        reached = invokers(resources, function)
        has_alias = alias in resources
        if not has_alias:
            # No alias: nothing may present itself as the trusted path, so no route either.
            for name, kind, _ in reached:
                if kind == "AWS::ApiGatewayV2::Integration":
                    broken.append(
                        f"{function}: DP_CALLER_HTTP_QUALIFIER={qualifier} without an alias, "
                        f"yet route integration {name} invokes it"
                    )
            continue
        name_of_alias = resources[alias]["Properties"].get("Name")
        if name_of_alias != qualifier:
            broken.append(f"{alias}: named {name_of_alias!r}, the function trusts {qualifier!r}")
        if not any(kind == "AWS::ApiGatewayV2::Integration" for _, kind, _ in reached):
            broken.append(f"{function}: has the alias {qualifier!r} but no route invokes it")
        bus_rules = {
            name
            for name, kind, _ in reached
            if kind == "AWS::Events::Rule"
            and "EventPattern" in resources[name]["Properties"]
        }
        for name, kind, target in reached:
            if name in bus_rules:
                # A bus rule (write-back's change requests) may invoke the function itself:
                # bus events are scoped as direct-invoke whatever they name.
                continue
            source = resources[name].get("Properties", {}).get("SourceArn")
            if kind == "AWS::Lambda::Permission" and any(
                refers_to(source, rule) for rule in bus_rules
            ):
                continue
            if target != alias:
                broken.append(
                    f"{name} ({kind}) invokes {function} unqualified: it must invoke {alias}"
                )
    return broken


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    resources = translated(path)
    scoped = [
        name
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Lambda::Function"
        and "DP_CALLER_HTTP_QUALIFIER"
        in resource["Properties"].get("Environment", {}).get("Variables", {})
    ]
    broken = problems(resources)
    for line in broken:
        print(f"sam_shape: {line}", file=sys.stderr)
    if not scoped:
        print("sam_shape: no function sets DP_CALLER_HTTP_QUALIFIER", file=sys.stderr)
        return 1
    if broken:
        return 1
    summary = {
        name: sorted(f"{invoker} -> {target}" for invoker, _, target in invokers(resources, name))
        for name in sorted(scoped)
    }
    print(json.dumps(summary, indent=1))
    print(f"sam_shape: {len(scoped)} functions trust HTTP callers only through their alias")
    return 0


if __name__ == "__main__":
    sys.exit(main())
