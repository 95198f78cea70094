//! N PATCH commands, one after the other, through `Store::submit` (decide, append, apply,
//! commit): a deterministic measure of the write path's cost when run under cachegrind, which
//! this noisy machine's timings are not. The instructions of a PATCH are the difference between
//! two runs, divided by the difference in N (docs/PERFORMANCE.md):
//!
//! ```text
//! cargo build --release --example patch_instructions
//! valgrind --tool=cachegrind --cache-sim=no target/release/examples/patch_instructions 1000
//! valgrind --tool=cachegrind --cache-sim=no target/release/examples/patch_instructions 3000
//! ```
use std::sync::Arc;

use ctxd::clock::SystemClock;
use ctxd::domain::accounts::AccountCommand;
use ctxd::domain::context::{ContextCommand, SessionRef};
use ctxd::domain::events::JsonText;
use ctxd::domain::{Command, ExpectedVersion};
use ctxd::metrics::Metrics;
use ctxd::store::{EventMeta, Store, WriteRequest};

fn request(command: Command) -> WriteRequest {
    WriteRequest {
        command,
        meta: EventMeta { actor: "bench".into(), ..Default::default() },
        idempotency: None,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: u64 = std::env::args().nth(1).map_or(5000, |a| a.parse().unwrap());
    let dir = std::env::temp_dir().join(format!("patch-instructions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = ctxd::store::writer::WriterConfig { synchronous_full: false, ..Default::default() };
    let store = Store::open(&dir, config, Arc::new(SystemClock), Arc::new(Metrics::default())).unwrap();
    store
        .submit(request(Command::Account(AccountCommand::CreateAccount { account_id: "acme".into() })))
        .await
        .unwrap();
    for i in 0..n {
        let properties = [
            ("intent", "\"billing_dispute\"".to_string()),
            ("step", i.to_string()),
            ("agent", "\"a17\"".into()),
            ("channel", "\"voice\"".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), JsonText::from_value(&serde_json::from_str(&v).unwrap())))
        .collect();
        let session = SessionRef {
            namespace: "bench".into(),
            session_id: format!("s{}", i % 500),
            expected: ExpectedVersion::Any,
        };
        let command = ContextCommand::PatchProperties { session, properties };
        store.submit(request(Command::Context { account: "acme".into(), command })).await.unwrap();
    }
    store.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
