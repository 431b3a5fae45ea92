#!/usr/bin/env python3
"""Writes the Lambda Managed Instances variant of the SAM template.

    python3 scripts/managed_instances_template.py [template.yaml] > template.managed-instances.yaml

`template.yaml` stays the one source of truth (the local gateway and poller
read it). This derives, mechanically, the deployment option that runs the
HTTP functions on Lambda Managed Instances: a capacity provider
(`AWS::Serverless::CapacityProvider`) in the stack's VPC, and each HTTP
function on it with several invocations per execution environment
(`PerExecutionEnvironmentMaxConcurrency`, which Lambda hands the function as
`AWS_LAMBDA_MAX_CONCURRENCY`: the functions then share their writes between
concurrent invocations, `shared/src/batch.rs`). The MSK consumers stay
classic functions: an event source invokes one batch per partition at a
time, so they gain nothing from concurrent invocations.

Why a second template and not a parameter: SAM refuses a function with both
`CapacityProviderConfig` and `VpcConfig`, and it checks before conditions are
resolved, so `!If` cannot switch between them (samtranslator's
MUTUALLY_EXCLUSIVE rule sees both keys). The test command checks that the
committed file is what this script writes, and lints it like template.yaml.
"""

import sys

import yaml

GENERATED_NOTE = (
    "# GENERATED from template.yaml by scripts/managed_instances_template.py; do not edit.\n"
    "# The Lambda Managed Instances deployment option (README: Deploying to AWS).\n"
)

# Lambda Managed Instances execution environments start at 2 GB
# (the capacity provider's instances host them; memory buys no CPU share here).
MANAGED_INSTANCES_MEMORY_MB = 2048


class Tagged:
    """A CloudFormation short-form intrinsic (`!Ref x`, `!If [...]`), kept as written."""

    def __init__(self, tag, value):
        self.tag, self.value = tag, value


class Loader(yaml.SafeLoader):
    pass


class Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True  # write shared values out in full: no YAML anchors in a template


def _construct_tagged(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return Tagged("!" + suffix, value)


def _represent_tagged(dumper, data):
    if isinstance(data.value, list):
        return dumper.represent_sequence(data.tag, data.value, flow_style=True)
    if isinstance(data.value, dict):
        return dumper.represent_mapping(data.tag, data.value)
    return dumper.represent_scalar(data.tag, data.value)


Loader.add_multi_constructor("!", _construct_tagged)
Dumper.add_representer(Tagged, _represent_tagged)


def is_stream_consumer(function):
    events = function.get("Properties", {}).get("Events", {}) or {}
    return any(e.get("Type") in ("MSK", "SelfManagedKafka") for e in events.values())


def transform(doc):
    doc["Description"] = doc["Description"].rstrip() + (
        " This variant runs the HTTP functions on Lambda Managed Instances"
        " (several invocations per execution environment); the MSK consumers stay classic."
    )
    params = doc["Parameters"]
    params["ManagedInstancesMaxVCpuCount"] = {
        "Type": "Number",
        "Default": 16,
        "MinValue": 2,
        "Description": "Upper bound of the capacity provider's vCPUs across its instances (its cost ceiling).",
    }
    params["InvocationsPerEnvironment"] = {
        "Type": "Number",
        "Default": 64,
        "MinValue": 1,
        "MaxValue": 1600,
        "Description": (
            "Concurrent invocations per execution environment of each HTTP function"
            " (PerExecutionEnvironmentMaxConcurrency; the function reads it as AWS_LAMBDA_MAX_CONCURRENCY"
            " and sizes its write batches by it). Keep PG_POOL_MAX_SIZE x environments within"
            " the database's max_connections."
        ),
    }

    function_globals = doc["Globals"]["Function"]
    vpc_config = function_globals.pop("VpcConfig")

    resources = {
        "CapacityProvider": {
            "Type": "AWS::Serverless::CapacityProvider",
            "Properties": {
                "VpcConfig": vpc_config,
                "InstanceRequirements": {"Architectures": list(function_globals["Architectures"])},
                "ScalingConfig": {"MaxVCpuCount": Tagged("!Ref", "ManagedInstancesMaxVCpuCount")},
            },
        }
    }
    for name, resource in doc["Resources"].items():
        if resource.get("Type") == "AWS::Serverless::Function":
            props = resource["Properties"]
            if is_stream_consumer(resource):
                props["VpcConfig"] = vpc_config
            else:
                props["MemorySize"] = MANAGED_INSTANCES_MEMORY_MB
                props["CapacityProviderConfig"] = {
                    # Built from the name (what `Ref` gives): the pinned cfn-lint
                    # knows no attributes of AWS::Lambda::CapacityProvider yet
                    # (E1010 on `!GetAtt CapacityProvider.Arn`).
                    "Arn": Tagged(
                        "!Sub",
                        "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:capacity-provider:${CapacityProvider}",
                    ),
                    "PerExecutionEnvironmentMaxConcurrency": Tagged("!Ref", "InvocationsPerEnvironment"),
                }
        resources[name] = resource
    doc["Resources"] = resources
    return doc


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    with open(path, encoding="utf-8") as f:
        doc = yaml.load(f, Loader=Loader)
    out = yaml.dump(transform(doc), Dumper=Dumper, sort_keys=False, width=120, allow_unicode=True)
    sys.stdout.write(GENERATED_NOTE + out)


if __name__ == "__main__":
    main()
