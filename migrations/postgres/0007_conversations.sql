-- The services of a conversation, as SQLite's 0019.
CREATE INDEX events_services_of_sessions ON events (
    account, (((data::jsonb) #>> '{opening,started,channel,session_id}') COLLATE "C")
) WHERE event_type = 'ServiceStarted' AND ((data::jsonb) #>> '{opening,started,channel,session_id}') IS NOT NULL;
CREATE INDEX events_services_of_interactions ON events (
    account, (((data::jsonb) #>> '{opening,started,channel,interaction_id}') COLLATE "C")
) WHERE event_type = 'ServiceStarted' AND ((data::jsonb) #>> '{opening,started,channel,interaction_id}') IS NOT NULL;
