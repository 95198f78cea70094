-- The services of a conversation (`GET …/audit/conversations/{id}`): those whose start carried
-- the id as its `session_id` or `interaction_id`, found by a seek rather than by reading the
-- account's log. The expressions are those of `projections::history::conversation`, which
-- SQLite needs to match to use them; services that carried neither are not in them.
CREATE INDEX events_services_of_sessions ON events (
    account, json_extract(data, '$.opening.started.channel.session_id')
) WHERE event_type = 'ServiceStarted' AND json_extract(data, '$.opening.started.channel.session_id') IS NOT NULL;
CREATE INDEX events_services_of_interactions ON events (
    account, json_extract(data, '$.opening.started.channel.interaction_id')
) WHERE event_type = 'ServiceStarted' AND json_extract(data, '$.opening.started.channel.interaction_id') IS NOT NULL;
