//! Maintenance at scale (`--maintenance`, after the analytics workload, on its store): the real
//! `ctxd` binary's `rebuild` and `verify` of the whole store, then (`--maintenance-archive`)
//! `archive` of the account's whole log, `compact`, and `rebuild` and `verify --chain` again
//! from the snapshot. Each is timed
//! with its peak resident set (the kernel's figure for the child, from `wait4`), beside the raw
//! SQLite limit of the read it starts with; the store's bytes per event before and after.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ctxd::app::BoxError;
use ctxd::store::database_path;

use crate::report::thousands;
use crate::workload::ACCOUNT;

/// One run of the `ctxd` binary.
struct Run {
    elapsed: Duration,
    peak_kib: u64,
}

/// The `ctxd` binary next to this one.
fn this_build() -> Result<PathBuf, BoxError> {
    Ok(std::env::current_exe()?.with_file_name("ctxd"))
}

/// Runs `ctxd ARGS` (this build's) on the store in `dir` and waits for it.
fn ctxd(dir: &Path, args: &[&str]) -> Result<Run, BoxError> {
    run_binary(&this_build()?, dir, args)
}

/// Runs `binary ARGS` on the store in `dir` and waits for it; an exit other than 0 is an error
/// carrying its output.
fn run_binary(binary: &Path, dir: &Path, args: &[&str]) -> Result<Run, BoxError> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env("CTXD_DATA_DIR", dir)
        // The archive's phases (prepared off the writer, committed in one step) on stderr.
        .env("RUST_LOG", "warn,ctxd::store::archive=info")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut output = String::new();
    child.stdout.take().expect("piped").read_to_string(&mut output)?;
    let (status, peak_kib) = wait_with_peak(child.id())?;
    let elapsed = started.elapsed();
    if status != 0 {
        return Err(format!("ctxd {} exited with {status}: {output}", args.join(" ")).into());
    }
    Ok(Run { elapsed, peak_kib })
}

/// Reaps the child `pid`: its exit status (or 128 + the signal) and its peak resident set in
/// KiB, which only the reaping call can read (`wait4`'s `ru_maxrss`).
#[allow(unsafe_code)]
fn wait_with_peak(pid: u32) -> Result<(i32, u64), BoxError> {
    let mut status = 0;
    // SAFETY: `rusage` is plain data, valid when zeroed; `wait4` writes both out-parameters.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    if reaped < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    Ok((code, usage.ru_maxrss.max(0) as u64))
}

/// The raw limit of a fold's read: every live event's columns that the fold decodes, in stream
/// order, on a read-only connection, as stored (compressed payloads not decompressed), without
/// decoding them. Answers the time and the events.
fn raw_read(dir: &Path) -> Result<(Duration, u64), BoxError> {
    let conn = ctxd::store::read::open_read_only(&database_path(dir))?;
    let started = Instant::now();
    let mut statement = conn.prepare(&format!(
        "SELECT account, seq, event_type, data, recorded_at FROM events WHERE {} ORDER BY stream, stream_version",
        ctxd::projections::LIVE
    ))?;
    let mut rows = statement.query_streamed([])?;
    let (mut events, mut bytes) = (0u64, 0usize);
    while let Some(row) = rows.next()? {
        bytes += row.get_ref(3)?.as_bytes().map_or(0, <[u8]>::len);
        events += 1;
    }
    std::hint::black_box(bytes);
    Ok((started.elapsed(), events))
}

fn store_bytes(dir: &Path) -> u64 {
    let db = database_path(dir);
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |meta| meta.len());
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    size(&db) + size(Path::new(&wal))
}

fn line(what: &str, run: &Run, events: u64, raw: Option<Duration>) -> String {
    let rate = events as f64 / run.elapsed.as_secs_f64();
    let raw = raw.map_or_else(String::new, |raw| {
        format!(
            "; raw read in stream order {:.1} s = {} events/s",
            raw.as_secs_f64(),
            thousands((events as f64 / raw.as_secs_f64()) as u64)
        )
    });
    format!(
        "  {what:<32} {:>7.1} s = {:>9} events/s, peak RSS {:>6} MiB{raw}",
        run.elapsed.as_secs_f64(),
        thousands(rate as u64),
        run.peak_kib / 1024
    )
}

