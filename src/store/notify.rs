//! What one node tells the others sharing a PostgreSQL store: that it appended events to some
//! accounts (their feed followers read them), and that API keys or write limits changed (every
//! node reloads them, so a revoked key stops working everywhere within moments). Sent with
//! `pg_notify` inside the writing transaction, so that only a commit is ever announced.

use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::watch;

use super::admission::WriteLimits;
use super::db::{Connection, PgConnection};
use super::{FeedHead, KeyRing, StoreError};

/// The channel every node listens on.
const CHANNEL: &str = "ctxd";
/// PostgreSQL refuses payloads of 8000 bytes or more: past this, "every account" is sent.
const MAX_PAYLOAD: usize = 7000;

/// Moves the feed's head past a commit of `appended` events to `accounts` (`None`: any
/// account may have new events). Followers only compare the head's ids: they grow by each
/// commit, this node's own and others' alike.
pub fn advance_feed(feed: &watch::Sender<FeedHead>, appended: u64, accounts: Option<Arc<[String]>>) {
    feed.send_modify(|head| {
        let last_id = head.last_id + appended.max(1);
        *head = match accounts {
            Some(accounts) => FeedHead { last_id, commit_after: head.last_id, accounts, closed: head.closed },
            // A commit after the followers' last read: every follower reads.
            None => FeedHead { last_id, commit_after: last_id, accounts: Arc::from([]), closed: head.closed },
        };
    });
}

/// Announces the transaction's appends and key changes, as `node`.
pub(super) fn send(tx: &Connection, node: &str, accounts: &[String], keys: bool) -> Result<(), StoreError> {
    let mut notices = Vec::new();
    if !accounts.is_empty() {
        let listed = accounts.join("\n");
        notices.push(match listed.len() < MAX_PAYLOAD {
            true => format!("{node} feed\n{listed}"),
            false => format!("{node} feed-all"),
        });
    }
    if keys {
        notices.push(format!("{node} keys"));
    }
    for notice in notices {
        tx.prepare_cached("SELECT pg_notify(?1, ?2)")?.execute_later((CHANNEL, notice))?;
    }
    Ok(())
}

/// Follows the other nodes' notices, on a connection of its own that reconnects when lost (and
/// then acts as if everything had changed, since notices sent meanwhile are gone).
pub(super) fn listen(
    url: &str,
    node: &str,
    keys: Arc<KeyRing>,
    limits: Arc<WriteLimits>,
    feed: Arc<watch::Sender<FeedHead>>,
) -> Result<(), StoreError> {
    let (sender, notices) = mpsc::channel();
    super::db::postgres_listen(url, CHANNEL, sender)?;
    let (url, node) = (url.to_string(), node.to_string());
    std::thread::Builder::new().name("ctxd-listener".into()).spawn(move || {
        for notice in notices {
            let (from, what) = match notice {
                Some(text) => {
                    let (from, what) = text.split_once(' ').unwrap_or(("", text.as_str()));
                    (from.to_string(), what.to_string())
                }
                None => (String::new(), "reconnected".to_string()),
            };
            if from == node {
                continue;
            }
            match what.split_once('\n') {
                Some(("feed", accounts)) => {
                    let accounts: Arc<[String]> = accounts.lines().map(str::to_string).collect();
                    advance_feed(&feed, 1, Some(accounts));
                }
                _ if what == "keys" => reload(&url, &keys, &limits),
                _ if what == "feed-all" => advance_feed(&feed, 1, None),
                _ => {
                    reload(&url, &keys, &limits);
                    advance_feed(&feed, 1, None);
                }
            }
        }
    })?;
    Ok(())
}

/// Reads the active keys and write limits again.
fn reload(url: &str, keys: &KeyRing, limits: &WriteLimits) {
    let read =
        PgConnection::connect(url).map(Connection::Postgres).map_err(StoreError::from).and_then(|conn| {
            Ok((
                crate::projections::accounts::active_keys(&conn)?,
                crate::projections::accounts::write_limits(&conn)?,
            ))
        });
    match read {
        Ok((active, written)) => {
            *keys.write().expect("key ring lock") = active;
            *limits.write().expect("write limits lock") = written;
        }
        Err(error) => tracing::error!(%error, "reloading API keys after another node changed them failed"),
    }
}
