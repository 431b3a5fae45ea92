"""Redelivery through the real binaries: with Redis down, the FDS consumer's
invocation fails (its cache is unreachable), the poller keeps the batch and
retries it, and once Redis is back the same payment is decided. Nothing is
skipped. Runs against the local runtime that scripts/e2e.sh started."""

import json, os, subprocess, sys, time, urllib.request

GATEWAY = f"http://127.0.0.1:{os.environ.get('PAYSTREAM_HTTP_PORT', '3000')}"
POLLER_LOG = os.path.join(os.environ["LOG_DIR"], "poller.log")
ALICE_CARD = "00000000-0000-4000-8000-0000000ca401"
SEOUL_CAFE = "00000000-0000-4000-8000-00000000a001"


def call(method, path, token=None, body=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{GATEWAY}{path}", data=json.dumps(body).encode() if body else None, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.load(r)


def retries_logged():
    with open(POLLER_LOG) as f:
        # The function's name: its binary (the Lambda host) or its logical id (sam local).
        return sum(1 for line in f if "retrying the batch" in line and ("fds-consumer" in line or "FdsConsumerFunction" in line))


def main():
    _, login = call("POST", "/auth/login", body={"username": "alice", "password": "demo-password"})
    token = login["access_token"]
    before = retries_logged()
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"], capture_output=True)
    try:
        status, answer = call("POST", "/payments", token, {"card_id": ALICE_CARD, "merchant_id": SEOUL_CAFE, "amount": 3300, "currency": "KRW"})
        assert status == 202, answer
        payment = answer["payment_id"]
        deadline = time.time() + 30
        while retries_logged() == before:
            assert time.time() < deadline, "the FDS invocation never failed while Redis was down"
            time.sleep(0.5)
        _, view = call("GET", f"/payments/{payment}", token)
        assert view["status"] == "RECEIVED", f"decided without Redis? {view}"
        print(f"ok   Redis down: FDS invocation failed, payment {payment} still RECEIVED, the poller retries")
    finally:
        subprocess.run(["bash", "-c", "source scripts/lib.sh && ensure_redis"], check=True)
    deadline = time.time() + 60
    while True:
        _, view = call("GET", f"/payments/{payment}", token)
        if view["status"] != "RECEIVED":
            break
        assert time.time() < deadline, "the batch was not redelivered after Redis came back"
        time.sleep(0.5)
    print(f"ok   Redis back: the same batch was redelivered and the payment decided: {view['status']}")
    print("2 passed, 0 failed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL {e}", file=sys.stderr)
        sys.exit(1)
