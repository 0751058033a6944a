"""cloud/release.yaml resolved for given parameter values, the way CloudFormation resolves it, and checked offline.

Nothing here reaches AWS: the template's intrinsic functions and conditions are resolved here (`Stack`), API Gateway's
request templates are rendered here (`render_vtl`, the few VTL constructs the stack uses) and validated against
botocore's input shape of the operation they call, and the IAM policies are read for the actions the code calls
(found in its source) and the compiled pipelines' steps need.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import json
import re
from functools import cache

import botocore.session
import jsonschema
import pytest
import yaml
from botocore import xform_name
from botocore.validate import ParamValidator

from conftest import ROOT

TEMPLATE = ROOT / "cloud" / "release.yaml"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
ACCOUNT, REGION = "111111111111", "eu-west-1"
REQUIRED = {"Repository": "https://github.com/ORG/earthsnap", "ArtifactBucket": "es-team"}
OWN_ROLE = f"arn:aws:iam::{ACCOUNT}:role/team-sagemaker"


@cache
def template() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


class Stack:
    "The template resolved for `values` (the parameters given; the others take their defaults)."

    def __init__(self, **values):
        t = template()
        unknown = set(values) - set(t["Parameters"])
        assert not unknown, unknown
        self.params = {k: str(values.get(k, p.get("Default", ""))) for k, p in t["Parameters"].items()}
        for k, p in t["Parameters"].items():  # what CloudFormation checks of a value before anything is created
            v = self.params[k]
            assert k in values or "Default" in p, f"parameter {k} has no value"
            assert "AllowedValues" not in p or v in p["AllowedValues"], (k, v)
            assert "AllowedPattern" not in p or re.fullmatch(p["AllowedPattern"], v), (k, v)
            assert "MinValue" not in p or float(v) >= p["MinValue"], (k, v)
        self.pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": "earthsnap-release",
        }
        self.conditions = {k: self.condition(c) for k, c in t.get("Conditions", {}).items()}
        self.resources = {
            k: r for k, r in t["Resources"].items() if "Condition" not in r or self.conditions[r["Condition"]]
        }

    def condition(self, c) -> bool:
        ((fn, args),) = c.items()
        if fn == "Condition":
            return self.condition(template()["Conditions"][args])
        if fn == "Fn::Equals":
            a, b = (self.resolve(x) for x in args)
            return str(a) == str(b)
        if fn == "Fn::Not":
            return not self.condition(args[0])
        if fn == "Fn::And":
            return all(self.condition(x) for x in args)
        if fn == "Fn::Or":
            return any(self.condition(x) for x in args)
        raise AssertionError(f"condition function {fn} is not resolved here")

    def attribute(self, name: str, attr: str) -> str:
        "A resource's attribute, as AWS would make it for the resource's type."
        assert name in self.resources, f"{name} is not created with these parameters"
        kind = self.resources[name]["Type"]
        if (kind, attr) == ("AWS::IAM::Role", "Arn"):
            return f"arn:aws:iam::{ACCOUNT}:role/earthsnap-release-{name}-ABC123"
        if (kind, attr) == ("AWS::ECR::Repository", "Arn"):
            return f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{self.params['PipelineName']}-image"
        if (kind, attr) == ("AWS::ECR::Repository", "RepositoryUri"):
            return f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{self.params['PipelineName']}-image"
        if (kind, attr) == ("AWS::Events::Rule", "Arn"):
            return f"arn:aws:events:{REGION}:{ACCOUNT}:rule/earthsnap-release-{name}-ABC123"
        return f"<{name}.{attr}>"

    def ref(self, name: str):
        if name in self.params:
            return self.params[name]
        if name in self.pseudo:
            return self.pseudo[name]
        assert name in self.resources, f"{name} is not created with these parameters"
        if self.resources[name]["Type"] == "AWS::SNS::Topic":
            return f"arn:aws:sns:{REGION}:{ACCOUNT}:earthsnap-release-{name}-ABC123"
        return f"<{name}>"

    def sub(self, text: str, local: dict) -> str:
        def one(m):
            name = m.group(1)
            if name in local:
                return str(local[name])
            return str(self.attribute(*name.split(".", 1)) if "." in name else self.ref(name))

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def resolve(self, node):
        "`node` with its intrinsic functions resolved (AWS::NoValue leaves its key or item out)."
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((fn, args),) = node.items()
            if fn == "Ref":
                return NO_VALUE if args == "AWS::NoValue" else self.ref(args)
            if fn == "Fn::If":
                return self.resolve(args[1] if self.conditions[args[0]] else args[2])
            if fn == "Fn::Sub":
                text, local = (args, {}) if isinstance(args, str) else (args[0], self.resolve(args[1]))
                return self.sub(text, local)
            if fn == "Fn::GetAtt":
                return self.attribute(*args)
            if fn == "Fn::Select":
                return self.resolve(args[1])[int(args[0])]
            if fn == "Fn::Split":
                return self.resolve(args[1]).split(args[0])
            if fn == "Fn::Join":
                return args[0].join(self.resolve(args[1]))
            assert not fn.startswith("Fn::"), f"{fn} is not resolved here"
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not NO_VALUE}

    def outputs(self) -> dict:
        "The stack's outputs' values."
        t = template()["Outputs"]
        return {
            k: self.resolve(o["Value"]) for k, o in t.items() if "Condition" not in o or self.conditions[o["Condition"]]
        }

    def properties(self, name: str) -> dict:
        return self.resolve(self.resources[name].get("Properties", {}))

    def statements(self, role: str) -> list[dict]:
        "Every statement of the policies a role has: inline, and managed ones of the stack attached to it."
        props = self.properties(role)
        out = [s for p in props.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        for name, r in self.resources.items():
            if r["Type"] == "AWS::IAM::ManagedPolicy" and f"<{role}>" in self.properties(name).get("Roles", []):
                out += self.properties(name)["PolicyDocument"]["Statement"]
        return out


NO_VALUE = object()


def listed(v) -> list:
    return v if isinstance(v, list) else [v]


def allows(statements: list[dict], action: str, resource: str | None = None) -> bool:
    "Whether an Allow statement grants `action` (on `resource`, when one is named)."
    return any(
        s["Effect"] == "Allow"
        and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in listed(s["Action"]))
        and (resource is None or any(fnmatch.fnmatchcase(resource, r) for r in listed(s["Resource"])))
        for s in statements
    )


def test_the_template_passes_cfn_lint_for_every_choice():
    "(tests/test_sagemaker.py runs cfn-lint on the file; here every combination of the choices resolves.)"
    for runner in ("github-actions", "codebuild"):
        for token in ("", "earthsnap/github-token"):
            for role in ("", OWN_ROLE):
                s = Stack(**REQUIRED, CiRunner=runner, GitHubTokenSecret=token, SageMakerRoleArn=role)
                for name in s.resources:
                    s.properties(name)  # every Ref and GetAtt names a resource created with these values
                s.outputs()


# --- API Gateway's request templates, against the input shape of the operation they call ---------------------------

SAMPLE_CONTEXT = {"requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "stage": "v1", "httpMethod": "POST"}
SERVICES = {"api.sagemaker": "sagemaker"}  # an integration URI's service (its endpoint prefix) -> botocore's name


def json_path(body: dict, path: str):
    "The value at a JSONPath of the forms $ and $.a.b, or None where the body has none."
    assert re.fullmatch(r"\$(\.\w+)*", path), f"JSONPath {path} is not read here"
    v = body
    for part in path.split(".")[1:]:
        v = v.get(part) if isinstance(v, dict) else None
    return v


def render_vtl(text: str, body: dict, context: dict) -> str:
    """An API Gateway mapping template rendered for a request with `body`: the VTL it uses ($input.path,
    $input.json, $context.*, #set of a variable, #if on one). Anything else fails the test: add it here first.
    """
    variables = {}
    expr = r"\$input\.path\('([^']*)'\)"

    def set_(m):
        variables[m.group(1)] = json_path(body, m.group(2))
        return ""

    text = re.sub(r"#set\(\$(\w+) = " + expr + r"\)", set_, text)

    def if_(m):
        var, path, inner = m.groups()
        value = variables[var] if var else json_path(body, path)
        return inner if value is not None else ""  # Velocity: a null reference is false

    text = re.sub(r"#if\((?:\$(\w+)|" + expr + r")\)(.*?)#end", if_, text, flags=re.S)

    def json_(m):
        v = json_path(body, m.group(1))
        assert v is not None, f"$input.json('{m.group(1)}') of a body without it (guard it with #if)"
        return json.dumps(v)

    text = re.sub(r"\$input\.json\('([^']*)'\)", json_, text)
    text = re.sub(r"\$context\.(\w+)", lambda m: context[m.group(1)], text)
    left = re.findall(r"[$#][{!a-zA-Z][\w.]*", text)
    assert not left, f"VTL not rendered here: {left}"
    return text


def integrations(stack: Stack):
    "(method, operation model, integration) of every API Gateway method integrated with an AWS service's API."
    for name, r in stack.resources.items():
        if r["Type"] != "AWS::ApiGateway::Method":
            continue
        i = stack.properties(name)["Integration"]
        if i["Type"] != "AWS":
            continue
        service = SERVICES[re.fullmatch(r"arn:aws:apigateway:[\w-]+:([\w.-]+):.*", i["Uri"]).group(1)]
        target = i["RequestParameters"]["integration.request.header.X-Amz-Target"].strip("'")
        prefix, operation = target.split(".")
        model = botocore.session.get_session().get_service_model(service)
        assert model.metadata["targetPrefix"] == prefix, target
        yield name, model.operation_model(operation), i


def shape_problems(shape, value, where: str = "") -> list[str]:
    """What the service would refuse in `value` against `shape` that botocore's validation leaves to the service:
    maximum lengths and counts, patterns, enums.
    """
    out = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for k, v in value.items():
            if k in shape.members:
                out += shape_problems(shape.members[k], v, f"{where}.{k}")
    elif shape.type_name == "list" and isinstance(value, list):
        if "max" in shape.metadata and len(value) > shape.metadata["max"]:
            out.append(f"{where}: {len(value)} items, at most {shape.metadata['max']}")
        for i, v in enumerate(value):
            out += shape_problems(shape.member, v, f"{where}[{i}]")
    elif shape.type_name == "string" and isinstance(value, str):
        if "max" in shape.metadata and len(value) > shape.metadata["max"]:
            out.append(f"{where}: {len(value)} characters, at most {shape.metadata['max']}")
        if "pattern" in shape.metadata and not re.fullmatch(shape.metadata["pattern"], value):
            out.append(f"{where}: {value!r} does not match {shape.metadata['pattern']}")
        if shape.enum and value not in shape.enum:
            out.append(f"{where}: {value!r} is not one of {shape.enum}")
    return out


def request_problems(operation, request: dict) -> list[str]:
    "Why the service would refuse `request`: botocore's validation (required members, types, minimums), then the rest."
    report = ParamValidator().validate(request, operation.input_shape)
    return ([report.generate_report()] if report.has_errors() else []) + shape_problems(operation.input_shape, request)


BODIES = {
    "parameters": {"parameters": [{"Name": "epochs", "Value": "30"}, {"Name": "lr", "Value": "0.001"}]},
    "no parameters": {},
    "an empty list": {"parameters": []},
}


@pytest.mark.parametrize("body", list(BODIES))
def test_every_api_gateway_integration_sends_a_request_its_operation_takes(body):
    """StartMethod's template, rendered for a request, is a StartPipelineExecution request SageMaker takes: its
    required ClientRequestToken (32 to 128 characters; API Gateway, unlike boto3, does not make one up) among them."""
    stack = Stack(**REQUIRED, PipelineName="earthsnap-plants")
    found = list(integrations(stack))
    assert [(m, op.name) for m, op, _ in found] == [("StartMethod", "StartPipelineExecution")]
    for _, operation, integration in found:
        for content_type, text in integration["RequestTemplates"].items():
            rendered = render_vtl(text, BODIES[body], SAMPLE_CONTEXT)
            request = json.loads(rendered)
            assert request_problems(operation, request) == [], (content_type, rendered)
            assert request["PipelineName"] == "earthsnap-plants"
            assert request.get("PipelineParameters", []) == BODIES[body].get("parameters", [])
            # one execution per request: the token differs between requests (a repeated token is a retry of the
            # first request, which SageMaker answers with the first execution)
            other = json.loads(render_vtl(text, BODIES[body], {**SAMPLE_CONTEXT, "requestId": "0" * 36}))
            assert other["ClientRequestToken"] != request["ClientRequestToken"]
        # nothing but the template's request reaches the service (no pass-through of another content type)
        assert integration.get("PassthroughBehavior") == "NEVER"


def test_the_start_api_refuses_a_body_sagemaker_would_refuse_before_calling_it():
    "StartBody (the method's request model, checked by StartBodyValidator): what it takes, the shape takes."
    stack = Stack(**REQUIRED)
    method = stack.properties("StartMethod")
    assert method["RequestValidatorId"] == "<StartBodyValidator>"
    assert stack.properties("StartBodyValidator")["ValidateRequestBody"] is True
    assert method["RequestModels"] == {"application/json": "<StartBody>"}
    schema = stack.properties("StartBody")["Schema"]
    ((_, operation, integration),) = integrations(stack)
    bad = {
        "a name with a space": {"parameters": [{"Name": "learning rate", "Value": "1"}]},
        "a number": {"parameters": [{"Name": "epochs", "Value": 30}]},
        "a long value": {"parameters": [{"Name": "epochs", "Value": "3" * 1025}]},
        "201 parameters": {"parameters": [{"Name": f"p{i}", "Value": "1"} for i in range(201)]},
        "an empty name": {"parameters": [{"Name": "", "Value": "1"}]},
        "no value": {"parameters": [{"Name": "epochs"}]},
    }
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"  # the draft API Gateway reads
    model = jsonschema.Draft4Validator(schema)
    for why, body in bad.items():
        assert not model.is_valid(body), why
        request = json.loads(render_vtl(integration["RequestTemplates"]["application/json"], body, SAMPLE_CONTEXT))
        assert request_problems(operation, request), f"{why}: SageMaker would take it"
    for body in BODIES.values():
        model.validate(body)


def test_every_refusal_or_failure_of_sagemaker_reaches_the_caller_as_one():
    """API Gateway answers with the integration response whose SelectionPattern matches the backend's status, and with
    the one without a pattern otherwise: SageMaker's 4xx is a 400 and its 5xx a 502, never a 200 with an error in it."""
    method = Stack(**REQUIRED).properties("StartMethod")
    responses = method["Integration"]["IntegrationResponses"]
    (default,) = [r for r in responses if "SelectionPattern" not in r]

    def answered(status: int) -> str:
        hits = [r for r in responses if "SelectionPattern" in r and re.fullmatch(r["SelectionPattern"], str(status))]
        return (hits or [default])[0]["StatusCode"]

    assert answered(200) == "200"
    assert {s: answered(s) for s in (400, 403, 404, 429)} == dict.fromkeys((400, 403, 404, 429), "400")
    assert {s: answered(s) for s in (500, 503)} == {500: "502", 503: "502"}
    declared = {r["StatusCode"] for r in method["MethodResponses"]}
    assert {r["StatusCode"] for r in responses} <= declared  # each answer is one the method declares


# --- the monitor's schedule --------------------------------------------------------------------------------------

# EventBridge's rate expressions: a singular unit for 1, a plural one above
RATE = r"rate\((1 (minute|hour|day)|([2-9]|[1-9]\d+) (minutes|hours|days))\)"


@pytest.mark.parametrize("minutes", [1, 2, 15, 60, 1440])
def test_the_monitor_schedule_is_a_rate_eventbridge_takes(minutes):
    rule = Stack(**REQUIRED, MonitorMinutes=minutes).properties("MonitorSchedule")
    assert re.fullmatch(RATE, rule["ScheduleExpression"]), rule["ScheduleExpression"]
    assert rule["ScheduleExpression"].startswith(f"rate({minutes} minute")
    (target,) = rule["Targets"]
    assert {"Name": "minutes", "Value": str(minutes)} in target["SageMakerPipelineParameters"]["PipelineParameterList"]


# --- IAM: each role holds what the code it runs calls, on the resources it calls them on ----------------------------

# the client variables of earthsnap/sagemaker's modules -> their botocore service (a new one fails the test: add it)
CLIENTS = {
    "sm": "sagemaker",
    "_call": "sagemaker",  # SageMakerRegistry._call(op, ...) calls self.sm
    "call": "sagemaker",  # monitoring.live_model's call(op, ...) calls its sm (a call(client, op) names its client)
    "rt": "sagemaker-runtime",
    "runtime": "sagemaker-runtime",
    "events_client": "events",
    "events": "events",
    "cloudwatch": "cloudwatch",
    "cw": "cloudwatch",
}
# the services whose operations the scan looks for (a call on a client it cannot name fails the test)
SERVICES_CALLED = (
    "sagemaker",
    "sagemaker-runtime",
    "events",
    "s3",
    "ecr",
    "sts",
    "cloudwatch",
    "logs",
    "iam",
    "application-autoscaling",
    "secretsmanager",
)
# actions IAM grants on no narrower resource than "*"
NO_RESOURCE_LEVEL = {
    "ecr:GetAuthorizationToken",
    "sagemaker:ListModels",
    "sagemaker:ListEndpoints",
    "cloudwatch:PutMetricData",
}


@cache
def operations(service: str) -> dict[str, str]:
    "boto3's method names of a service's operations -> the operations' names."
    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(o): o for o in model.operation_names}


