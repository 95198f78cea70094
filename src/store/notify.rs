//! What one node tells the others sharing a PostgreSQL store: that it appended events to some
//! accounts (their feed followers read them), and that API keys or write limits changed (every
//! node reloads them, so a revoked key stops working everywhere within moments). Sent with
//! `pg_notify` inside the writing transaction, so that only a commit is ever announced.

use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::watch;

use super::db::Connection;
use super::{FeedHead, StoreError};

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

/// Follows the other nodes' notices, on a connection of its own that reconnects when lost; each
/// time it starts listening (the first time included) it acts as if everything had changed,
/// since what was sent before is gone. Keys and limits are reloaded by the writer
/// (`writer::Message::Reload`), in order with its own reloads.
pub(super) fn listen(
    url: &str,
    node: &str,
    writer: tokio::sync::mpsc::Sender<super::writer::Message>,
    feed: Arc<watch::Sender<FeedHead>>,
) -> Result<(), StoreError> {
    let (sender, notices) = mpsc::channel();
    super::db::postgres_listen(url, CHANNEL, sender)?;
    let node = node.to_string();
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
                _ if what == "feed-all" => advance_feed(&feed, 1, None),
                _ => {
                    if what != "keys" {
                        advance_feed(&feed, 1, None);
                    }
                    if writer.blocking_send(super::writer::Message::Reload).is_err() {
                        return; // the store is closing
                    }
                }
            }
        }
    })?;
    Ok(())
}