/// Runs the maintenance commands on the (stopped) store in `dir` and prints their figures; with
/// `baseline`, that binary's rebuild and verify alternated with this build's; with `archive`,
/// the archive and what follows it.
pub fn run(dir: &Path, baseline: Option<&Path>, archive: bool) -> Result<(), BoxError> {
    let events: u64 = {
        let conn = ctxd::store::read::open_read_only(&database_path(dir))?;
        conn.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?
    };
    // Not compacted first: VACUUM needs the store's size again in free space, which a
    // 5M-service store does not leave here (the fill leaves few free pages: 4 % at 1M).
    let before = store_bytes(dir);
    println!(
        "maintenance on the analytics store ({} events, {:.2} GiB = {} bytes per event), each the ctxd binary:",
        thousands(events),
        before as f64 / (1u64 << 30) as f64,
        before / events.max(1)
    );
    let (raw, read) = raw_read(dir)?;
    let this = this_build()?;
    let builds: Vec<(&str, &Path)> = match baseline {
        None => vec![("", &this)],
        Some(baseline) => vec![(" (this build)", &this), (" (baseline)", baseline)],
    };
    let pairs = if baseline.is_some() { 2 } else { 1 };
    for command in ["rebuild", "verify"] {
        for _ in 0..pairs {
            for (label, binary) in &builds {
                let run = run_binary(binary, dir, &[command])?;
                println!("{}", line(&format!("{command}{label}"), &run, read, Some(raw)));
            }
        }
    }
    if !archive {
        return Ok(());
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    println!(
        "{}",
        line(
            "archive (the whole log)",
            &ctxd(dir, &["archive", "--account", ACCOUNT, "--before", &now])?,
            events,
            None
        )
    );
    ctxd(dir, &["compact"])?;
    let after = store_bytes(dir);
    let segments = std::fs::read_dir(dir.join("archive").join(ACCOUNT))?
        .map(|entry| Ok(entry?.metadata()?.len()))
        .sum::<Result<u64, std::io::Error>>()?;
    println!(
        "  after the archive and compact: store {:.2} GiB ({:.0} % less), segments {:.2} GiB = {} bytes per archived event",
        after as f64 / (1u64 << 30) as f64,
        100.0 * (1.0 - after as f64 / before as f64),
        segments as f64 / (1u64 << 30) as f64,
        segments / events.max(1)
    );
    let streams: u64 = {
        let conn = ctxd::store::read::open_read_only(&database_path(dir))?;
        conn.query_row("SELECT count(*) FROM snapshot_streams", [], |row| row.get(0))?
    };
    let from_snapshot = format!("{} snapshot streams", thousands(streams));
    let rebuild = ctxd(dir, &["rebuild"])?;
    println!(
        "  rebuild from the snapshot ({from_snapshot}): {:.1} s, peak RSS {} MiB",
        rebuild.elapsed.as_secs_f64(),
        rebuild.peak_kib / 1024
    );
    let verify = ctxd(dir, &["verify", "--chain"])?;
    println!(
        "  verify --chain from the snapshot: {:.1} s, peak RSS {} MiB",
        verify.elapsed.as_secs_f64(),
        verify.peak_kib / 1024
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaped_child_gives_its_exit_status_and_its_peak_resident_set() {
        let spawn = |script: &str| Command::new("sh").args(["-c", script]).spawn().unwrap().id();
        let (status, peak_kib) = wait_with_peak(spawn("exit 3")).unwrap();
        assert_eq!(status, 3);
        assert!(peak_kib > 0);
        // A shell that holds a 64 MiB string shows at least that much.
        let script = r"x=$(head -c 67108864 /dev/zero | tr '\0' a)";
        let (status, peak_kib) = wait_with_peak(spawn(script)).unwrap();
        assert_eq!(status, 0);
        assert!(peak_kib >= 65536, "{peak_kib}");
    }
}
