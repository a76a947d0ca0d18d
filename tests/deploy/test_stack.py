"""The CDK app in deploy/, synthesised in-process for dev and prod (no Docker, no AWS account:
synthesis only stages the image's build context) and checked resource by resource.

aws-cdk-lib runs its code in node through jsii; the first synthesis on a machine unpacks a ~200 MB
cache (~15 s), later ones take a few seconds. Each environment is synthesised once per run.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

# Read by jsii when aws_cdk is first imported: node 20 works, but jsii warns on every run.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")

import pytest

from tests.deploy.dockerfile import REPO_ROOT, final_stage

DEPLOY = REPO_ROOT / "deploy"
SRC = REPO_ROOT / "src" / "trackstore"
ENVIRONMENTS = ("dev", "prod")
Json = Any

TABLE = "AWS::DynamoDB::Table"
STREAM = "AWS::Kinesis::Stream"
SERVICE = "AWS::ECS::Service"
TASK_DEFINITION = "AWS::ECS::TaskDefinition"
SCALABLE_TARGET = "AWS::ApplicationAutoScaling::ScalableTarget"
SCALING_POLICY = "AWS::ApplicationAutoScaling::ScalingPolicy"
ALARM = "AWS::CloudWatch::Alarm"
LOG_GROUP = "AWS::Logs::LogGroup"

WRITE_ACTIONS = {
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLInsert",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
}


# --- Synthesis ---------------------------------------------------------------------------------


def _import_cdk() -> tuple[ModuleType, ModuleType, ModuleType]:
    """aws_cdk, its assertions and the stack module. Missing aws-cdk-lib fails the tests (it is
    in the dev extra): a deployment that is not checked must not pass for one that is."""
    try:
        import aws_cdk
        from aws_cdk import assertions
    except ImportError as exc:  # pragma: no cover - the point is to fail loudly
        pytest.fail(f"aws-cdk-lib is not importable ({exc}); pip install -e '.[dev]'")
    if str(DEPLOY) not in sys.path:
        sys.path.insert(0, str(DEPLOY))  # app.py imports the stack module the same way
    import trackstore_stack

    return aws_cdk, assertions, trackstore_stack


@dataclass
class Synth:
    env: str
    stack: Any  # trackstore_stack.TrackStoreStack
    template: Any  # aws_cdk.assertions.Template
    resources: dict[str, Json]
    outdir: Path

    def of_type(self, kind: str) -> dict[str, Json]:
        return {k: r for k, r in self.resources.items() if r["Type"] == kind}

    def props(self, kind: str) -> list[Json]:
        return [r["Properties"] for r in self.of_type(kind).values()]

    def logical_id(self, construct: Any) -> str:
        child = construct.node.default_child if construct.node.default_child else construct
        return str(self.stack.get_logical_id(child))


def cdk_json_context() -> dict[str, Json]:
    """The feature flags of deploy/cdk.json, so the test synthesises what `cdk synth` does."""
    context: dict[str, Json] = json.loads((DEPLOY / "cdk.json").read_text())["context"]
    return context


def synthesise(outdir: Path, **context: str) -> Synth:
    cdk, assertions, stacks = _import_cdk()
    app = cdk.App(context={**cdk_json_context(), **context}, outdir=str(outdir))
    stack = stacks.build(app)
    template = assertions.Template.from_stack(stack)
    return Synth(
        env=context.get("env", "dev"),
        stack=stack,
        template=template,
        resources=template.to_json()["Resources"],
        outdir=outdir,
    )


@pytest.fixture(scope="module")
def synths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Synth]:
    root = tmp_path_factory.mktemp("cdk")
    return {env: synthesise(root / env, env=env) for env in ENVIRONMENTS}


@pytest.fixture(params=ENVIRONMENTS)
def synth(request: pytest.FixtureRequest, synths: dict[str, Synth]) -> Synth:
    return synths[request.param]


@pytest.fixture(scope="module")
def stack_module() -> ModuleType:
    return _import_cdk()[2]


# --- Data --------------------------------------------------------------------------------------


def test_the_stream_is_provisioned_in_dev_and_on_demand_in_prod(synth: Synth) -> None:
    stream = synth.stack.stream
    props = synth.resources[synth.logical_id(stream)]["Properties"]
    assert props["Name"] == f"transport-gps-stream-{synth.env}"
    assert props["StreamEncryption"]["EncryptionType"] == "KMS"
    if synth.env == "dev":
        assert props["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
        assert props["ShardCount"] == 2
    else:
        assert props["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
        assert "ShardCount" not in props


def test_the_locations_table_has_the_contract_keys_index_and_ttl(synth: Synth) -> None:
    synth.template.has_resource_properties(
        TABLE,
        {
            "TableName": f"transport-locations-{synth.env}",
            "KeySchema": [
                {"AttributeName": "deviceId", "KeyType": "HASH"},
                {"AttributeName": "timestamp", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [
                {"AttributeName": "deviceId", "AttributeType": "S"},
                {"AttributeName": "timestamp", "AttributeType": "N"},
                {"AttributeName": "date", "AttributeType": "S"},
            ],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": "date-timestamp-index",
                    "KeySchema": [
                        {"AttributeName": "date", "KeyType": "HASH"},
                        {"AttributeName": "timestamp", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            "TimeToLiveSpecification": {"AttributeName": "expiresAt", "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "BillingMode": "PAY_PER_REQUEST",
        },
    )


def test_the_tables_match_what_trackstore_init_creates(synth: Synth) -> None:
    """Keys, index and billing as src/trackstore/dynamodb/tables.py defines them for emulators."""
    from trackstore.dynamodb.tables import (
        TTL_ATTRIBUTE,
        devices_table,
        leases_table,
        locations_table,
    )

    by_name = {p["TableName"]: p for p in synth.props(TABLE)}
    assert len(by_name) == 3
    for definition in (
        locations_table(f"transport-locations-{synth.env}"),
        devices_table(f"transport-devices-{synth.env}"),
        leases_table(f"transport-leases-{synth.env}"),
    ):
        table = by_name[definition["TableName"]]
        assert table["KeySchema"] == definition["KeySchema"]
        assert sorted(table["AttributeDefinitions"], key=str) == sorted(
            definition["AttributeDefinitions"], key=str
        )
        assert table.get("GlobalSecondaryIndexes", []) == definition.get(
            "GlobalSecondaryIndexes", []
        )
        assert table["BillingMode"] == definition["BillingMode"]
    locations = by_name[f"transport-locations-{synth.env}"]
    assert locations["TimeToLiveSpecification"]["AttributeName"] == TTL_ATTRIBUTE


def test_devices_and_lease_tables(synth: Synth) -> None:
    synth.template.has_resource_properties(
        TABLE,
        {
            "TableName": f"transport-devices-{synth.env}",
            "KeySchema": [{"AttributeName": "deviceId", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        },
    )
    synth.template.has_resource_properties(
        TABLE,
        {
            "TableName": f"transport-leases-{synth.env}",
            "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )


def test_data_outlives_the_stack_in_prod_only(synth: Synth) -> None:
    keep = synth.env == "prod"
    for construct in (synth.stack.locations, synth.stack.devices, synth.stack.stream):
        resource = synth.resources[synth.logical_id(construct)]
        assert resource["DeletionPolicy"] == ("Retain" if keep else "Delete")
    for construct in (synth.stack.locations, synth.stack.devices):
        props = synth.resources[synth.logical_id(construct)]["Properties"]
        assert props["DeletionProtectionEnabled"] is keep


def test_rejected_records_go_to_a_dead_letter_stream_in_prod(synth: Synth) -> None:
    names = {p["Name"] for p in synth.props(STREAM)}
    consume = app_container(synth, synth.stack.consume.task_definition)
    env = environment_of(consume)
    if synth.env == "prod":
        assert names == {"transport-gps-stream-prod", "transport-gps-rejected-prod"}
        dead_letters = synth.logical_id(synth.stack.dead_letters)
        assert env["DEAD_LETTER_STREAM_NAME"] == {"Ref": dead_letters}
    else:
        assert names == {"transport-gps-stream-dev"}
        assert "DEAD_LETTER_STREAM_NAME" not in env


# --- The services ------------------------------------------------------------------------------


def containers(synth: Synth, task_definition: Any) -> list[Json]:
    props = synth.resources[synth.logical_id(task_definition)]["Properties"]
    return list(props["ContainerDefinitions"])


def app_container(synth: Synth, task_definition: Any) -> Json:
    (app,) = [c for c in containers(synth, task_definition) if c["Name"] == "app"]
    return app


def environment_of(container: Json) -> dict[str, Json]:
    return {e["Name"]: e["Value"] for e in container.get("Environment", [])}


def test_two_fargate_services_run_the_same_image_with_the_two_commands(synth: Synth) -> None:
    synth.template.resource_count_is(SERVICE, 2)
    synth.template.resource_count_is(TASK_DEFINITION, 2)
    services = synth.of_type(SERVICE)
    serve_id = synth.logical_id(synth.stack.serve.service)
    consume_id = synth.logical_id(synth.stack.consume)
    assert set(services) == {serve_id, consume_id}
    for service in services.values():
        assert service["Properties"]["LaunchType"] == "FARGATE"

    serve = app_container(synth, synth.stack.serve.task_definition)
    consume = app_container(synth, synth.stack.consume.task_definition)
    assert serve["Command"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert consume["Command"] == ["consume"]
    assert "EntryPoint" not in serve  # the image's ENTRYPOINT ["trackstore"] stays
    assert "EntryPoint" not in consume

    # One image: the Docker asset built from the repository's Dockerfile.
    assert serve["Image"] == consume["Image"]
    asset_hash = synth.stack.image_asset.asset_hash
    assert asset_hash in json.dumps(serve["Image"])
    # Only `serve` has a load balancer and a port.
    assert services[serve_id]["Properties"]["LoadBalancers"][0]["ContainerPort"] == 8000
    assert not services[consume_id]["Properties"].get("LoadBalancers")
    assert [p["ContainerPort"] for p in serve["PortMappings"]] == [8000]
    assert "PortMappings" not in consume
    assert serve["ReadonlyRootFilesystem"] is True
    assert consume["ReadonlyRootFilesystem"] is True


def test_the_image_asset_is_the_repository_dockerfile_staged_without_docker(
    synths: dict[str, Synth],
) -> None:
    synth = synths["dev"]
    assets = json.loads((synth.outdir / "TrackStore-dev.assets.json").read_text())
    (image,) = assets["dockerImages"].values()
    staged = synth.outdir / image["source"]["directory"]
    assert image["source"]["platform"] == "linux/amd64"
    assert (staged / "Dockerfile").read_bytes() == (REPO_ROOT / "Dockerfile").read_bytes()
    assert (staged / "requirements.lock").is_file()
    assert (staged / "src" / "trackstore" / "cli" / "__init__.py").is_file()
    # .dockerignore keeps the build context small: none of these are staged.
    for absent in (".venv", ".git", "tests", "deploy", "node_modules", "cdk.out"):
        assert not (staged / absent).exists(), absent


def test_the_commands_are_the_image_defaults_and_parse(stack_module: ModuleType) -> None:
    from trackstore.cli import build_parser

    image = final_stage()
    assert image.exec_form("ENTRYPOINT") == ["trackstore"]
    # The task runs the image's default command with the port made explicit.
    assert [*image.exec_form("CMD"), "--port", "8000"] == stack_module.SERVE_COMMAND
    assert stack_module.CONSUME_COMMAND == ["consume"]
    serve = build_parser().parse_args(stack_module.SERVE_COMMAND)
    assert (serve.command, serve.host, serve.port) == ("serve", "0.0.0.0", 8000)
    assert build_parser().parse_args(stack_module.CONSUME_COMMAND).command == "consume"


def test_the_containers_get_the_contract_configuration(synth: Synth) -> None:
    stack = synth.stack
    for service, task in (
        ("serve", stack.serve.task_definition),
        ("consume", stack.consume.task_definition),
    ):
        env = environment_of(app_container(synth, task))
        assert env["TRACKSTORE_BACKEND"] == "aws"
        assert env["AWS_REGION"] == {"Ref": "AWS::Region"}
        assert env["KINESIS_STREAM_NAME"] == {"Ref": synth.logical_id(stack.stream)}
        assert env["DEVICE_TABLE_NAME"] == {"Ref": synth.logical_id(stack.devices)}
        assert env["LOCATION_TABLE_NAME"] == {"Ref": synth.logical_id(stack.locations)}
        assert env["LEASE_TABLE_NAME"] == {"Ref": synth.logical_id(stack.leases)}
        assert env["LOG_LEVEL"] == "INFO"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4318"
        assert env["OTEL_SERVICE_NAME"] == f"trackstore-{service}"
        assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert 0 < float(env["OTEL_TRACES_SAMPLER_ARG"]) <= 1
        # Nothing points the processes at an emulator.
        assert not any(name.startswith("AWS_ENDPOINT_URL") for name in env)


def test_the_configuration_is_valid_for_trackstore(synth: Synth) -> None:
    """The literal settings pass trackstore's own validation (names filled in for the Refs)."""
    from trackstore.config import Settings

    for task in (synth.stack.serve.task_definition, synth.stack.consume.task_definition):
        env = environment_of(app_container(synth, task))
        literal = {k: v if isinstance(v, str) else f"resolved-{k.lower()}" for k, v in env.items()}
        settings = Settings.from_env(literal, dotenv=None)
        assert settings.backend.value == "aws"