def boto_calls(module: str) -> set[str]:
    """The IAM actions of the boto3 calls in earthsnap/sagemaker/`module`.py: `client.op(...)`, `call(client, "op",
    ...)`, `aws_call(client, "op", ...)` and `self._call("op", ...)`.
    """
    known = {op for s in SERVICES_CALLED for op in operations(s)}
    found = set()
    for n in ast.walk(ast.parse((ROOT / "earthsnap" / "sagemaker" / f"{module}.py").read_text())):
        if not isinstance(n, ast.Call):
            continue
        if isinstance(n.func, ast.Attribute) and n.func.attr in known:
            op, client = n.func.attr, n.func.value
        else:
            named = [i for i, a in enumerate(n.args) if isinstance(a, ast.Constant) and a.value in known]
            if not named:
                continue
            op, client = n.args[named[0]].value, n.args[named[0] - 1] if named[0] else n.func
        name = getattr(client, "attr", getattr(client, "id", None))
        assert name in CLIENTS, f"{module}.py line {n.lineno}: {op} on {ast.unparse(client)}, a client of what?"
        service = CLIENTS[name]
        assert op in operations(service), f"{module}.py line {n.lineno}: {service} has no {op}"
        found.add(f"{'sagemaker' if service == 'sagemaker-runtime' else service}:{operations(service)[op]}")
        if service == "sagemaker" and any(k.arg == "Tags" for k in n.keywords):
            found.add("sagemaker:AddTags")  # (a create call with Tags needs it too)
    return found


