-- Set when a namespace too large to delete in one step starts being deleted (event
-- NamespaceDeletionStarted): from then on it reads as deleted and refuses writes, while its
-- sessions are deleted in steps; the row goes with the last step's NamespaceDeleted.
ALTER TABLE namespaces ADD COLUMN deleting_since TEXT;
CREATE INDEX namespaces_being_deleted ON namespaces (deleting_since) WHERE deleting_since IS NOT NULL;
