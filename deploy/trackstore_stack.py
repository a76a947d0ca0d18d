"""TrackStore on AWS: the stream, the three tables, and the image's two entrypoints on Fargate.

`build(app)` reads the app's context (`env=dev|prod` plus the optional overrides below) and adds
one stack, `TrackStore-<env>`. `app.py` calls it for `cdk synth|diff|deploy`; the tests call it
in-process. Context keys (all optional):

- `env`: `dev` (default) or `prod`, see ENVIRONMENTS.
- `existingStreamArn`: consume this stream instead of creating one.
- `imageRepository` + `imageTag`: run this ECR image instead of building the repo's Dockerfile.
- `alarmEmail`: subscribe this address to the alarm topic.
- `certificateArn`: an ACM certificate: the load balancer then serves HTTPS on 443 and redirects 80.
- `apiKeysSecret`: the name of a Secrets Manager secret holding TRACKSTORE_API_KEYS for `serve`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_ecs_patterns as ecs_patterns
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

REPO_ROOT = Path(__file__).resolve().parent.parent  # the Dockerfile's directory
APP_PORT = 8000
OTLP_HTTP_PORT = 4318
ADOT_IMAGE = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.2"
DATE_INDEX = "date-timestamp-index"
# The Devices table's sparse index of changes, read by serve's fleet snapshot every few seconds
# (src/trackstore/dynamodb/tables.py defines it for `trackstore init`; a test compares them).
FLEET_INDEX = "fleet-changes-index"
FLEET_ATTRIBUTES = [
    "lastSeen",
    "lastLocation",
    "totalUpdates",
    "registeredAt",
    "name",
    "metadata",
    "status",
]
# Above the live stream's 15 s heartbeat with room to spare, so the load balancer never closes
# a quiet /fleet/stream connection (its default is 60 s; said here, so nobody lowers it).
ALB_IDLE_TIMEOUT_S = 120
TTL_ATTRIBUTE = "expiresAt"
REJECTED_MESSAGE = "record rejected"  # the consumer's JSON log line for a rejected record

SERVE_COMMAND = ["serve", "--host", "0.0.0.0", "--port", str(APP_PORT)]
CONSUME_COMMAND = ["consume"]

# Exactly the API calls each process makes (src/trackstore/dynamodb and kinesis), each on its own
# resources. `trackstore init` runs none of them here: the stack creates what it would.
# tests/deploy/test_stack.py checks that the calls in src/ and the actions granted here match.
SERVE_DEVICES_ACTIONS = [
    "dynamodb:GetItem",  # GET /devices/{id}
    "dynamodb:Scan",  # GET /devices; the fleet snapshot's full read
    "dynamodb:UpdateItem",  # POST /devices/{id}/register (conditional update, no PutItem)
    "dynamodb:DescribeTable",  # GET /health
]
SERVE_LOCATIONS_ACTIONS = ["dynamodb:Query", "dynamodb:DescribeTable"]  # history, latest, health
SERVE_LOCATIONS_INDEX_ACTIONS = ["dynamodb:Query"]  # GET /locations (fleet window on the GSI)
SERVE_DEVICES_INDEX_ACTIONS = ["dynamodb:Query"]  # the fleet snapshot's refresh
CONSUME_STREAM_ACTIONS = ["kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords"]
CONSUME_LOCATIONS_ACTIONS = ["dynamodb:BatchWriteItem", "dynamodb:PutItem"]  # put_many, put_new
CONSUME_DEVICES_ACTIONS = ["dynamodb:BatchGetItem", "dynamodb:UpdateItem"]  # marks, apply_activity
CONSUME_LEASES_ACTIONS = [  # list, create, renew/checkpoint/take, release
    "dynamodb:Scan",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
]
# `trackstore erase`, run by an operator (whose user or role gets the EraseData managed policy):
# count and list (Query), delete (BatchWriteItem) locations; read, clear lastLocation of, delete
# the device.
ERASE_LOCATIONS_ACTIONS = ["dynamodb:Query", "dynamodb:BatchWriteItem"]
ERASE_DEVICES_ACTIONS = ["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
DEAD_LETTER_ACTIONS = ["kinesis:PutRecords"]  # rejected records, when a dead-letter stream is set
# X-Ray has no resource-level permissions: the only statement on resource "*" a task role gets.
XRAY_ACTIONS = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]

# The collector in each task (AOT_CONFIG_CONTENT; YAML accepts this JSON): OTLP in on the task's
# localhost only, traces out to X-Ray. Metrics stay on the app's Prometheus /metrics: the collector
# sends none, so it needs no cloudwatch:PutMetricData.
COLLECTOR_CONFIG = {
    "extensions": {"health_check": {"endpoint": "localhost:13133"}},
    "receivers": {
        "otlp": {
            "protocols": {
                "grpc": {"endpoint": "localhost:4317"},
                "http": {"endpoint": f"localhost:{OTLP_HTTP_PORT}"},
            }
        }
    },
    "processors": {"batch/traces": {"timeout": "1s", "send_batch_size": 50}},
    "exporters": {"awsxray": {}},
    "service": {
        "extensions": ["health_check"],
        "pipelines": {
            "traces": {
                "receivers": ["otlp"],
                "processors": ["batch/traces"],
                "exporters": ["awsxray"],
            }
        },
    },
}


@dataclass(frozen=True)
class Settings:
    """What differs between dev and prod."""

    name: str
    stream_shards: int | None  # None: on-demand capacity
    min_tasks: int
    max_tasks: int
    cpu: int  # per task, in CPU units (1024 = 1 vCPU); the collector shares it
    memory_mib: int
    log_retention: logs.RetentionDays
    retain_data: bool  # keep tables, stream and logs when the stack is deleted
    dead_letter_stream: bool
    container_insights: bool
    iterator_age_alarm_s: int
    rejected_alarm_per_5min: int
    target_5xx_alarm_per_min: int
    # Share of traces kept (a caller's decision wins): every span costs CPU to make and export,
    # which at 100% halves a task's API throughput (docs/benchmarks.md).
    trace_sample_ratio: float


ENVIRONMENTS = {
    "dev": Settings(
        name="dev",
        stream_shards=2,
        min_tasks=1,
        max_tasks=3,
        cpu=256,
        memory_mib=512,
        log_retention=logs.RetentionDays.ONE_WEEK,
        retain_data=False,
        dead_letter_stream=False,
        container_insights=False,
        iterator_age_alarm_s=900,
        rejected_alarm_per_5min=100,
        target_5xx_alarm_per_min=10,
        trace_sample_ratio=1.0,
    ),
    "prod": Settings(
        name="prod",
        stream_shards=None,
        min_tasks=2,
        max_tasks=10,
        cpu=512,
        memory_mib=1024,
        log_retention=logs.RetentionDays.ONE_MONTH,
        retain_data=True,
        dead_letter_stream=True,
        container_insights=True,
        iterator_age_alarm_s=300,
        rejected_alarm_per_5min=50,
        target_5xx_alarm_per_min=5,
        trace_sample_ratio=0.05,
    ),
}


@dataclass(frozen=True)
class Options:
    """Per-deployment overrides, from `--context key=value`."""

    existing_stream_arn: str | None = None
    image_repository: str | None = None
    image_tag: str | None = None
    alarm_email: str | None = None
    certificate_arn: str | None = None
    api_keys_secret: str | None = None


def build(app: cdk.App) -> TrackStoreStack:
    """The stack for the app's `env` context (default dev)."""
    env_name = str(app.node.try_get_context("env") or "dev")
    if env_name not in ENVIRONMENTS:
        raise ValueError(f"--context env={env_name}: expected one of {', '.join(ENVIRONMENTS)}")

    def context(key: str) -> str | None:
        value = app.node.try_get_context(key)
        return str(value) if value else None

    options = Options(
        existing_stream_arn=context("existingStreamArn"),
        image_repository=context("imageRepository"),
        image_tag=context("imageTag"),
        alarm_email=context("alarmEmail"),
        certificate_arn=context("certificateArn"),
        api_keys_secret=context("apiKeysSecret"),
    )
    if options.image_repository and not options.image_tag:
        raise ValueError("--context imageRepository needs --context imageTag too")
    stack = TrackStoreStack(
        app,
        f"TrackStore-{env_name}",
        settings=ENVIRONMENTS[env_name],
        options=options,
        description=f"TrackStore ({env_name}): Kinesis -> DynamoDB -> REST API on Fargate",
    )
    cdk.Tags.of(stack).add("project", "trackstore")
    cdk.Tags.of(stack).add("environment", env_name)
    return stack


class TrackStoreStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        options: Options,
        description: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id, description=description)
        self.settings = settings
        self.options = options
        env = settings.name
        removal = cdk.RemovalPolicy.RETAIN if settings.retain_data else cdk.RemovalPolicy.DESTROY

        # --- Data: the stream and the three tables (the contract's names and schema)
        self.stream = self._stream(f"transport-gps-stream-{env}", removal)
        self.locations = dynamodb.Table(
            self,
            "Locations",
            table_name=f"transport-locations-{env}",
            partition_key=dynamodb.Attribute(name="deviceId", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="timestamp", type=dynamodb.AttributeType.NUMBER),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute=TTL_ATTRIBUTE,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=settings.retain_data,
            removal_policy=removal,
        )
        self.locations.add_global_secondary_index(
            index_name=DATE_INDEX,
            partition_key=dynamodb.Attribute(name="date", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="timestamp", type=dynamodb.AttributeType.NUMBER),
            projection_type=dynamodb.ProjectionType.ALL,
        )
        self.devices = dynamodb.Table(
            self,
            "Devices",
            table_name=f"transport-devices-{env}",
            partition_key=dynamodb.Attribute(name="deviceId", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=settings.retain_data,
            removal_policy=removal,
        )
        self.devices.add_global_secondary_index(
            index_name=FLEET_INDEX,
            partition_key=dynamodb.Attribute(
                name="fleetBucket", type=dynamodb.AttributeType.STRING
            ),
            sort_key=dynamodb.Attribute(name="changedAt", type=dynamodb.AttributeType.NUMBER),
            projection_type=dynamodb.ProjectionType.INCLUDE,
            non_key_attributes=FLEET_ATTRIBUTES,
        )
        # Shard leases and checkpoints: losing them only replays the stream (idempotently).
        self.leases = dynamodb.Table(
            self,
            "Leases",
            table_name=f"transport-leases-{env}",
            partition_key=dynamodb.Attribute(name="leaseKey", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.dead_letters: kinesis.Stream | None = None
        if settings.dead_letter_stream:
            self.dead_letters = kinesis.Stream(
                self,
                "DeadLetterStream",
                stream_name=f"transport-gps-rejected-{env}",
                shard_count=1,
                stream_mode=kinesis.StreamMode.PROVISIONED,
                retention_period=cdk.Duration.days(7),
                encryption=kinesis.StreamEncryption.MANAGED,
                removal_policy=removal,
            )

        # --- Network and cluster
        # Two AZs, public subnets only, no NAT gateway: tasks get public IPs to reach ECR, Kinesis,
        # CloudWatch and X-Ray, and security groups admit nothing but the load balancer's traffic
        # to `serve`. DynamoDB traffic takes the (free) gateway endpoint. See deploy/README.md.
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                )
            ],
        )
        self.vpc.add_gateway_endpoint(
            "DynamoDbEndpoint", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB
        )
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=self.vpc,
            container_insights_v2=(
                ecs.ContainerInsights.ENABLED
                if settings.container_insights
                else ecs.ContainerInsights.DISABLED
            ),
        )
        self.image = self._image()

        # --- The two services
        self.serve_role = self._task_role("ServeTaskRole", "trackstore serve")
        self.serve_role.add_to_policy(
            iam.PolicyStatement(actions=SERVE_DEVICES_ACTIONS, resources=[self.devices.table_arn])
        )
        self.serve_role.add_to_policy(
            iam.PolicyStatement(
                actions=SERVE_LOCATIONS_ACTIONS, resources=[self.locations.table_arn]
            )
        )
        self.serve_role.add_to_policy(
            iam.PolicyStatement(
                actions=SERVE_LOCATIONS_INDEX_ACTIONS,
                resources=[f"{self.locations.table_arn}/index/{DATE_INDEX}"],
            )
        )
        self.serve_role.add_to_policy(
            iam.PolicyStatement(
                actions=SERVE_DEVICES_INDEX_ACTIONS,
                resources=[f"{self.devices.table_arn}/index/{FLEET_INDEX}"],
            )
        )
        self.consume_role = self._task_role("ConsumeTaskRole", "trackstore consume")
        self.consume_role.add_to_policy(
            iam.PolicyStatement(actions=CONSUME_STREAM_ACTIONS, resources=[self.stream.stream_arn])
        )
        self.consume_role.add_to_policy(
            iam.PolicyStatement(
                actions=CONSUME_LOCATIONS_ACTIONS, resources=[self.locations.table_arn]
            )
        )
        self.consume_role.add_to_policy(
            iam.PolicyStatement(actions=CONSUME_DEVICES_ACTIONS, resources=[self.devices.table_arn])
        )
        self.consume_role.add_to_policy(
            iam.PolicyStatement(actions=CONSUME_LEASES_ACTIONS, resources=[self.leases.table_arn])
        )
        if self.dead_letters is not None:
            self.consume_role.add_to_policy(
                iam.PolicyStatement(
                    actions=DEAD_LETTER_ACTIONS, resources=[self.dead_letters.stream_arn]
                )
            )

        self.erase_policy = iam.ManagedPolicy(
            self,
            "EraseData",
            description="trackstore erase: delete a device's locations and record "
            "(attach to the operators who handle data-protection requests)",
            statements=[
                iam.PolicyStatement(
                    actions=ERASE_LOCATIONS_ACTIONS, resources=[self.locations.table_arn]
                ),
                iam.PolicyStatement(
                    actions=ERASE_DEVICES_ACTIONS, resources=[self.devices.table_arn]
                ),
            ],
        )

        self.serve_logs = self._log_group("ServeLogs", f"/trackstore/{env}/serve", removal)
        self.consume_logs = self._log_group("ConsumeLogs", f"/trackstore/{env}/consume", removal)

        certificate = (
            acm.Certificate.from_certificate_arn(self, "Certificate", options.certificate_arn)
            if options.certificate_arn
            else None
        )
        serve_task = self._task_definition(
            "ServeTask", "serve", SERVE_COMMAND, self.serve_role, self.serve_logs
        )
        self.serve = ecs_patterns.ApplicationLoadBalancedFargateService(
            self,
            "Serve",
            cluster=self.cluster,
            task_definition=serve_task,
            public_load_balancer=True,
            assign_public_ip=True,
            task_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            health_check_grace_period=cdk.Duration.seconds(60),
            # HTTP on 80, or with a certificate HTTPS on 443 and 80 redirecting to it.
            listener_port=443 if certificate else 80,
            protocol=elbv2.ApplicationProtocol.HTTPS if certificate else None,
            certificate=certificate,
            redirect_http=certificate is not None,
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS if certificate else None,
        )
        self.serve.target_group.configure_health_check(
            path="/health",
            healthy_http_codes="200",
            interval=cdk.Duration.seconds(15),
            timeout=cdk.Duration.seconds(5),
            healthy_threshold_count=2,
            unhealthy_threshold_count=5,
        )
        self.serve.load_balancer.set_attribute(
            "idle_timeout.timeout_seconds", str(ALB_IDLE_TIMEOUT_S)
        )
        # Requests drain quickly (the API answers in milliseconds): faster deployments.
        self.serve.target_group.set_attribute("deregistration_delay.timeout_seconds", "30")

        consume_task = self._task_definition(
            "ConsumeTask", "consume", CONSUME_COMMAND, self.consume_role, self.consume_logs
        )
        self.consume = ecs.FargateService(
            self,
            "Consume",
            cluster=self.cluster,
            task_definition=consume_task,
            assign_public_ip=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
        )

        # --- Scaling
        serve_scaling = self.serve.service.auto_scale_task_count(
            min_capacity=settings.min_tasks, max_capacity=settings.max_tasks
        )
        serve_scaling.scale_on_cpu_utilization(
            "Cpu",
            target_utilization_percent=60,
            scale_in_cooldown=cdk.Duration.minutes(5),
            scale_out_cooldown=cdk.Duration.minutes(1),
        )
        consume_scaling = self.consume.auto_scale_task_count(
            min_capacity=settings.min_tasks, max_capacity=settings.max_tasks
        )
        consume_scaling.scale_on_cpu_utilization(
            "Cpu",
            target_utilization_percent=60,
            scale_in_cooldown=cdk.Duration.minutes(5),
            scale_out_cooldown=cdk.Duration.minutes(1),
        )
        # Falling behind the stream adds tasks (scale-in is left to the CPU policy). More tasks
        # than shards do not help: the extra ones hold no lease.
        consume_scaling.scale_on_metric(
            "IteratorAge",
            metric=self._iterator_age(cdk.Duration.minutes(1)),
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            scaling_steps=[
                appscaling.ScalingInterval(upper=60_000, change=0),
                appscaling.ScalingInterval(lower=60_000, change=1),
                appscaling.ScalingInterval(lower=300_000, change=2),
            ],
            cooldown=cdk.Duration.minutes(3),
            evaluation_periods=2,
        )

        # --- Alarms
        self.alarm_topic = sns.Topic(self, "Alarms", display_name=f"TrackStore {env} alarms")
        if options.alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(options.alarm_email))
        self._alarms()

        cdk.CfnOutput(self, "ApiUrl", value=self._api_url(), description="The REST API")
        cdk.CfnOutput(self, "StreamName", value=self.stream.stream_name)
        cdk.CfnOutput(self, "AlarmTopicArn", value=self.alarm_topic.topic_arn)
        cdk.CfnOutput(self, "ErasePolicyArn", value=self.erase_policy.managed_policy_arn)

    # --- Parts

    def _stream(self, name: str, removal: cdk.RemovalPolicy) -> kinesis.IStream:
        if self.options.existing_stream_arn:
            return kinesis.Stream.from_stream_arn(self, "Stream", self.options.existing_stream_arn)
        shards = self.settings.stream_shards
        return kinesis.Stream(
            self,
            "Stream",
            stream_name=name,
            stream_mode=(
                kinesis.StreamMode.ON_DEMAND if shards is None else kinesis.StreamMode.PROVISIONED
            ),
            shard_count=shards,
            retention_period=cdk.Duration.hours(24),
            encryption=kinesis.StreamEncryption.MANAGED,
            removal_policy=removal,
        )

    def _image(self) -> ecs.ContainerImage:
        """One image for both services: an ECR image named by context, or the repo's Dockerfile
        as an asset (synth only stages the build context; `cdk deploy` builds and pushes it)."""
        if self.options.image_repository:
            repository = ecr.Repository.from_repository_name(
                self, "ImageRepository", self.options.image_repository
            )
            return ecs.ContainerImage.from_ecr_repository(repository, self.options.image_tag)
        self.image_asset = ecr_assets.DockerImageAsset(
            self,
            "Image",
            directory=str(REPO_ROOT),
            platform=ecr_assets.Platform.LINUX_AMD64,
        )
        return ecs.ContainerImage.from_docker_image_asset(self.image_asset)

    def _task_role(self, construct_id: str, what: str) -> iam.Role:
        role = iam.Role(
            self,
            construct_id,
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description=f"TrackStore {self.settings.name}: {what}",
        )
        role.add_to_policy(iam.PolicyStatement(actions=XRAY_ACTIONS, resources=["*"]))
        return role

    def _log_group(self, construct_id: str, name: str, removal: cdk.RemovalPolicy) -> logs.LogGroup:
        return logs.LogGroup(
            self,
            construct_id,
            log_group_name=name,
            retention=self.settings.log_retention,
            removal_policy=removal,
        )

    def _environment_variables(self, service: str) -> dict[str, str]:
        variables = {
            "TRACKSTORE_BACKEND": "aws",
            "AWS_REGION": cdk.Aws.REGION,
            "KINESIS_STREAM_NAME": self.stream.stream_name,
            "DEVICE_TABLE_NAME": self.devices.table_name,
            "LOCATION_TABLE_NAME": self.locations.table_name,
            "LEASE_TABLE_NAME": self.leases.table_name,
            "LOG_LEVEL": "INFO",
            "OTEL_SERVICE_NAME": f"trackstore-{service}",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://localhost:{OTLP_HTTP_PORT}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_RESOURCE_ATTRIBUTES": f"deployment.environment={self.settings.name}",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(self.settings.trace_sample_ratio),
        }
        if service == "consume" and self.dead_letters is not None:
            variables["DEAD_LETTER_STREAM_NAME"] = self.dead_letters.stream_name
        return variables

    def _secrets(self, service: str) -> dict[str, ecs.Secret] | None:
        """The API keys, injected by ECS from Secrets Manager (the execution role may read that one
        secret): never in the template, the task definition or the logs."""
        if service != "serve" or not self.options.api_keys_secret:
            return None
        secret = secretsmanager.Secret.from_secret_name_v2(
            self, "ApiKeys", self.options.api_keys_secret
        )
        return {"TRACKSTORE_API_KEYS": ecs.Secret.from_secrets_manager(secret)}

    def _task_definition(
        self,
        construct_id: str,
        service: str,
        command: list[str],
        role: iam.Role,
        log_group: logs.LogGroup,
    ) -> ecs.FargateTaskDefinition:
        task = ecs.FargateTaskDefinition(
            self,
            construct_id,
            cpu=self.settings.cpu,
            memory_limit_mib=self.settings.memory_mib,
            task_role=role,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        # The first container is the one the load balancer targets.
        app = task.add_container(
            "app",
            image=self.image,
            command=command,
            environment=self._environment_variables(service),
            secrets=self._secrets(service),
            logging=ecs.LogDrivers.aws_logs(stream_prefix=service, log_group=log_group),
            readonly_root_filesystem=True,
            # ECS sends SIGTERM, then SIGKILL after this: time to finish and checkpoint a batch.
            stop_timeout=cdk.Duration.seconds(60 if service == "consume" else 30),
            port_mappings=(
                [ecs.PortMapping(container_port=APP_PORT, name="http")]
                if service == "serve"
                else None
            ),
        )
        # No container health check: /health answers 503 while DynamoDB is down, and ECS would
        # replace every task over it. `serve` is judged by the target group; `consume` gets a
        # health port of its own later (then add a check here, not in the image).
        collector = task.add_container(
            "adot-collector",
            image=ecs.ContainerImage.from_registry(ADOT_IMAGE),
            essential=False,  # a collector crash loses traces, not the task's work
            memory_reservation_mib=64,
            environment={
                "AOT_CONFIG_CONTENT": json.dumps(COLLECTOR_CONFIG),
                "AWS_REGION": cdk.Aws.REGION,
            },
            logging=ecs.LogDrivers.aws_logs(stream_prefix="adot", log_group=log_group),
            health_check=ecs.HealthCheck(
                command=["CMD", "/healthcheck"],
                interval=cdk.Duration.seconds(30),
                timeout=cdk.Duration.seconds(5),
                retries=3,
                start_period=cdk.Duration.seconds(10),
            ),
        )
        app.add_container_dependencies(
            ecs.ContainerDependency(
                container=collector, condition=ecs.ContainerDependencyCondition.START
            )
        )
        return task

    def _api_url(self) -> str:
        scheme = "https" if self.options.certificate_arn else "http"
        return f"{scheme}://{self.serve.load_balancer.load_balancer_dns_name}"

    def _iterator_age(self, period: cdk.Duration) -> cloudwatch.Metric:
        return self.stream.metric_get_records_iterator_age_milliseconds(
            statistic="Maximum", period=period
        )

    def _alarms(self) -> None:
        settings = self.settings
        action = cloudwatch_actions.SnsAction(self.alarm_topic)
        # The oldest unread record is too old: the consumer is down, stuck or too slow.
        iterator_age = cloudwatch.Alarm(
            self,
            "IteratorAgeAlarm",
            alarm_description="TrackStore consumer is falling behind the stream",
            metric=self._iterator_age(cdk.Duration.minutes(1)),
            threshold=settings.iterator_age_alarm_s * 1000,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=5,
            datapoints_to_alarm=3,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        # Rejected records, counted from the consumer's JSON log lines.
        rejected = logs.MetricFilter(
            self,
            "RejectedRecords",
            log_group=self.consume_logs,
            filter_pattern=logs.FilterPattern.string_value("$.message", "=", REJECTED_MESSAGE),
            metric_namespace=f"TrackStore/{settings.name}",
            metric_name="RecordsRejected",
            metric_value="1",
            unit=cloudwatch.Unit.COUNT,
        )
        rejected_alarm = cloudwatch.Alarm(
            self,
            "RejectedRecordsAlarm",
            alarm_description="TrackStore consumer rejects many records (see the consume logs)",
            metric=rejected.metric(statistic="Sum", period=cdk.Duration.minutes(5)),
            threshold=settings.rejected_alarm_per_5min,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        errors = cloudwatch.Alarm(
            self,
            "Target5xxAlarm",
            alarm_description="TrackStore API answers with 5xx",
            metric=self.serve.target_group.metrics.http_code_target(
                elbv2.HttpCodeTarget.TARGET_5XX_COUNT,
                statistic="Sum",
                period=cdk.Duration.minutes(1),
            ),
            threshold=settings.target_5xx_alarm_per_min,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=5,
            datapoints_to_alarm=3,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        for alarm in (iterator_age, rejected_alarm, errors):
            alarm.add_alarm_action(action)