# what the pipeline's role needs for a step of each type: SageMaker runs it as that role
STEP_ACTIONS = {
    "Processing": ["CreateProcessingJob", "DescribeProcessingJob", "StopProcessingJob", "AddTags"],
    "Training": ["CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob", "AddTags"],
    "Tuning": [
        "CreateHyperParameterTuningJob",
        "DescribeHyperParameterTuningJob",
        "StopHyperParameterTuningJob",
        "ListTrainingJobsForHyperParameterTuningJob",
        "CreateTrainingJob",
        "AddTags",
    ],
    "RegisterModel": ["CreateModelPackage", "DescribeModelPackage"],
    "Condition": [],
    "Fail": [],
}


def step_types(steps: list[dict]) -> set[str]:
    "The types of `steps` and of the steps inside them (a condition's branches)."
    out = set()
    for s in steps:
        out.add(s["Type"])
        args = s.get("Arguments", {})
        out |= step_types(args.get("IfSteps", []) + args.get("ElseSteps", []))
    return out


@cache
def compiled_step_types() -> set[str]:
    "Every step type of the pipelines the project compiles: the notebook trainer's, the built-in's, the monitor's."
    from earthsnap.core.config import load_config
    from earthsnap.sagemaker.compiler import compile_project

    cfg = load_config(
        ROOT,
        env={},
        sagemaker_region=REGION,
        sagemaker_bucket="s3://es-team/earthsnap",
        sagemaker_role=OWN_ROLE,
        sagemaker_image_repository=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/earthsnap",
    )
    builtin = {"search_space": '{"lr": [0.001, 0.1, "log"], "optimizer": ["sgd"]}'}
    compiled = [
        compile_project(cfg)[1],
        compile_project(cfg, builtin, trainer="builtin")[1],
        compile_project(cfg, pipeline_file=ROOT / "pipeline" / "monitoring.py")[1],
    ]
    return set().union(*(step_types(c.definition()["Steps"]) for c in compiled))


