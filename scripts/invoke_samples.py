"""Runs every sample event under events/ through `cargo lambda invoke`
against the running local functions (the Lambda host's Invoke API), or with
`--via sam` through `sam local invoke -e` (a container per invocation, from
the `sam build` artifacts; scripts/sam_e2e.sh), and checks each answer.

The samples carry placeholder tokens; real ones are obtained by logging in
through the gateway. HTTP samples must answer with the status listed here;
MSK and schedule samples must succeed (no function error). Every HTTP
answer's body must also match the response schema that openapi.json
documents for its route and status (jsonschema, which cfn-lint brings into
the project's virtualenv), so the document cannot drift from the code."""

import argparse, base64, glob, json, os, re, subprocess, sys, tempfile, urllib.request

import jsonschema

GATEWAY = f"http://127.0.0.1:{os.environ.get('PAYSTREAM_HTTP_PORT', '3000')}"
LAMBDA_PORT = os.environ.get("PAYSTREAM_LAMBDA_PORT", "9000")
ADMIN_PASSWORD = os.environ.get("PAYSTREAM_ADMIN_PASSWORD", "admin-local-only")

# Expected status per HTTP sample against the seeded local database. A
# sample that creates something may meet what an earlier run created.
EXPECTED = {
    "account/signup.json": {201, 409},
    "account/login.json": {200},
    "account/create-card.json": {201, 409},
    "account/list-cards.json": {200},
    "account/list-card-products.json": {200},
    "account/create-merchant.json": {201},
    "account/get-merchant.json": {200},
    "account/list-notifications.json": {200},
    "account/get-openapi.json": {200},
    "pay/create-payment.json": {202},
    "pay/get-payment.json": {404},            # the sample's payment id is nobody's
    "verify/get-verification.json": {404},    # ... and so is its token
    "verify/post-decision.json": {404},
    "order/create-product.json": {201},
    "order/list-products.json": {200},
    "order/get-product.json": {404},          # the sample's product id does not exist locally
    "order/create-order.json": {404},
    "order/get-order.json": {404},
    "report/list-settlements.json": {200},
    "report/settlements-summary.json": {200},
    "report/merchant-dashboard.json": {200},
}


def schema_problem(openapi, event, answer):
    """None when the answer's body matches the documented schema, else why not."""
    route = event["routeKey"]
    method, path = route.split(" ", 1)
    operation = openapi["paths"].get(path, {}).get(method.lower())
    if operation is None:
        return f"{route} is not in openapi.json"
    status = str(answer.get("statusCode"))
    response = operation["responses"].get(status)
    if response is None:
        return f"{route} answered {status}, which openapi.json does not document"
    content_type = (answer.get("headers") or {}).get("content-type", "").split(";")[0].strip()
    media = response.get("content", {}).get(content_type)
    if media is None:
        return f"{route} {status}: content type {content_type!r} not documented ({sorted(response.get('content', {}))})"
    if not content_type.endswith("json"):
        return None
    body = answer.get("body") or ""
    if answer.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    # The schema's $refs point into the document's components.
    schema = dict(media["schema"], components=openapi["components"])
    try:
        jsonschema.Draft202012Validator(schema).validate(json.loads(body))
    except jsonschema.ValidationError as e:
        return f"{route} {status}: body does not match openapi.json: {e.message} at {list(e.absolute_path)}"
    return None


def login(username, password):
    req = urllib.request.Request(f"{GATEWAY}/auth/login", data=json.dumps({"username": username, "password": password}).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["access_token"]


def logical_ids():
    """Function directory (binary) -> the template's logical id: the
    `Binary` under each top-level resource of template.yaml."""
    ids, resource = {}, None
    for line in open("template.yaml"):
        if (m := re.match(r"^  (\w+):\s*$", line)):
            resource = m.group(1)
        elif (m := re.match(r"^\s+Binary:\s*(\S+)", line)) and resource:
            ids[m.group(1)] = resource
    return ids


def invoke_command(via, function, event_file):
    if via == "sam":
        # The same arguments as every sam local command of the scripts
        # (scripts/lib.sh: sam_local_args).
        return ["sam", "local", "invoke", logical_ids()[function], "--event", event_file,
                *os.environ["PAYSTREAM_SAM_LOCAL_ARGS"].splitlines()]
    return ["cargo-lambda", "lambda", "invoke", function, "--data-file", event_file,
            "--invoke-address", "127.0.0.1", "--invoke-port", LAMBDA_PORT, "--output-format", "json"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--via", choices=["cargo-lambda", "sam"], default="cargo-lambda")
    via = parser.parse_args().via
    tokens = {
        "REPLACE_WITH_USER_TOKEN": login("alice", "demo-password"),
        "REPLACE_WITH_MERCHANT_TOKEN": login("merchant_demo", "demo-password"),
        "REPLACE_WITH_ADMIN_TOKEN": login("admin", ADMIN_PASSWORD),
    }
    openapi = json.load(open("openapi.json"))
    failures, count = [], 0
    for path in sorted(glob.glob("events/*/*.json")):
        sample = os.path.relpath(path, "events")
        function = sample.split("/")[0]
        text = open(path).read()
        for placeholder, token in tokens.items():
            text = text.replace(placeholder, token)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            f.write(text)
        run = subprocess.run(invoke_command(via, function, f.name), capture_output=True, text=True, timeout=300)
        os.unlink(f.name)
        count += 1
        if run.returncode != 0:
            failures.append(f"{sample}: invoke failed: {run.stderr.strip()[-300:]}")
            continue
        try:
            answer = json.loads(run.stdout)
        except json.JSONDecodeError:
            failures.append(f"{sample}: not a JSON answer: {run.stdout.strip()[-300:]} {run.stderr.strip()[-300:]}")
            print(f"FAIL {sample}: not a JSON answer")
            continue
        # The host answers a function error as Lambda does (200 with
        # X-Amz-Function-Error), which `cargo lambda invoke` prints as output;
        # `sam local invoke` prints the same error object.
        if isinstance(answer, dict) and "errorType" in answer:
            failures.append(f"{sample}: function error {answer['errorType']}: {str(answer.get('errorMessage'))[:300]}")
            print(f"FAIL {sample}: {answer['errorType']}")
            continue
        if "statusCode" in answer or sample in EXPECTED:
            status = answer.get("statusCode")
            ok = status in EXPECTED.get(sample, set())
            print(f"{'ok  ' if ok else 'FAIL'} {sample}: {status}")
            if not ok:
                failures.append(f"{sample}: status {status}, expected {sorted(EXPECTED.get(sample, []))}: {str(answer)[:300]}")
            elif (problem := schema_problem(openapi, json.loads(text), answer)) is not None:
                print(f"FAIL {sample}: {problem}")
                failures.append(f"{sample}: {problem}")
        else:
            print(f"ok   {sample}: {json.dumps(answer)[:120]}")
    print(f"{count - len(failures)} passed, {len(failures)} failed (via {via})")
    for f in failures:
        print("  " + f, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
