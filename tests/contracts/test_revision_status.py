"""The observed state of a revision (controlplane/contracts/revision_status.py): one type for every backend, and its
entry in the local agent's status document, whose field names the agent writes and the local backend reads."""

from __future__ import annotations

import json

from controlplane.contracts.localagent import ObservedDeployment
from controlplane.contracts.revision_status import RevisionStatus

SEEN = RevisionStatus(
    revision_id=11,
    desired_replicas=2,
    ready_replicas=1,
    endpoints=["http://127.0.0.1:40123"],
    waiting_for_capacity="no free nvidia-h100 slot",
    message="1/2 ready; no free nvidia-h100 slot",
)


def test_its_wire_entry_carries_the_documented_fields_and_not_the_id() -> None:
    assert SEEN.to_wire() == {
        "desired_replicas": 2,
        "ready_replicas": 1,
        "endpoints": ["http://127.0.0.1:40123"],
        "waiting_for_capacity": "no free nvidia-h100 slot",
        "message": "1/2 ready; no free nvidia-h100 slot",
    }


def test_it_reads_back_what_it_wrote() -> None:
    assert RevisionStatus.from_wire(11, json.loads(json.dumps(SEEN.to_wire()))) == SEEN


def test_a_failure_travels_with_its_reason_and_message() -> None:
    failed = RevisionStatus(revision_id=11, failure_reason="CrashLoopBackOff", failure_message="pod p: exit code 1")

    entry = failed.to_wire()

    assert (entry["failure_reason"], entry["failure_message"]) == ("CrashLoopBackOff", "pod p: exit code 1")
    assert RevisionStatus.from_wire(11, json.loads(json.dumps(entry))) == failed


def test_an_entry_missing_fields_reads_as_the_defaults() -> None:
    assert RevisionStatus.from_wire(12, {}) == RevisionStatus(revision_id=12)


def test_the_agents_status_document_keys_revisions_by_id() -> None:
    observed = ObservedDeployment(exists=True, processes=2, revisions={11: SEEN})

    assert observed.to_json(heartbeat=1764201601.0, agent_pid=123) == (
        '{"agent_pid": 123, "exists": true, "heartbeat": 1764201601.0, "processes": 2, "revisions": {"11": '
        '{"desired_replicas": 2, "endpoints": ["http://127.0.0.1:40123"], "message": "1/2 ready; no free nvidia-h100 '
        'slot", "ready_replicas": 1, "waiting_for_capacity": "no free nvidia-h100 slot"}}}'
    )