def execution_role(stack: Stack) -> str:
    return stack.params["SageMakerRoleArn"] or stack.attribute("SageMakerExecutionRole", "Arn")


def execution_statements(stack: Stack) -> list[dict]:
    "What the execution role is allowed: its policy in the stack (attached to the stack's role, or to your own)."
    (policy,) = [n for n, r in stack.resources.items() if r["Type"] == "AWS::IAM::ManagedPolicy"]
    return stack.properties(policy)["PolicyDocument"]["Statement"]


BUCKET_OBJECT = "arn:aws:s3:::es-team/earthsnap/runs/x/model.tar.gz"
# the roles' needs the code does not show as boto3 calls: s3fs and the SageMaker SDK's uploads, docker's push and
# login, CodeBuild's and SageMaker's logs
NEEDS = {
    "ReleaseRole": [
        ("s3:GetObject", BUCKET_OBJECT),
        ("s3:ListBucket", "arn:aws:s3:::es-team"),
        (
            "logs:PutLogEvents",
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/codebuild/earthsnap-release:log-stream:x",
        ),
    ],
    "CiRole": [
        ("s3:GetObject", BUCKET_OBJECT),
        ("s3:PutObject", BUCKET_OBJECT),
        ("s3:ListBucket", "arn:aws:s3:::es-team"),
        ("ecr:GetAuthorizationToken", None),
        *[
            (f"ecr:{a}", f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/earthsnap-image")
            for a in ("BatchGetImage", "BatchCheckLayerAvailability", "InitiateLayerUpload", "UploadLayerPart")
            + ("CompleteLayerUpload", "PutImage", "DescribeImages")
        ],
        ("logs:PutLogEvents", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/codebuild/earthsnap-ci:log-stream:x"),
        ("sagemaker:StartPipelineExecution", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:pipeline/earthsnap"),
        ("sagemaker:UpdatePipeline", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:pipeline/earthsnap-monitor"),
        ("sagemaker:CreatePipeline", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:pipeline/earthsnap-acantha"),
    ],
    "execution": [
        *[(f"s3:{a}", BUCKET_OBJECT) for a in ("GetObject", "PutObject", "DeleteObject")],
        ("s3:ListBucket", "arn:aws:s3:::es-team"),
        ("ecr:GetAuthorizationToken", None),
        *[
            (f"ecr:{a}", f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/earthsnap-image")
            for a in ("BatchGetImage", "GetDownloadUrlForLayer", "BatchCheckLayerAvailability")
        ],
        *[
            (f"logs:{a}", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/TrainingJobs")
            for a in ("CreateLogGroup", "CreateLogStream", "PutLogEvents")
        ],
        ("events:PutEvents", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"),
        ("sagemaker:CreateModelPackage", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/species/3"),
        # SageMaker reads an endpoint update's auto-rollback alarms as the execution role (deployment guardrails)
        ("cloudwatch:DescribeAlarms", f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:earthsnap-species-prod-5xx"),
    ],
}
ROLE_MODULES = {"ReleaseRole": ["release"], "CiRole": ["service", "image"], "execution": ["monitoring"]}


@pytest.mark.parametrize("own_role", ["", OWN_ROLE], ids=["stack's execution role", "your own"])
def test_each_role_is_allowed_what_its_code_calls(own_role):
    """The release, CI and the SageMaker execution role: the actions of the boto3 calls in the code each runs (a new
    call without its permission fails here), the pipelines' step types, and their other needs."""
    stack = Stack(**REQUIRED, CiRunner="codebuild", SageMakerRoleArn=own_role)
    assert stack.properties("ReleaseProject")["ServiceRole"] == stack.attribute("ReleaseRole", "Arn")
    assert stack.properties("CiProject")["ServiceRole"] == stack.attribute("CiRole", "Arn")  # one role each
    for role in ("ReleaseRole", "CiRole"):  # assumed by this account's CodeBuild only (the confused deputy)
        (trust,) = stack.properties(role)["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}, role
    statements = {
        "ReleaseRole": stack.statements("ReleaseRole"),
        "CiRole": stack.statements("CiRole"),
        "execution": execution_statements(stack),
    }
    if not own_role:  # the stack's own execution role has the policy attached
        assert stack.statements("SageMakerExecutionRole") == statements["execution"]
        trust = stack.properties("SageMakerExecutionRole")["AssumeRolePolicyDocument"]["Statement"]
        assert trust == [
            {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
    calls = {role: set().union(*(boto_calls(m) for m in modules)) for role, modules in ROLE_MODULES.items()}
    assert {"sagemaker:CreateEndpoint", "sagemaker:InvokeEndpoint"} <= calls["ReleaseRole"]  # (the scan finds them)
    assert {"sagemaker:CreatePipeline", "sagemaker:StartPipelineExecution"} <= calls["CiRole"]
    assert {"events:PutEvents", "sagemaker:DescribeEndpoint"} <= calls["execution"]
    unknown = compiled_step_types() - set(STEP_ACTIONS)
    assert not unknown, f"steps of type {unknown}: which actions does the pipeline's role need for them?"
    calls["execution"] |= {f"sagemaker:{a}" for t in compiled_step_types() for a in STEP_ACTIONS[t]}
    for role, actions in calls.items():
        missing = sorted(a for a in actions if not allows(statements[role], a))
        assert not missing, f"{role} is not allowed {missing}"
        missing = [(a, r) for a, r in NEEDS[role] if not allows(statements[role], a, r)]
        assert not missing, f"{role} is not allowed {missing}"
        # every role that hands the execution role on (to a pipeline, a model, a job) may pass that one role only
        passes = [s for s in statements[role] if "iam:PassRole" in listed(s["Action"])]
        assert [s["Resource"] for s in passes] == [execution_role(stack)], role
        assert all(
            s["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}} for s in passes
        )
    # each role only what its job needs
    assert not allows(statements["ReleaseRole"], "sagemaker:CreatePipeline")
    assert not allows(statements["ReleaseRole"], "ecr:PutImage", "*")
    assert not allows(statements["CiRole"], "sagemaker:CreateEndpoint")
    assert not allows(statements["execution"], "sagemaker:CreateEndpoint")
    outputs = stack.outputs()
    assert outputs["SageMakerRoleArn"] == execution_role(stack)
    assert outputs["SageMakerExecutionPolicyArn"] == "<SageMakerExecutionPolicy>"


def test_no_policy_grants_every_resource_where_iam_can_name_one():
    for runner in ("github-actions", "codebuild"):
        for own_role in ("", OWN_ROLE):
            stack = Stack(**REQUIRED, CiRunner=runner, SageMakerRoleArn=own_role)
            for name in stack.resources:
                props = stack.properties(name)
                documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
                documents += [props["PolicyDocument"]] if "PolicyDocument" in props else []
                for s in (s for d in documents for s in d["Statement"]):
                    assert s.get("Principal") != "*" and s.get("Principal") != {"AWS": "*"}, name
                    if "*" in listed(s.get("Resource", [])):
                        wide = set(listed(s["Action"])) - NO_RESOURCE_LEVEL
                        assert not wide, f"{name} grants {wide} on every resource"


def test_only_the_drift_rule_may_publish_to_the_drift_topic():
    stack = Stack(**REQUIRED)
    (publish,) = stack.properties("DriftTopicPolicy")["PolicyDocument"]["Statement"]
    assert publish["Principal"] == {"Service": "events.amazonaws.com"} and publish["Action"] == "sns:Publish"
    assert publish["Resource"] == stack.ref("DriftTopic")
    assert publish["Condition"] == {"ArnEquals": {"aws:SourceArn": stack.attribute("DriftRule", "Arn")}}


# --- CI: one runner on a push to main -------------------------------------------------------------------------------


def workflow_job_runs(job: dict, event: str, ref: str, variables: dict) -> bool:
    "Whether a GitHub Actions job's `if` (the ==, !=, && and || of github.* and vars.* it uses) lets it run."
    rest = re.sub(r"'[^']*'|\b(github|vars)\.\w+|==|!=|&&|\|\||[()]", "", job["if"])
    assert not rest.strip(), f"not evaluated here: {rest}"
    context = {"github": {"event_name": event, "ref": ref}, "vars": variables}
    expr = re.sub(r"\b(github|vars)\.(\w+)", lambda m: repr(context[m.group(1)].get(m.group(2), "")), job["if"])
    expr = expr.replace("&&", " and ").replace("||", " or ")
    return eval(expr, {"__builtins__": {}})


def webhook_projects(stack: Stack, ref: str) -> list[str]:
    "The CodeBuild projects a push to `ref` starts."
    out = []
    for name, r in stack.resources.items():
        if r["Type"] == "AWS::CodeBuild::Project":
            triggers = stack.properties(name).get("Triggers", {})
            if triggers.get("Webhook") and any(
                {"Type": "EVENT", "Pattern": "PUSH"} in g
                and all(re.search(f["Pattern"], ref) for f in g if f["Type"] == "HEAD_REF")
                for g in triggers["FilterGroups"]
            ):
                out.append(name)
    return out


@pytest.mark.parametrize("runner", ["github-actions", "codebuild"])
def test_a_push_to_main_starts_the_pipeline_once(runner):
    """The stack's CiRunner and the repository's EARTHSNAP_CI_RUNNER name the same runner: CodeBuild's CiProject or
    the workflow's sagemaker job upserts and starts the pipeline on a push to main, not both."""
    stack = Stack(**REQUIRED, CiRunner=runner)
    wf = yaml.safe_load(WORKFLOW.read_text())
    job = wf["jobs"]["sagemaker"]
    outputs = stack.outputs()
    variables = {"AWS_ROLE_ARN": outputs["CiRoleArn"], "AWS_REGION": REGION, "EARTHSNAP_CI_RUNNER": runner}
    main = "refs/heads/main"
    starts = webhook_projects(stack, main) + (["workflow"] if workflow_job_runs(job, "push", main, variables) else [])
    assert starts == (["workflow"] if runner == "github-actions" else ["CiProject"])
    # the workflow's job: only on a push to main of a repository set up for it
    assert not workflow_job_runs(job, "pull_request", main, variables)
    assert not workflow_job_runs(job, "push", "refs/heads/feature", variables)
    assert not workflow_job_runs(job, "push", main, {k: v for k, v in variables.items() if k != "EARTHSNAP_CI_RUNNER"})
    assert not workflow_job_runs(job, "push", main, {**variables, "AWS_ROLE_ARN": ""})
    assert webhook_projects(stack, "refs/heads/feature") == []
    (trust,) = stack.properties("CiRole")["AssumeRolePolicyDocument"]["Statement"]
    if runner == "codebuild":
        assert trust["Principal"] == {"Service": "codebuild.amazonaws.com"} and "CiProject" in outputs
        assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}  # this account's CodeBuild
        commands = yaml.safe_load(stack.properties("CiProject")["Source"]["BuildSpec"])["phases"]["build"]["commands"]
    else:  # GitHub's OIDC tokens of this repository's main branch only
        assert "CiProject" not in stack.resources and "CiProject" not in outputs
        assert trust == {
            "Effect": "Allow",
            "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                    "token.actions.githubusercontent.com:sub": "repo:ORG/earthsnap:ref:refs/heads/main",
                }
            },
        }
        assert job["permissions"]["id-token"] == "write"
        commands = [s["run"] for s in job["steps"] if "run" in s]
    # either runner: the image, the pipeline upserted and started, the monitor's pipeline upserted
    assert "make image-push" in commands
    assert [c.split("earthsnap ")[1].split(" --")[0] for c in commands if "earthsnap sagemaker" in c] == [
        "sagemaker upsert",
        "sagemaker start",
        "sagemaker upsert",
    ]
    assert commands[-1].endswith("earthsnap sagemaker upsert --pipeline pipeline/monitoring.py")


def test_the_first_deploy_needs_no_github_credentials_in_codebuild():
    """A webhook (CiRunner=codebuild) needs CodeBuild to hold GitHub credentials in the account and region: the
    default runner makes none, and GitHubTokenSecret imports them from Secrets Manager before the projects."""
    stack = Stack(**REQUIRED)
    assert stack.params["CiRunner"] == "github-actions" and webhook_projects(stack, "refs/heads/main") == []
    assert "GitHubCredential" not in stack.resources
    stack = Stack(**REQUIRED, CiRunner="codebuild", GitHubTokenSecret="earthsnap/github-token")
    assert stack.properties("GitHubCredential") == {
        "ServerType": "GITHUB",
        "AuthType": "PERSONAL_ACCESS_TOKEN",
        # a dynamic reference: CloudFormation reads the secret when it creates the credential; no token in the template
        "Token": "{{resolve:secretsmanager:earthsnap/github-token}}",
    }
    for project in ("CiProject", "ReleaseProject"):  # both refer to it, so are created after it
        env = {v["Name"]: v["Value"] for v in stack.properties(project)["Environment"]["EnvironmentVariables"]}
        assert env["GITHUB_SOURCE_CREDENTIAL"] == "<GitHubCredential>", project
    stack = Stack(**REQUIRED, CiRunner="codebuild")  # credentials CodeBuild holds already (connected in its console)
    assert "GitHubCredential" not in stack.resources and webhook_projects(stack, "refs/heads/main") == ["CiProject"]
    with pytest.raises(AssertionError):  # the URL the OIDC trust and the projects read: https://github.com/ORG/NAME
        Stack(**{**REQUIRED, "Repository": "git@github.com:ORG/earthsnap.git"})
    with pytest.raises(AssertionError):
        Stack(**{**REQUIRED, "Repository": "https://github.com/ORG/earthsnap.git"})


def api_fingerprint(t: dict) -> str:
    "A digest of what the start API's deployment serves: its methods, models and validators as written."
    parts = {
        k: r
        for k, r in t["Resources"].items()
        if r["Type"] in ("AWS::ApiGateway::Method", "AWS::ApiGateway::Model", "AWS::ApiGateway::RequestValidator")
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:8]


def test_a_changed_start_api_is_deployed_again():
    """CloudFormation deploys an API Gateway stage again only when its Deployment resource is new: the deployment's
    logical id ends with a digest of the methods it serves, so that an update of the stack serves the new template
    (an old stack would otherwise keep the request without ClientRequestToken)."""
    t = template()
    (deployment,) = [k for k, r in t["Resources"].items() if r["Type"] == "AWS::ApiGateway::Deployment"]
    assert deployment == f"ApiDeployment{api_fingerprint(t)}", "rename the deployment (and its Ref) to this"
    assert t["Resources"]["ApiStage"]["Properties"]["DeploymentId"] == {"Ref": deployment}
    assert t["Resources"][deployment]["DependsOn"] == "StartMethod"
    changed = json.loads(json.dumps(t))
    changed["Resources"]["StartMethod"]["Properties"]["Integration"]["RequestTemplates"]["application/json"] = "{}"
    assert api_fingerprint(changed) != api_fingerprint(t)
