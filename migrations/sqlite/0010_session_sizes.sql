-- Each session's stored properties as the compact JSON document counts them (`"key":value,`
-- per property), expired ones included until the sweeper removes them. A write is decided
-- against this sum and the properties it names, so its cost does not grow with the session.
-- Triggers keep it, so it follows `properties` however rows get there (live writes, rebuild,
-- verify's scratch copy).
CREATE TABLE session_sizes (
    account_id TEXT    NOT NULL,
    namespace  TEXT    NOT NULL,
    session_id TEXT    NOT NULL,
    chars      INTEGER NOT NULL,
    properties INTEGER NOT NULL,
    PRIMARY KEY (account_id, namespace, session_id)
) WITHOUT ROWID;

INSERT INTO session_sizes
SELECT account_id, namespace, session_id, sum(length(json_quote(key)) + length(value) + 2), count(*)
FROM properties GROUP BY account_id, namespace, session_id;

CREATE TRIGGER session_size_on_insert AFTER INSERT ON properties BEGIN
    INSERT INTO session_sizes (account_id, namespace, session_id, chars, properties)
    VALUES (NEW.account_id, NEW.namespace, NEW.session_id, length(json_quote(NEW.key)) + length(NEW.value) + 2, 1)
    ON CONFLICT DO UPDATE SET chars = chars + excluded.chars, properties = properties + 1;
END;

CREATE TRIGGER session_size_on_update AFTER UPDATE OF value ON properties
WHEN length(NEW.value) != length(OLD.value) BEGIN
    UPDATE session_sizes SET chars = chars + length(NEW.value) - length(OLD.value)
    WHERE account_id = NEW.account_id AND namespace = NEW.namespace AND session_id = NEW.session_id;
END;

CREATE TRIGGER session_size_on_delete AFTER DELETE ON properties BEGIN
    UPDATE session_sizes
    SET chars = chars - (length(json_quote(OLD.key)) + length(OLD.value) + 2), properties = properties - 1
    WHERE account_id = OLD.account_id AND namespace = OLD.namespace AND session_id = OLD.session_id;
    DELETE FROM session_sizes
    WHERE account_id = OLD.account_id AND namespace = OLD.namespace AND session_id = OLD.session_id
      AND properties = 0;
END;
