"""Library code the apps share that knows nothing of memos or developers: database
helpers (db), CSV out (csv_export), admin changelist paging (admin_paging), the admin's
403 page (refusals) and log redaction (logredact)."""
