-- An account's own limits (`PUT /admin/accounts/{id}/limits`, event AccountLimitsSet): NULL
-- means the server's default (docs/API.md, "Limits").
ALTER TABLE accounts ADD COLUMN writes_per_second INTEGER;
