"""trackstore.aws_sigv4 signs exactly as botocore's SigV4Auth does: the same X-Amz-Date,
X-Amz-Security-Token and Authorization for any body, headers, credentials, endpoint and time."""

from __future__ import annotations

import datetime

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from trackstore.aws_sigv4 import RouteSigner

URLS = st.sampled_from(
    [
        "https://dynamodb.eu-west-1.amazonaws.com",
        "https://dynamodb.eu-west-1.amazonaws.com/",
        "http://127.0.0.1:8000",
        "https://123456789012.ddb.us-east-1.amazonaws.com:443/",
        "http://localhost:4566/a/./b/../c",
    ]
)
HEADER_VALUES = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=30
).filter(lambda v: v.strip() != "")
TIMES = st.datetimes(
    min_value=datetime.datetime(2020, 1, 1), max_value=datetime.datetime(2040, 1, 1)
).map(lambda moment: moment.replace(microsecond=0, tzinfo=datetime.UTC))


def by_botocore(
    url: str, headers: dict[str, str], body: bytes, credentials: Credentials, service: str
) -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    botocore.auth.SigV4Auth(credentials, service, "eu-central-1").add_auth(request)
    return dict(request.headers.items())


@settings(max_examples=300, deadline=None, database=None)
@given(
    url=URLS,
    body=st.binary(max_size=200),
    target=HEADER_VALUES,
    agent=HEADER_VALUES,
    token=st.none() | st.text(alphabet="abcXYZ019+/=", min_size=1, max_size=40),
    service=st.sampled_from(["dynamodb", "kinesis"]),
    moment=TIMES,
)
def test_the_headers_are_botocores(
    url: str,
    body: bytes,
    target: str,
    agent: str,
    token: str | None,
    service: str,
    moment: datetime.datetime,
) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    headers = {
        "X-Amz-Target": f"  {target}  x",  # values are trimmed and their spaces collapsed
        "Content-Type": "application/x-amz-json-1.0",
        "User-Agent": agent,  # not signed
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.auth, "get_current_datetime", lambda: moment)
        expected = by_botocore(url, headers, body, credentials, service)
        signer = RouteSigner(url, service, "eu-central-1")
        signed = signer.sign(dict(headers), body, "AKIDEXAMPLE", credentials.secret_key, token)

    assert signed == expected


def test_one_signer_across_midnight_and_a_key_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://dynamodb.eu-central-1.amazonaws.com/"
    signer = RouteSigner(url, "dynamodb", "eu-central-1")
    before = datetime.datetime(2026, 12, 5, 23, 59, 59, tzinfo=datetime.UTC)
    for moment, secret in [
        (before, "first-secret"),
        (before + datetime.timedelta(seconds=2), "first-secret"),
        (before + datetime.timedelta(seconds=3), "second-secret"),
    ]:
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda m=moment: m)
        headers = {"X-Amz-Target": "DynamoDB_20120810.Query", "Content-Type": "x"}
        credentials = Credentials("AKID", secret, None)

        signed = signer.sign(dict(headers), b"{}", "AKID", secret, None)

        assert signed == by_botocore(url, headers, b"{}", credentials, "dynamodb")