def test_serve_is_behind_a_public_load_balancer_checking_health(synth: Synth) -> None:
    synth.template.resource_count_is("AWS::ElasticLoadBalancingV2::LoadBalancer", 1)
    synth.template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer", {"Scheme": "internet-facing"}
    )
    synth.template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener", {"Port": 80, "Protocol": "HTTP"}
    )
    (balancer,) = synth.props("AWS::ElasticLoadBalancingV2::LoadBalancer")
    attributes = {a["Key"]: a["Value"] for a in balancer["LoadBalancerAttributes"]}
    # The live stream's heartbeat must come well within the idle timeout.
    from trackstore.web.fleet_stream import HEARTBEAT_S

    assert int(attributes["idle_timeout.timeout_seconds"]) >= 4 * HEARTBEAT_S
    (target_group,) = synth.props("AWS::ElasticLoadBalancingV2::TargetGroup")
    assert target_group["HealthCheckPath"] == "/health"
    assert target_group["Matcher"] == {"HttpCode": "200"}
    assert target_group["TargetType"] == "ip"


def test_no_nat_gateway_two_availability_zones(synth: Synth) -> None:
    synth.template.resource_count_is("AWS::EC2::NatGateway", 0)
    synth.template.resource_count_is("AWS::EC2::Subnet", 2)
    synth.template.resource_count_is("AWS::ECS::Cluster", 1)
    synth.template.has_resource_properties("AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Gateway"})


