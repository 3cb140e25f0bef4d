"""Drives a Ferry server through py-tes, the standard GA4GH TES client, for test/local/tes.test.ts.

usage: tes_client.py URL TOKEN < requests.json

Reads a JSON list of calls ({"call": "create", "task": {...}}, {"call": "get", "id": ..., "view": ...},
{"call": "list", "view": ..., "page_size": ..., "page_token": ...}, {"call": "cancel", "id": ...},
{"call": "wait", "id": ...}, {"call": "service_info"}) and prints one JSON line per call: what
py-tes made of the server's answer ({"ok": ...}), or the error it raised ({"error": ...}). py-tes
refuses any field the TES 1.1 schema does not have and any state it does not know, so an "ok"
means the answer parsed as TES 1.1.
"""

import json
import sys

import tes


def task_of(document):
    inputs = [tes.Input(**i) for i in document.get("inputs", [])]
    outputs = [tes.Output(**o) for o in document.get("outputs", [])]
    executors = [tes.Executor(**e) for e in document["executors"]]
    resources = tes.Resources(**document["resources"]) if "resources" in document else None
    rest = {k: v for k, v in document.items() if k not in ("inputs", "outputs", "executors", "resources")}
    return tes.Task(inputs=inputs or None, outputs=outputs or None, executors=executors, resources=resources, **rest)


def run(client, request):
    call = request["call"]
    if call == "create":
        return client.create_task(task_of(request["task"]))
    if call == "get":
        return client.get_task(request["id"], view=request.get("view", "BASIC")).as_dict()
    if call == "list":
        answer = client.list_tasks(
            view=request.get("view", "MINIMAL"),
            page_size=request.get("page_size"),
            page_token=request.get("page_token"),
        )
        return {
            "tasks": [t.as_dict() for t in answer.tasks or []],
            "next_page_token": answer.next_page_token,
        }
    if call == "cancel":
        client.cancel_task(request["id"])
        return {}
    if call == "wait":
        return client.wait(request["id"], timeout=request.get("timeout", 60)).as_dict()
    if call == "service_info":
        return client.get_service_info().as_dict()
    raise ValueError(f"unknown call {call}")


def main():
    url, token = sys.argv[1], sys.argv[2]
    client = tes.HTTPClient(url, token=token, timeout=30)
    for request in json.load(sys.stdin):
        try:
            answer = run(client, request)
            if isinstance(answer, str):
                answer = {"id": answer}
            print(json.dumps({"ok": answer}, default=str), flush=True)
        except Exception as error:  # the test asserts on what py-tes raised
            response = getattr(error, "response", None)
            print(
                json.dumps(
                    {
                        "error": f"{type(error).__name__}: {error}",
                        "status": getattr(response, "status_code", None),
                        "body": getattr(response, "text", None),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
