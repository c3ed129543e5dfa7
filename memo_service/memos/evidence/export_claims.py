"""What an evidence export says beside its chain, checked against the chain with no
database (`verify_evidence --file`, verify_file.py): its `approval` against the newest
approval record, each case entry it lists against the case record that proves it (and
every case record listed), each case's outcome and rationale and each dispute's decision
against its case's last deciding record (and a case with none says it is open), each
answer (which must have an id) against its answer record, each recipient's standing
against the one its answers and cases give (standing_of), its `withdrawal` against the
withdrawal record.

The export lists cases and recipients before its chain. What they claim is kept as a
digest (16 bytes of SHA-256 over all the fields compared, and 4 per field to name the one
that differs), not as the values: a million answers cost tens of megabytes, not the
file. Imports no Django.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from memo_service.memos.evidence.checkpoints import canonical

# The chain's kinds, as EvidenceRecord.Kind names them (this module reads no model).
APPROVAL, ANSWER, CASE, WITHDRAWAL = "approval", "answer", "case", "withdrawal"
_REPLY, _DECISION = "reply", "decision"
_ANSWER_CLAIM = 16 + 4 * 8  # the length of an answer's claim (_digest of answer_fields' eight fields)
_COUNTRIES = ("previous_country", "new_country", "exempt")  # a dispute's decision's, when it has them
# A case continued on a correction: decided, and proven, there. models.CASE_CARRIED, spelled
# again: `verify_evidence --file` runs with no Django, and so imports no model.
_CARRIED = "carried"
# Answer.Response, Case.Kind and DELIVERY_HANDED_OVER's values, as the export writes them.
_ACKNOWLEDGED, _OBJECTS, _DISPUTES = "acknowledged", "objects", ("disputes_region", "disputes_traffic")
_DISPUTE, _HELP = "dispute", "help"
_HANDED_OVER = ("sent", "delivered", "bounced", "complained")


def standing_of(
    *, status: str, responses: set[str], exempted: bool, undecided: bool, open_cases: set[str], withdrawn: bool
) -> str:
    """A recipient's final standing (export.Standing), the first that holds: from their
    first email's `status`, their answers' `responses`, whether a decision on a dispute
    of theirs exempts them and whether one is `undecided`, the kinds of their cases not
    resolved and whether the memo was withdrawn. The export and `--file` both ask it."""
    if exempted:
        return "exempted"
    if _ACKNOWLEDGED in responses:
        return "acknowledged"
    if _OBJECTS in responses:
        return "objected"
    if status not in _HANDED_OVER:
        return "not sent"
    if withdrawn:
        return "withdrawn"
    if _DISPUTE in open_cases or undecided:
        return "dispute pending"
    if _HELP in open_cases:
        return "help pending"
    return "not answered"


def _digest(fields: dict[str, Any]) -> bytes:
    whole = hashlib.sha256(canonical(fields).encode()).digest()[:16]
    return whole + b"".join(hashlib.sha256(canonical([k, v]).encode()).digest()[:4] for k, v in fields.items())


def _differing(claimed: bytes, actual: dict[str, Any]) -> list[str]:
    mine = _digest(actual)
    return [name for n, name in enumerate(actual) if claimed[16 + 4 * n : 20 + 4 * n] != mine[16 + 4 * n : 20 + 4 * n]]


def _named(names: list[str]) -> str:
    return f"{', '.join(names)} {'differs' if len(names) == 1 else 'differ'}"


def _id(person: Any) -> Any:
    return person.get("id") if isinstance(person, dict) else person


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def answer_fields(developer: Any, answer: dict[str, Any]) -> dict[str, Any]:
    """What an exported answer says that its chain record holds too."""
    return {
        "developer": developer,
        "response": answer.get("response"),
        "at": answer.get("at"),
        "comment": answer.get("comment"),
        "country_claimed": answer.get("country_claimed"),
        "content_hash": answer.get("content_hash"),
        "statement_hash": answer.get("statement_hash") or "",
        "page_hash": answer.get("page_hash") or "",
    }


def answer_record_fields(payload: dict[str, Any]) -> dict[str, Any]:
    return answer_fields(payload.get("developer"), {**payload, "at": payload.get("created_at")})


def entry_fields(case: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """What an exported case entry says that its case record holds too."""
    notification = _dict(entry.get("notification"))
    fields = {
        "case": case.get("id"),
        "answer": case.get("answer"),
        "developer": case.get("developer"),
        "case_kind": case.get("kind"),
        "carried_from": case.get("carried_from"),
        "entry": entry.get("kind"),
        "text": entry.get("text"),
        "by": _id(entry.get("by")),
        "at": entry.get("at"),
        "notification": notification.get("id"),
        "notification_hash": notification.get("text_hash", ""),
    }
    if entry.get("kind") != _REPLY:
        fields |= {"status": entry.get("status"), "outcome": entry.get("outcome"), "rationale": entry.get("rationale")}
        fields |= {key: entry.get(key) for key in _COUNTRIES}
    return fields


def entry_record_fields(payload: dict[str, Any]) -> dict[str, Any]:
    fields = {
        key: payload.get(key)
        for key in ("case", "answer", "developer", "case_kind", "carried_from", "entry", "text", "by", "at")
    }
    fields |= {"notification": payload.get("notification"), "notification_hash": payload.get("notification_hash") or ""}
    if payload.get("entry") != _REPLY:
        fields |= {key: payload.get(key) for key in ("status", "outcome", "rationale", *_COUNTRIES)}
    return fields


def _decided(case: dict[str, Any]) -> dict[str, Any]:
    """Whether a case says it was resolved, and the outcome and rationale it (and its
    dispute's decision) says it ended with."""
    resolution = _dict(case.get("resolution"))
    return {
        "resolved": case.get("status") == "resolved",
        "outcome": case.get("outcome"),
        "rationale": case.get("rationale"),
        "decision outcome": resolution.get("outcome", case.get("outcome")),
        "decision rationale": resolution.get("rationale", case.get("rationale")),
        **{key: resolution.get(key) for key in _COUNTRIES},
    }


@dataclass
class ExportClaims:
    """Fed the export's members and then its chain records, in the file's order; `problem`
    says the first thing the export claims that its chain does not."""

    members: dict[str, Any] = field(default_factory=dict)  # approval, withdrawal, supersedes
    # Answer id -> its claim, then its developer's external id: one bytes object each.
    answers: dict[Any, bytes] = field(default_factory=dict)
    entries: dict[Any, tuple[bytes, Any, str]] = field(default_factory=dict)  # entry id -> (claim, case, kind)
    cases: dict[Any, bytes] = field(default_factory=dict)  # case id -> what it says it ended with
    # Developer -> their cases as the export lists them: (answer, kind, resolved, outcome,
    # the resolution's exemption); a case's claims are checked against its records.
    developer_cases: dict[Any, list[tuple[Any, Any, bool, Any, bool]]] = field(default_factory=dict)
    last_decided: dict[Any, dict[str, Any]] = field(default_factory=dict)  # case id -> its last deciding record's
    approval: dict[str, Any] | None = None  # the newest approval record's payload
    withdrawal: dict[str, Any] | None = None
    found: str = ""  # the first problem met

    def _problem(self, text: str) -> None:
        self.found = self.found or text

    def case(self, case: Any) -> None:
        if not isinstance(case, dict):
            self._problem("a case in the export is not an object")
            return
        # Every case: one its chain decided must say so, even if it claims to be open.
        self.cases[case.get("id")] = _digest(_decided(case))
        resolution = _dict(case.get("resolution"))
        self.developer_cases.setdefault(case.get("developer"), []).append(
            (
                case.get("answer"),
                case.get("kind"),
                case.get("status") == "resolved",
                case.get("outcome"),
                bool(resolution.get("exempt")) or resolution.get("outcome") == "exempted",
            )
        )
        for entry in case.get("entries") or []:
            entry = _dict(entry)
            where = f"case {case.get('id')}'s {entry.get('kind')} {entry.get('id')}"
            if entry.get("record") is None:
                if entry.get("kind") in (_REPLY, _DECISION):
                    self._problem(f"{where}: no record of the chain proves it")
                continue
            self.entries[entry.get("id")] = (_digest(entry_fields(case, entry)), case.get("id"), str(entry.get("kind")))

    def recipient(self, recipient: Any) -> None:
        recipient = _dict(recipient)
        developer = recipient.get("developer")
        answers = [_dict(answer) for answer in recipient.get("answers") or []]
        for answer in answers:
            if answer.get("id") is None:
                self._problem(f"the export's answers of {developer}: one has no id (no record of the chain proves it)")
                continue
            self.answers[answer["id"]] = _digest(answer_fields(developer, answer)) + str(developer).encode()
        if (claimed := recipient.get("standing")) not in (standings := self._standings(recipient, answers)):
            self._problem(
                f"the export's standing of {developer}: {claimed!r}, and its answers and cases say "
                + " or ".join(repr(s) for s in sorted(standings))
            )

    def _standings(self, recipient: dict[str, Any], answers: list[dict[str, Any]]) -> set[str]:
        """What the recipient's standing can be, from their answers (each checked against
        its record), their cases (each checked against their records), the first email's
        status and the withdrawal. A dispute carried to a correction was decided there:
        whether it exempts them is the correction's export's to prove."""
        cases = {c[0]: c for c in self.developer_cases.get(recipient.get("developer"), [])}
        open_cases = {kind for (_, kind, resolved, _, _) in cases.values() if not resolved}
        disputes = [cases.get(a.get("id")) for a in answers if a.get("response") in _DISPUTES]
        carried = any(c is not None and c[3] == _CARRIED for c in disputes)
        decided = [c for c in disputes if c is not None and c[2] and c[3] != _CARRIED]
        deliveries = recipient.get("deliveries") or [{}]
        exempted = any(c[4] for c in decided)
        return {
            standing_of(
                status=str(_dict(deliveries[0]).get("status")),
                responses={str(a.get("response")) for a in answers},
                exempted=exempted or option,
                undecided=len(decided) + carried < len(disputes),
                open_cases={str(kind) for kind in open_cases},
                withdrawn=bool(self.members.get("withdrawal")),
            )
            for option in ({False, True} if carried else {False})
        }

    def record(self, record: dict[str, Any]) -> None:
        kind, object_id, payload = record.get("kind"), record.get("object_id"), _dict(record.get("payload"))
        where = f"record {record.get('seq')} ({kind} {object_id})"
        if kind == APPROVAL:
            self.approval = payload
        elif kind == WITHDRAWAL:
            self.withdrawal = payload
        elif kind == ANSWER and object_id in self.answers:
            claimed = self.answers.pop(object_id)
            claim, developer = claimed[:_ANSWER_CLAIM], claimed[_ANSWER_CLAIM:].decode()
            actual = answer_record_fields(payload)
            if claim != _digest(actual):
                self._problem(
                    f"the export's answer {object_id} of {developer}: its {_named(_differing(claim, actual))} "
                    f"from {where}"
                )
        elif kind == CASE:
            self._case_record(where, object_id, payload)

    def _case_record(self, where: str, entry_id: Any, payload: dict[str, Any]) -> None:
        if payload.get("entry") != _REPLY:
            self.last_decided[payload.get("case")] = {
                "resolved": payload.get("status") == "resolved",
                "outcome": payload.get("outcome"),
                "rationale": payload.get("rationale"),
                "decision outcome": payload.get("outcome"),
                "decision rationale": payload.get("rationale"),
                **{key: payload.get(key) for key in _COUNTRIES},
            }
        claimed = self.entries.pop(entry_id, None)
        if claimed is None:
            self._problem(f"{where}: the export's cases leave out the case entry it proves")
            return
        claim, case_id, kind = claimed
        actual = entry_record_fields(payload)
        if claim != _digest(actual):
            self._problem(
                f"the export's case {case_id}'s {kind} {entry_id}: its {_named(_differing(claim, actual))} from {where}"
            )

    def problem(self) -> str:
        """After the chain: what the export claims that the chain does not hold."""
        for entry_id, (_, case_id, kind) in self.entries.items():
            self._problem(f"the export's case {case_id}'s {kind} {entry_id}: no record of the chain proves it")
        undecided = _digest(_decided({"outcome": "", "rationale": ""}))  # open, no outcome, rationale or resolution
        for case_id, claim in self.cases.items():
            actual = self.last_decided.get(case_id)
            if actual is None and claim[:16] != undecided[:16]:
                self._problem(f"the export's case {case_id}: says it was decided, and no record of the chain says so")
            elif actual is not None and claim != _digest(actual):
                differ = _named(_differing(claim, actual))
                self._problem(f"the export's case {case_id}: its {differ} from the chain's last record of it")
        for answer_id, claimed in self.answers.items():
            developer = claimed[_ANSWER_CLAIM:].decode()
            self._problem(f"the export's answer {answer_id} of {developer}: no record of the chain proves it")
        return self.found or self._approval_problem() or self._withdrawal_problem()

    def _approval_problem(self) -> str:
        claimed = self.members.get("approval")
        if self.approval is None:
            return "the export has an approval, and its chain holds no approval record" if claimed else ""
        if not isinstance(claimed, dict):
            return "the export leaves out the approval its chain records"
        approved = self.approval
        usernames = _dict(approved.get("usernames"))
        differ = [
            name
            for name, mine, theirs in [
                ("author", _id(claimed.get("author")), approved.get("author")),
                ("requested_by", _id(claimed.get("requested_by")), approved.get("requested_by")),
                ("approver", _id(claimed.get("approver")), approved.get("approver")),
                ("approved_at", claimed.get("approved_at"), approved.get("approved_at")),
                ("content_hash", claimed.get("content_hash"), approved.get("content_hash")),
                ("versions", claimed.get("versions"), approved.get("versions", {})),
                ("rendered", claimed.get("rendered"), approved.get("rendered", [])),
            ]
            if mine != theirs
        ]
        for role in ("author", "requested_by", "approver"):
            if role in usernames and _dict(claimed.get(role)).get("username") != usernames[role]:
                differ.append(f"{role}'s username")
        if "supersedes" in approved:
            earlier = _dict(approved.get("supersedes"))
            exported = _dict(self.members.get("supersedes"))
            if (exported.get("id"), exported.get("slug")) != (earlier.get("id"), earlier.get("slug")):
                differ.append("supersedes")
        if differ:
            return f"the export's approval: its {_named(differ)} from the chain's approval record"
        return ""

    def _withdrawal_problem(self) -> str:
        claimed = self.members.get("withdrawal")
        if self.withdrawal is None:
            return "the export has a withdrawal, and its chain holds no withdrawal record" if claimed else ""
        if not isinstance(claimed, dict):
            return "the export leaves out the withdrawal its chain records"
        recorded = self.withdrawal
        differ = [
            name
            for name, mine, theirs in [
                ("withdrawn_at", claimed.get("withdrawn_at"), recorded.get("withdrawn_at")),
                ("by", _id(claimed.get("by")), recorded.get("by")),
                ("reason", claimed.get("reason"), recorded.get("reason")),
                ("notice_hashes", claimed.get("notice_hashes"), recorded.get("notice_hashes")),
                ("notified", claimed.get("notified"), recorded.get("notified")),
            ]
            if mine != theirs
        ]
        return f"the export's withdrawal: its {_named(differ)} from the chain's withdrawal record" if differ else ""
