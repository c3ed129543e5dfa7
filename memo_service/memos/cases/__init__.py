"""Cases: an answer that needs a person (help, a dispute, an objection), from its
opening (opening.py, called as the answer is recorded) to its replies and decision
(cases.py)."""