# --- Scaling -----------------------------------------------------------------------------------


def scalable_target_of(synth: Synth, service: Any) -> tuple[str, Json]:
    service_id = synth.logical_id(service)
    found = [
        (k, r["Properties"])
        for k, r in synth.of_type(SCALABLE_TARGET).items()
        if service_id in json.dumps(r["Properties"]["ResourceId"])
    ]
    assert len(found) == 1, found
    return found[0]


def test_both_services_scale_on_cpu_within_the_environment_bounds(synth: Synth) -> None:
    bounds = {"dev": (1, 3), "prod": (2, 10)}[synth.env]
    synth.template.resource_count_is(SCALABLE_TARGET, 2)
    for service in (synth.stack.serve.service, synth.stack.consume):
        target_id, target = scalable_target_of(synth, service)
        assert (target["MinCapacity"], target["MaxCapacity"]) == bounds
        cpu = [
            p
            for p in synth.props(SCALING_POLICY)
            if p["ScalingTargetId"] == {"Ref": target_id}
            and p["PolicyType"] == "TargetTrackingScaling"
        ]
        assert len(cpu) == 1
        config = cpu[0]["TargetTrackingScalingPolicyConfiguration"]
        assert config["PredefinedMetricSpecification"] == {
            "PredefinedMetricType": "ECSServiceAverageCPUUtilization"
        }


