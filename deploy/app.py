#!/usr/bin/env python3
"""The CDK app: `cdk synth|diff|deploy TrackStore-<env> --context env=dev|prod` (default dev)."""

from __future__ import annotations

import aws_cdk as cdk
from trackstore_stack import build

app = cdk.App()
build(app)
app.synth()
