# gunicorn reads this file from the directory it starts in (the production command in
# README.md runs there, and names it with -c as well).
# The access log is on, on standard output, with acknowledgement tokens and
# Authorization values redacted (memo_service/lib/logredact.py).
accesslog = "-"
logger_class = "memo_service.lib.logredact.GunicornLogger"