def test_the_consumer_also_scales_out_on_iterator_age(synth: Synth) -> None:
    target_id, _ = scalable_target_of(synth, synth.stack.consume)
    steps = {
        k: p
        for k, p in synth.of_type(SCALING_POLICY).items()
        if p["Properties"]["ScalingTargetId"] == {"Ref": target_id}
        and p["Properties"]["PolicyType"] == "StepScaling"
    }
    assert len(steps) == 1
    (policy_id, policy) = next(iter(steps.items()))
    adjustments = policy["Properties"]["StepScalingPolicyConfiguration"]["StepAdjustments"]
    assert all(step["ScalingAdjustment"] > 0 for step in adjustments)
    (alarm,) = [
        a["Properties"]
        for a in synth.of_type(ALARM).values()
        if {"Ref": policy_id} in a["Properties"].get("AlarmActions", [])
    ]
    assert alarm["Namespace"] == "AWS/Kinesis"
    assert alarm["MetricName"] == "GetRecords.IteratorAgeMilliseconds"
    assert alarm["Dimensions"] == [
        {"Name": "StreamName", "Value": {"Ref": synth.logical_id(synth.stack.stream)}}
    ]
    # The serve service has no such policy.
    serve_target, _ = scalable_target_of(synth, synth.stack.serve.service)
    assert not [
        p
        for p in synth.props(SCALING_POLICY)
        if p["ScalingTargetId"] == {"Ref": serve_target} and p["PolicyType"] == "StepScaling"
    ]


