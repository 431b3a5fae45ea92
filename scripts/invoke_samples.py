"""Runs every sample event under events/ through `cargo lambda invoke`
against the running local functions and checks each answer.

The samples carry placeholder tokens; real ones are obtained by logging in
through the gateway. HTTP samples must answer with the status listed here;
MSK and schedule samples must succeed (no function error)."""

import glob, json, os, subprocess, sys, tempfile, urllib.request

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


def login(username, password):
    req = urllib.request.Request(f"{GATEWAY}/auth/login", data=json.dumps({"username": username, "password": password}).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["access_token"]


def main():
    tokens = {
        "REPLACE_WITH_USER_TOKEN": login("alice", "demo-password"),
        "REPLACE_WITH_MERCHANT_TOKEN": login("merchant_demo", "demo-password"),
        "REPLACE_WITH_ADMIN_TOKEN": login("admin", ADMIN_PASSWORD),
    }
    failures, count = [], 0
    for path in sorted(glob.glob("events/*/*.json")):
        sample = os.path.relpath(path, "events")
        function = sample.split("/")[0]
        text = open(path).read()
        for placeholder, token in tokens.items():
            text = text.replace(placeholder, token)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            f.write(text)
        run = subprocess.run(["cargo-lambda", "lambda", "invoke", function, "--data-file", f.name, "--invoke-port", LAMBDA_PORT,
                              "--output-format", "json"], capture_output=True, text=True, timeout=120)
        os.unlink(f.name)
        count += 1
        if run.returncode != 0:
            failures.append(f"{sample}: invoke failed: {run.stderr.strip()[-300:]}")
            continue
        answer = json.loads(run.stdout)
        if "statusCode" in answer or sample in EXPECTED:
            status = answer.get("statusCode")
            ok = status in EXPECTED.get(sample, set())
            print(f"{'ok  ' if ok else 'FAIL'} {sample}: {status}")
            if not ok:
                failures.append(f"{sample}: status {status}, expected {sorted(EXPECTED.get(sample, []))}: {str(answer)[:300]}")
        else:
            print(f"ok   {sample}: {json.dumps(answer)[:120]}")
    print(f"{count - len(failures)} passed, {len(failures)} failed")
    for f in failures:
        print("  " + f, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
