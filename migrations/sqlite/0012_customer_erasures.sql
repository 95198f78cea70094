-- The services ever given to a customer, found by a seek rather than by reading the account's
-- whole log: an erasure looks them up in the writer. The expressions and the condition are
-- those of `projections::journeys::services_ever_of`, which SQLite needs to match to use it.
CREATE INDEX events_services_of_customers ON events (
    account, json_extract(data, '$.customer_id'), json_extract(data, '$.service_id')
) WHERE event_type IN ('ServiceStarted', 'ServiceAssociated');

-- A customer erasure too large for one step (event CustomerErasureStarted): the services it
-- has erased so far, in service id order, so that each step takes the next ones. The row goes
-- with the last step's CustomerErased.
CREATE TABLE customer_erasures (
    account_id     TEXT NOT NULL,
    customer_id    TEXT NOT NULL,
    started_at     TEXT NOT NULL,
    erased_through TEXT,           -- the last service id erased; NULL: none yet
    PRIMARY KEY (account_id, customer_id)
) WITHOUT ROWID;