# --- Observability -----------------------------------------------------------------------------


def test_each_task_has_an_adot_collector_sending_traces_to_xray(synth: Synth) -> None:
    for task in (synth.stack.serve.task_definition, synth.stack.consume.task_definition):
        defs = containers(synth, task)
        assert [c["Name"] for c in defs] == ["app", "adot-collector"]
        app, collector = defs
        assert collector["Image"].startswith(
            "public.ecr.aws/aws-observability/aws-otel-collector:v"
        )
        assert collector["Essential"] is False
        config = json.loads(environment_of(collector)["AOT_CONFIG_CONTENT"])
        traces = config["service"]["pipelines"]["traces"]
        assert traces["receivers"] == ["otlp"]
        assert traces["exporters"] == ["awsxray"]
        http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        endpoint = environment_of(app)["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint.rsplit(":", 1)[1] == http.rsplit(":", 1)[1]
        assert app["DependsOn"] == [{"ContainerName": "adot-collector", "Condition": "START"}]
        assert collector["HealthCheck"]["Command"] == ["CMD", "/healthcheck"]


def test_logs_go_to_one_group_per_service_with_retention(synth: Synth) -> None:
    days = {"dev": 7, "prod": 30}[synth.env]
    groups = synth.of_type(LOG_GROUP)
    assert len(groups) == 2
    assert {g["Properties"]["RetentionInDays"] for g in groups.values()} == {days}
    for task, group in (
        (synth.stack.serve.task_definition, synth.stack.serve_logs),
        (synth.stack.consume.task_definition, synth.stack.consume_logs),
    ):
        for container in containers(synth, task):
            options = container["LogConfiguration"]["Options"]
            assert container["LogConfiguration"]["LogDriver"] == "awslogs"
            assert options["awslogs-group"] == {"Ref": synth.logical_id(group)}


def alarms_by_metric(synth: Synth) -> dict[str, Json]:
    """The operator alarms (those notifying the topic), by metric name."""
    topic = {"Ref": synth.logical_id(synth.stack.alarm_topic)}
    return {
        a["Properties"]["MetricName"]: a["Properties"]
        for a in synth.of_type(ALARM).values()
        if topic in a["Properties"].get("AlarmActions", [])
    }


def test_alarms_on_iterator_age_rejected_records_and_target_5xx(synth: Synth) -> None:
    alarms = alarms_by_metric(synth)
    assert set(alarms) == {
        "GetRecords.IteratorAgeMilliseconds",
        "RecordsRejected",
        "HTTPCode_Target_5XX_Count",
    }
    age = alarms["GetRecords.IteratorAgeMilliseconds"]
    assert age["Namespace"] == "AWS/Kinesis"
    assert age["Statistic"] == "Maximum"
    assert age["Dimensions"][0]["Value"] == {"Ref": synth.logical_id(synth.stack.stream)}
    errors = alarms["HTTPCode_Target_5XX_Count"]
    assert errors["Namespace"] == "AWS/ApplicationELB"
    assert {d["Name"] for d in errors["Dimensions"]} == {"LoadBalancer", "TargetGroup"}

    rejected = alarms["RecordsRejected"]
    (metric_filter,) = synth.props("AWS::Logs::MetricFilter")
    assert metric_filter["LogGroupName"] == {"Ref": synth.logical_id(synth.stack.consume_logs)}
    assert metric_filter["FilterPattern"] == '{ $.message = "record rejected" }'
    (transformation,) = metric_filter["MetricTransformations"]
    assert transformation["MetricNamespace"] == rejected["Namespace"]
    assert transformation["MetricName"] == "RecordsRejected"
    assert rejected["Statistic"] == "Sum"
    for alarm in alarms.values():
        assert alarm["TreatMissingData"] == "notBreaching"


def test_the_rejected_records_filter_matches_the_consumers_log_line(
    stack_module: ModuleType,
) -> None:
    """The consumer logs each rejection as a JSON line whose "message" the filter selects."""
    from trackstore.logs import JsonFormatter

    consumer = (SRC / "consumer.py").read_text()
    logged = re.findall(r'log\.\w+\(\s*"([^"]+)"', consumer)
    assert stack_module.REJECTED_MESSAGE in logged
    record = logging.LogRecord(
        "trackstore.consumer", logging.WARNING, "consumer.py", 1,
        stack_module.REJECTED_MESSAGE, (), None,
    )  # fmt: skip
    record.reason = "invalid"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == stack_module.REJECTED_MESSAGE


def test_the_templates_pass_cfn_lint(synth: Synth) -> None:
    """CloudFormation's own resource schemas (cfn-lint comes with moto[server]): no errors.
    Warnings are CDK's (dependencies it states twice) and are not ours to fix."""
    api = pytest.importorskip("cfnlint.api")
    template = synth.outdir / f"TrackStore-{synth.env}.template.json"
    matches = api.lint_file(template, config=api.ManualArgs(regions=["us-east-1"]))
    errors = [f"{m.rule.id} {m.message} ({m.path})" for m in matches if m.rule.id.startswith("E")]
    assert not errors


# --- Permissions -------------------------------------------------------------------------------


@dataclass
class Statement:
    policy: str  # the logical id of the policy (or role, for inline policies)
    roles: list[Json]  # [{"Ref": role logical id}, ...]
    actions: list[str]
    resources: list[Json]
    raw: Json


def _as_list(value: Json) -> list[Json]:
    return value if isinstance(value, list) else [value]


def statements(synth: Synth) -> Iterator[Statement]:
    for logical_id, resource in synth.resources.items():
        props = resource.get("Properties", {})
        documents: list[tuple[Json, list[Json]]] = []
        if resource["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            documents.append((props["PolicyDocument"], props.get("Roles", [])))
        elif resource["Type"] == "AWS::IAM::Role":
            for inline in props.get("Policies", []):
                documents.append((inline["PolicyDocument"], [{"Ref": logical_id}]))
        for document, roles in documents:
            for raw in document["Statement"]:
                yield Statement(
                    policy=logical_id,
                    roles=roles,
                    actions=[str(a) for a in _as_list(raw.get("Action", []))],
                    resources=_as_list(raw.get("Resource", [])),
                    raw=raw,
                )


def role_statements(synth: Synth, role: Any) -> list[Statement]:
    ref = {"Ref": synth.logical_id(role)}
    return [s for s in statements(synth) if ref in s.roles]


def test_no_wildcard_actions_and_resource_star_only_where_aws_requires_it(
    synth: Synth, stack_module: ModuleType
) -> None:
    found = list(statements(synth))
    assert found
    for statement in found:
        assert statement.raw["Effect"] == "Allow"
        assert "NotAction" not in statement.raw
        assert "NotResource" not in statement.raw
        for action in statement.actions:
            assert "*" not in action, statement.raw
    star = [s for s in found if "*" in s.resources]
    task_roles = {
        synth.logical_id(synth.stack.serve_role),
        synth.logical_id(synth.stack.consume_role),
    }
    execution_roles = {
        synth.logical_id(synth.stack.serve.task_definition.execution_role),
        synth.logical_id(synth.stack.consume.task_definition.execution_role),
    }
    for statement in star:
        assert statement.resources == ["*"], statement.raw
        (role,) = statement.roles
        if role["Ref"] in task_roles:
            # X-Ray has no resource ARNs.
            assert sorted(statement.actions) == sorted(stack_module.XRAY_ACTIONS)
        else:
            # ECR's login token has no resource either; the pulls themselves are scoped.
            assert role["Ref"] in execution_roles, statement.raw
            assert statement.actions == ["ecr:GetAuthorizationToken"]
    xray = [s for s in star if s.actions and s.actions[0].startswith("xray:")]
    assert sorted(r["Ref"] for s in xray for r in s.roles) == sorted(task_roles)


def arn_of(synth: Synth, construct: Any) -> Json:
    return {"Fn::GetAtt": [synth.logical_id(construct), "Arn"]}


def actions_on(granted: list[Statement], arn: Json) -> set[str]:
    """Actions granted on the ARN (or on a path under it, such as an index)."""
    marker = json.dumps(arn)
    return {a for s in granted for r in s.resources if marker in json.dumps(r) for a in s.actions}


def test_serve_reads_the_tables_registers_devices_and_nothing_else(synth: Synth) -> None:
    stack = synth.stack
    granted = role_statements(synth, stack.serve_role)
    on_locations = actions_on(granted, arn_of(synth, stack.locations))
    on_devices = actions_on(granted, arn_of(synth, stack.devices))
    assert not on_locations & WRITE_ACTIONS, on_locations  # serve cannot write Locations
    assert on_locations == {"dynamodb:Query", "dynamodb:DescribeTable"}
    assert on_devices == {
        "dynamodb:GetItem",
        "dynamodb:Scan",
        "dynamodb:UpdateItem",
        "dynamodb:DescribeTable",
        "dynamodb:Query",  # on its fleet index only: below
    }
    index = [s for s in granted if "/index/date-timestamp-index" in json.dumps(s.resources)]
    assert [s.actions for s in index] == [["dynamodb:Query"]]
    fleet = [s for s in granted if "/index/fleet-changes-index" in json.dumps(s.resources)]
    assert [s.actions for s in fleet] == [["dynamodb:Query"]]
    everything = {a for s in granted for a in s.actions}
    assert not {a for a in everything if a.startswith("kinesis:")}
    assert not actions_on(granted, arn_of(synth, stack.leases))


def test_consume_reads_the_stream_and_writes_its_tables_only(synth: Synth) -> None:
    stack = synth.stack
    granted = role_statements(synth, stack.consume_role)

    def arn(construct: Any) -> Json:
        return arn_of(synth, construct)

    assert actions_on(granted, arn(stack.stream)) == {
        "kinesis:ListShards",
        "kinesis:GetShardIterator",
        "kinesis:GetRecords",
    }
    assert actions_on(granted, arn(stack.locations)) == {
        "dynamodb:BatchWriteItem",
        "dynamodb:PutItem",
    }
    assert actions_on(granted, arn(stack.devices)) == {
        "dynamodb:BatchGetItem",
        "dynamodb:UpdateItem",
    }
    assert actions_on(granted, arn(stack.leases)) == {
        "dynamodb:Scan",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    }
    if stack.dead_letters is not None:
        assert actions_on(granted, arn(stack.dead_letters)) == {"kinesis:PutRecords"}
    for statement in granted:  # every statement names its resources (or is X-Ray's)
        assert statement.resources == ["*"] or all("*" not in str(r) for r in statement.resources)


def test_operators_get_a_policy_for_erasure_on_the_two_tables_only(synth: Synth) -> None:
    policy = synth.logical_id(synth.stack.erase_policy)
    found = [s for s in statements(synth) if s.policy == policy]
    stack = synth.stack

    assert {a for s in found for a in s.actions} == {
        "dynamodb:Query",
        "dynamodb:BatchWriteItem",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    }
    by_resource = {json.dumps(s.resources, sort_keys=True): set(s.actions) for s in found}
    assert by_resource == {
        json.dumps([arn_of(synth, stack.locations)], sort_keys=True): {
            "dynamodb:Query",
            "dynamodb:BatchWriteItem",
        },
        json.dumps([arn_of(synth, stack.devices)], sort_keys=True): {
            "dynamodb:GetItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
        },
    }
    assert "ErasePolicyArn" in synth.template.to_json()["Outputs"]


# Functions only `trackstore init` runs: the stack creates those resources instead.
INIT_ONLY = {
    "cli/init.py": None,  # the whole module
    "dynamodb/tables.py": None,
    "kinesis/client.py": {"ensure_stream"},
}


def aws_calls_in_src() -> dict[str, set[str]]:
    """IAM actions for the DynamoDB and Kinesis operations that src/ calls (`client.op(...)`, or
    an operation name passed as a string), by service, leaving out `trackstore init`."""
    import botocore.session

    session = botocore.session.get_session()
    operations: dict[str, str] = {}
    for service in ("dynamodb", "kinesis"):
        model = session.get_service_model(service)
        for name in model.operation_names:
            operations[_snake(name)] = f"{service}:{name}"

    found: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        skipped = INIT_ONLY.get(relative, set())
        if relative in INIT_ONLY and skipped is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in _functions_outside(tree, skipped or set()):
            for node in ast.walk(function):
                if not isinstance(node, ast.Call):
                    continue
                names: list[str] = []
                if isinstance(node.func, ast.Attribute):
                    names.append(node.func.attr)
                names += [
                    arg.value
                    for arg in node.args
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                ]
                for name in names:
                    if name in operations:
                        found.setdefault(operations[name], set()).add(relative)
    return found


def _functions_outside(tree: ast.Module, skipped: set[str]) -> Iterator[ast.AST]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in skipped:
            continue
        yield node


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_the_grants_are_exactly_the_aws_calls_trackstore_makes(synths: dict[str, Synth]) -> None:
    """Every DynamoDB/Kinesis operation in src/ is granted, and nothing unused is: when the code
    starts (or stops) calling an API, deploy/trackstore_stack.py has to follow."""
    synth = synths["prod"]  # prod has the dead-letter stream too
    erase_policy = synth.logical_id(synth.stack.erase_policy)
    granted = {
        a
        for role in (synth.stack.serve_role, synth.stack.consume_role)
        for s in role_statements(synth, role)
        for a in s.actions
        if a.startswith(("dynamodb:", "kinesis:"))
    } | {a for s in statements(synth) if s.policy == erase_policy for a in s.actions}
    called = aws_calls_in_src()
    missing = {action: sorted(where) for action, where in called.items() if action not in granted}
    assert not missing, f"called in src/ but granted to no task role: {missing}"
    assert granted <= set(called), f"granted but never called: {sorted(granted - set(called))}"


# --- Options -----------------------------------------------------------------------------------


def test_context_can_use_an_existing_stream_an_ecr_image_and_https(
    tmp_path: Path,
) -> None:
    stream_arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/fleet-gps"
    synth = synthesise(
        tmp_path,
        env="dev",
        existingStreamArn=stream_arn,
        imageRepository="trackstore",
        imageTag="1.2.3",
        certificateArn="arn:aws:acm:eu-west-1:123456789012:certificate/abc",
        alarmEmail="ops@example.com",
        apiKeysSecret="trackstore/api-keys",
    )
    synth.template.resource_count_is(STREAM, 0)
    consume = role_statements(synth, synth.stack.consume_role)
    assert {a for s in consume if stream_arn in s.resources for a in s.actions} == {
        "kinesis:ListShards",
        "kinesis:GetShardIterator",
        "kinesis:GetRecords",
    }
    env = environment_of(app_container(synth, synth.stack.consume.task_definition))
    assert env["KINESIS_STREAM_NAME"] == "fleet-gps"
    image = app_container(synth, synth.stack.serve.task_definition)["Image"]
    assert "trackstore:1.2.3" in json.dumps(image)
    assert not json.loads((tmp_path / "TrackStore-dev.assets.json").read_text()).get("dockerImages")
    synth.template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener", {"Port": 443, "Protocol": "HTTPS"}
    )
    synth.template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"}
    )
    # The API keys reach `serve` as a secret, read by its execution role, and nothing else.
    serve = app_container(synth, synth.stack.serve.task_definition)
    (secret,) = serve["Secrets"]
    assert secret["Name"] == "TRACKSTORE_API_KEYS"
    assert "trackstore/api-keys" in json.dumps(secret["ValueFrom"])
    assert "Secrets" not in app_container(synth, synth.stack.consume.task_definition)
    readers = [s for s in statements(synth) if "secretsmanager:GetSecretValue" in s.actions]
    assert [r["Ref"] for s in readers for r in s.roles] == [
        synth.logical_id(synth.stack.serve.task_definition.execution_role)
    ]
    assert all("trackstore/api-keys" in json.dumps(s.resources) for s in readers)


def test_an_unknown_environment_is_refused(stack_module: ModuleType) -> None:
    cdk, _, _ = _import_cdk()
    app = cdk.App(context={"env": "staging"})
    with pytest.raises(ValueError, match="env=staging"):
        stack_module.build(app)
